"""Inference speed and memory of the cascades (random weights: speed does not depend on them).

For the light and the seed-faithful two-level cascades at 128^3 and 160^3: FLOPs of one cascade, wall time of the
whole ``Segmenter.segment`` call (resampling off, biometry off) and peak RSS, each case in a fresh process.

Run: ``python benchmarks/bench_inference.py [--device cpu|cuda] [--threads 2] [--skip-seed]``.
The seed-faithful cascade costs about 4 TFLOP at 128^3: minutes on a 2-core CPU; it is a GPU model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
from torch.utils.flop_counter import FlopCounterMode
from FetalHeadSegLib.models.bundle import ModelBundle, read_bundle, write_bundle
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.inference.engine import InferenceOptions, Segmenter
from FetalHeadSegLib.core.labels import HEAD
from FetalHeadSegLib.models.network_config import PRESETS
from FetalHeadSegLib.models.networks import build_network
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig

torch.set_num_threads({threads})
configs = [PRESETS["{preset}"], PRESETS["{preset}"].with_in_channels(2)]
folder = Path(tempfile.mkdtemp()) / "model"
description = ModelBundle(folder, "bench", "0", "bench", 3, "head", configs, PreprocessingConfig(), [HEAD])
write_bundle(folder, description, [build_network(c).state_dict() for c in configs])
segmenter = Segmenter(read_bundle(folder), "{device}")
n = {size}
image = Image(np.random.default_rng(0).random((n, n, n)).astype(np.float32), make_ijk_to_ras((0.8,) * 3))
with FlopCounterMode(display=False) as counter, torch.inference_mode():
    for level, network in enumerate(segmenter.networks):
        network(torch.zeros(1, level + 1, n, n, n, device=segmenter.device))
options = InferenceOptions(biometry=False)
segmenter.segment(image, options)  # warm-up (allocator, cuDNN autotuning)
times = []
for _ in range({repeats}):
    if segmenter.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    segmenter.segment(image, options)
    times.append(time.perf_counter() - start)
gpu = torch.cuda.max_memory_allocated() / 2**20 if segmenter.device.type == "cuda" else None
print(json.dumps({{"flops": counter.get_total_flops(), "seconds": sorted(times)[len(times) // 2],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu_mb": gpu}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-seed", action="store_true", help="only the light cascade")
    args = parser.parse_args()
    presets = ["usegnet-light"] + ([] if args.skip_seed else ["usegnet-ds"])
    for preset in presets:
        for size in (128, 160):
            repeats = 3 if preset == "usegnet-light" or args.device != "cpu" else 1
            code = CASE.format(threads=args.threads, preset=preset, device=args.device, size=size, repeats=repeats)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{preset} {size}^3: failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            gpu = f", GPU peak {result['gpu_mb']:.0f} MiB" if result["gpu_mb"] else ""
            print(
                f"{preset} cascade (2 levels) {size}^3 on {args.device} ({args.threads} threads): "
                f"{result['flops'] / 1e12:.2f} TFLOP, {result['seconds']:.2f} s end to end, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB{gpu}"
            )


if __name__ == "__main__":
    main()
