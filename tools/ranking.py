"""Personalized PageRank over a weighted directed graph, with numpy (power iteration)."""
from __future__ import annotations

import numpy as np


def pagerank(
    node_count: int,
    source: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    personalization: np.ndarray | None = None,
    damping: float = 0.85,
    tolerance: float = 1e-9,
    max_iterations: int = 200,
) -> np.ndarray:
    """Stationary distribution of a walk that follows edges (source[i] -> target[i], weight[i] > 0; parallel
    edges add up) with probability proportional to their weight
    (probability `damping`) or jumps to a node drawn from `personalization` (uniform when None).

    Nodes with no outgoing edge jump by the personalization too, so the result always sums to 1.
    """
    if node_count == 0:
        return np.zeros(0)
    if personalization is None:
        jump = np.full(node_count, 1.0 / node_count)
    else:
        jump = np.asarray(personalization, dtype=np.float64)
        if jump.shape != (node_count,) or (jump < 0).any() or jump.sum() <= 0:
            raise ValueError("personalization must be a non-negative vector with a positive sum, one per node")
        jump = jump / jump.sum()
    source = np.asarray(source, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    weight = np.asarray(weight, dtype=np.float64)
    if not source.shape == target.shape == weight.shape:
        raise ValueError("source, target and weight must have the same length")
    out_weight = np.bincount(source, weights=weight, minlength=node_count)
    share = weight / np.where(out_weight[source] > 0, out_weight[source], 1.0)
    dangling = out_weight <= 0
    rank = jump.copy()
    for _ in range(max_iterations):
        flow = np.bincount(target, weights=rank[source] * share, minlength=node_count)
        updated = damping * (flow + rank[dangling].sum() * jump) + (1.0 - damping) * jump
        if np.abs(updated - rank).sum() < tolerance:
            return updated
        rank = updated
    return rank
