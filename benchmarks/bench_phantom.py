"""Phantom generation speed and peak memory: a 160^3 volume (target < 10 s, < 2 GB on 2 cores) and an
800x540 frame (target well under 1 s).

Run: ``python benchmarks/bench_phantom.py`` (each case in a fresh process, so its peak RSS is its own).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

CASE = """
import json, resource, time
from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom
config = PhantomConfig(dimension={dim}, size={size})
generate_phantom(PhantomConfig(dimension=2, size=(64, 48)), 0)  # imports and first-call costs
seconds = []
for seed in {seeds}:
    start = time.perf_counter()
    generate_phantom(config, seed)
    seconds.append(time.perf_counter() - start)
print(json.dumps({{"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run(dim: int, size: tuple[int, ...], seeds: list[int]) -> dict:
    code = CASE.format(dim=dim, size=size, seeds=seeds)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    for dim, size, seeds in ((3, (160, 160, 160), [0, 1, 2]), (2, (800, 540), list(range(10)))):
        result = run(dim, size, seeds)
        times = result["seconds"]
        print(
            f"{dim}D {'x'.join(map(str, size))}: median {statistics.median(times):.2f} s, "
            f"max {max(times):.2f} s over {len(times)} seeds; peak RSS {result['peak_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
