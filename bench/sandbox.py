"""Per-command overhead of sandbox.run versus a plain subprocess.run of the same command.

Runs each command `--repeat` times alternating the two ways (so load drift hits both alike) and
reports medians and the median ratio. Usage: python bench/sandbox.py [--repeat 40] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sandbox  # noqa: E402

COMMANDS = {
    "true": ["true"],
    "python -c pass": [sys.executable, "-c", "pass"],
}


def _plain(argv: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - start


def _sandboxed(argv: list[str], cwd: str, no_sandbox: bool) -> float:
    start = time.perf_counter()
    result = sandbox.run(argv, cwd, timeout=60, no_sandbox=no_sandbox)
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise RuntimeError(f"{argv} failed in the sandbox: {result.stderr.strip()}")
    return elapsed


def measure(repeat: int, no_sandbox: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as workspace:
        for name, argv in COMMANDS.items():
            _plain(argv, workspace), _sandboxed(argv, workspace, no_sandbox)  # warm caches
            plain, boxed = [], []
            for _ in range(repeat):
                plain.append(_plain(argv, workspace))
                boxed.append(_sandboxed(argv, workspace, no_sandbox))
            plain_ms, boxed_ms = statistics.median(plain) * 1e3, statistics.median(boxed) * 1e3
            ratios = [b / p for b, p in zip(boxed, plain)]
            rows.append({"command": name, "repeat": repeat, "subprocess_median_ms": round(plain_ms, 2),
                         "sandbox_median_ms": round(boxed_ms, 2), "overhead_median_ms": round(boxed_ms - plain_ms, 2),
                         "ratio_of_medians": round(boxed_ms / plain_ms, 2),
                         "median_ratio": round(statistics.median(ratios), 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40, help="runs per command and way (default 40)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--no-sandbox", action="store_true", help="measure the unconfined path (launcher only)")
    args = parser.parse_args(argv)
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")
    if not args.no_sandbox and not sandbox.available():
        print(f"sandbox unavailable: {sandbox.unavailable_reason()}", file=sys.stderr)
        return 2
    rows = measure(args.repeat, args.no_sandbox)
    result = {"benchmark": "sandbox_overhead", "mode": "no_sandbox" if args.no_sandbox else "sandbox",
              "euid": os.geteuid(), "platform": platform.platform(), "python": platform.python_version(),
              "cpus": os.cpu_count(), "results": rows}
    print(json.dumps(result, indent=None if args.json else 2))
    if not args.json:
        print(f"\n{'command':<16} {'subprocess ms':>14} {'sandbox ms':>11} {'overhead ms':>12} {'median ratio':>13}")
        for row in rows:
            print(f"{row['command']:<16} {row['subprocess_median_ms']:>14.2f} {row['sandbox_median_ms']:>11.2f} "
                  f"{row['overhead_median_ms']:>12.2f} {row['median_ratio']:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
