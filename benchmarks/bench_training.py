"""Training throughput of the seed-faithful stage 1 (USegNet-DS, deep supervision, Adam) and of the data pipeline.

Run on a GPU: ``python benchmarks/bench_training.py --device cuda --size 128 --batch 2``. Reports volumes/s and
achieved TFLOP/s for eager fp32 and bf16 autocast (``--compile`` adds torch.compile), and how many augmented
samples per second one CPU worker prepares, so the data pipeline can be sized to keep the GPU busy; then the same for
a roi cascade's level 2 (two channels, a fresh context per sample as ``roi_context.redraw`` draws it, with the GPU
configuration's context settings), and how many contexts per second one worker draws from the labels alone (two
distance transforms each) and from the signed distance ``ContextRedraw`` keeps per case.
On a CPU it runs the same measurement at a small size (``--size 32``; ``--context-size 80`` is level 2's grid).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from FetalHeadSegLib.models.network_config import SEED_USEGNET_DS
from FetalHeadSegLib.models.networks import build_network
from training.augment import AugmentConfig
from training.config import read_config
from training.data import CaseArrays
from training.engine import target_factors
from training.losses import DeepSupervisionLoss
from training.roi_data import ContextRedraw, coarse_context, draw_misplacement
from training.samples import AugmentedCases

GPU_CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "fetal-head-3d-cascade-gpu.json"


def step_time(device: torch.device, size: int, batch: int, precision: str, compiled: bool, steps: int) -> tuple:
    network = build_network(SEED_USEGNET_DS).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=4e-5)
    forward = torch.compile(network.forward_with_aux) if compiled else network.forward_with_aux
    images = torch.rand(batch, 1, size, size, size, device=device)
    targets = [
        torch.randint(0, 2, (batch, size // f, size // f, size // f), device=device)
        for f in target_factors(SEED_USEGNET_DS)
    ]
    criterion = DeepSupervisionLoss([1.0] * 4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def one_step() -> None:
        with autocast:
            outputs = forward(images)
        loss = criterion(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        one_step()
    for _ in range(3):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, counter.get_total_flops(), memory


def pipeline_rate(size: int, samples: int = 10) -> float:
    rng = np.random.default_rng(0)
    arrays = CaseArrays(
        ["a"],
        ["a"],
        [rng.integers(0, 255, (size, size, size), dtype=np.uint8)],
        [(rng.random((size, size, size)) > 0.5).astype(np.uint8)],
        [(1.0, 1.0, 1.0)],
    )
    dataset = AugmentedCases(arrays, None, AugmentConfig(), 0, 1, target_factors(SEED_USEGNET_DS), 8)
    start = time.perf_counter()
    for step in range(samples):
        dataset[(step, 0)]
    return samples / (time.perf_counter() - start)


def context_rates(size: int, draws: int = 10) -> tuple[float, float, float]:
    """Level 2 with fresh contexts: contexts per second drawn from the labels alone and from the stored signed
    distance, and whole augmented two-channel samples per second (a head-sized ball in a ``size``^3 crop, 0.8 mm
    voxels, a 2.5 mm coarse grid)."""
    config = read_config(GPU_CONFIG)
    rng = np.random.default_rng(0)
    centre = (size - 1) / 2.0
    radius = np.sqrt(((np.indices((size,) * 3) - centre) ** 2).sum(axis=0))
    head = (radius <= 0.35 * size).astype(np.uint8)
    spacing_mm = (0.8, 0.8, 0.8)
    crops = CaseArrays(["a"], ["a"], [rng.integers(0, 255, head.shape, dtype=np.uint8)], [head], [spacing_mm])
    coarse = CaseArrays(["a"], ["a"], [head], [head], [(2.5, 2.5, 2.5)])
    redraw = ContextRedraw(crops, coarse, config.roi_context)
    start = time.perf_counter()
    for draw in range(draws):
        draw_rng = np.random.default_rng(draw)
        offset_mm, radii_mm = draw_misplacement(redraw.head_radius_mm[0], 2.5, draw_rng, config.roi_context)
        coarse_context(head > 0, spacing_mm, 2.5, offset_mm, draw_rng, config.roi_context, radii_mm)
    from_labels = draws / (time.perf_counter() - start)
    start = time.perf_counter()
    for draw in range(draws):
        redraw(0, np.random.default_rng(draw))
    stored = draws / (time.perf_counter() - start)
    dataset = AugmentedCases(
        crops, None, AugmentConfig(), 0, 1, target_factors(SEED_USEGNET_DS), 8, (64, 64, 64), context_draw=redraw
    )
    start = time.perf_counter()
    for step in range(draws):
        dataset[(step, 0)]
    return from_labels, stored, draws / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--context-size", type=int, default=80, help="level 2's crop for the context rates")
    args = parser.parse_args()
    device = torch.device(args.device)
    modes = [("fp32", False), ("bf16", False)] + ([("bf16", True)] if args.compile else [])
    if device.type == "cpu":
        modes = [("fp32", False)]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    for precision, compiled in modes:
        seconds, flops, memory = step_time(device, args.size, args.batch, precision, compiled, args.steps)
        label = precision + (" + compile" if compiled else "")
        print(
            f"seed stage 1, {args.size}^3, batch {args.batch}, {label} on {args.device}: {seconds * 1000:.1f} ms/step, "
            f"{args.batch / seconds:.2f} volumes/s, {flops / seconds / 1e12:.1f} TFLOP/s, peak {memory:.1f} GiB"
        )
    rate = pipeline_rate(args.size)
    print(f"data pipeline: {rate:.2f} augmented {args.size}^3 samples/s per CPU worker")
    from_labels, stored, samples = context_rates(args.context_size)
    print(
        f"level 2 contexts ({args.context_size}^3 crop): {from_labels:.2f}/s drawn from the labels, "
        f"{stored:.2f}/s from the stored signed distance; "
        f"{samples:.2f} augmented two-channel 64^3 samples/s per CPU worker"
    )


if __name__ == "__main__":
    main()
