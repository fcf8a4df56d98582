"""Personalized PageRank over a weighted directed graph, with numpy (power iteration)."""
from __future__ import annotations

import numpy as np


def pagerank(
    node_count: int,
    edges: list[tuple[int, int, float]],
    personalization: np.ndarray | None = None,
    damping: float = 0.85,
    tolerance: float = 1e-10,
    max_iterations: int = 200,
) -> np.ndarray:
    """Stationary distribution of a walk that follows edges with probability proportional to their weight
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
    if edges:
        source, target, weight = (np.asarray(column) for column in zip(*edges))
        source, target = source.astype(np.int64), target.astype(np.int64)
        weight = weight.astype(np.float64)
    else:
        source = target = np.zeros(0, dtype=np.int64)
        weight = np.zeros(0)
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
