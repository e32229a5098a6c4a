"""Training one cascade level, evaluating it, and predicting context maps: the loop, top to bottom."""

from __future__ import annotations

import contextlib
import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from FetalHeadSegLib.core.errors import ConfigError
from FetalHeadSegLib.models.network_config import NetworkConfig
from FetalHeadSegLib.models.networks import build_network
from training.config import TrainConfig
from training.data import CaseArrays
from training.distributed import DistInfo, any_rank, barrier, mean_over_ranks
from training.losses import DeepSupervisionLoss
from training.samples import AugmentedCases, StepSampler
from training.validation import cascade_multiple, evaluate
from training.widen import fit_state

Log = Callable[[str], None]


def level_network_config(config: TrainConfig, level: int) -> NetworkConfig:
    """Level 0 sees the image; later levels the image plus the previous level's foreground probability."""
    network = config.level_networks[level] if config.level_networks else config.network
    return network.with_in_channels(1 if level == 0 else 2)


def target_factors(network: NetworkConfig) -> list[int]:
    """Down-sampling factor of each training output, coarse to fine (the main output last, factor 1)."""
    if network.has_aux_heads:
        return [2**level for level in reversed(range(len(network.channels)))]
    return [1]


def loss_weights(config: TrainConfig, step: int, steps_per_epoch: int) -> list[float]:
    if not config.network.has_aux_heads:
        return [config.loss.main_weight]
    decay = config.loss.aux_decay ** (step // max(1, steps_per_epoch))
    return [w * decay for w in config.loss.aux_weights] + [config.loss.main_weight]


class WithAux(nn.Module):
    """Makes ``forward`` return every output (coarse to fine), so DDP sees the call that trains all heads."""

    def __init__(self, network: nn.Module, deep_supervision: bool) -> None:
        super().__init__()
        self.network, self.deep_supervision = network, deep_supervision

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.deep_supervision:
            return self.network.forward_with_aux(x)  # type: ignore[operator]
        return [self.network(x)]


def build_level(config: TrainConfig, level: int) -> nn.Module:
    """The network of a level: new, or from a bundle with the fine-tuning strategy's parameters frozen."""
    network_config = level_network_config(config, level)
    network = build_network(network_config)
    if config.gradient_checkpointing and hasattr(network, "checkpointing"):
        setattr(network, "checkpointing", True)  # noqa: B010 - USegNet's switch, absent on other networks
    if config.finetune_from:
        from FetalHeadSegLib.models.bundle import verify_bundle
        from FetalHeadSegLib.models.catalog import find_model

        bundle = find_model(config.finetune_from)
        verify_bundle(bundle)
        members = len(bundle.cascades)
        if config.finetune_member >= members:
            raise ConfigError(
                f"finetune_member {config.finetune_member}: {config.finetune_from} has {members} member(s), "
                f"numbered from 0"
            )
        source_level = min(level, bundle.levels - 1)
        name = bundle.member_weight_files(config.finetune_member)[source_level]
        state = {k: v.float() for k, v in torch.load(bundle.path / name, map_location="cpu", weights_only=True).items()}
        source_config = bundle.level_networks(source_level)[config.finetune_member]
        try:
            network.load_state_dict(
                fit_state(state, source_config, network_config, network.state_dict(), config.seed + level)
            )
        except ValueError as err:
            raise ConfigError(f"finetune_from: level {level + 1} of {bundle.path} cannot widen: {err}") from err
        except RuntimeError as err:
            raise ConfigError(
                f"finetune_from: {bundle.path / name} does not fit the network of level {level + 1} in this config "
                "(an ensemble's members may differ: see finetune_member)"
            ) from err
        freeze_for_finetuning(network, config.finetune_strategy)
    return network


def frozen_modules(network: nn.Module, strategy: str) -> list[nn.Module]:
    """The parts a fine-tuning strategy keeps fixed: ``all`` none; ``decoder`` the whole encoder (train the
    decoder and heads only); ``encoder_frozen`` the encoder except its deepest level (the bottleneck trains)."""
    encoder = getattr(network, "encoder", None)
    if strategy == "all" or encoder is None:
        return []
    blocks = list(encoder)
    return blocks if strategy == "decoder" else blocks[:-1]


def freeze_for_finetuning(network: nn.Module, strategy: str) -> None:
    for module in frozen_modules(network, strategy):
        for parameter in module.parameters():
            parameter.requires_grad_(False)


def _keep_frozen_in_eval(network: nn.Module, strategy: str) -> None:
    network.train()
    for module in frozen_modules(network, strategy):
        module.eval()  # frozen normalisation statistics stay fixed too


@dataclass
class TrainingClock:
    """A level's training time, carried across resumed runs, against its budget (``time_budget_minutes``)."""

    budget_s: float | None
    elapsed_before_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed_s(self) -> float:
        return self.elapsed_before_s + time.perf_counter() - self.started

    def spent_fraction(self) -> float:
        """Share of the budget used (0 without a budget)."""
        return 0.0 if self.budget_s is None else min(1.0, self.elapsed_s() / self.budget_s)

    def spent(self) -> bool:
        return self.budget_s is not None and self.elapsed_s() >= self.budget_s


def _lr_lambda(config: TrainConfig, clock: TrainingClock) -> Callable[[int], float]:
    """Warm-up by steps, then constant or cosine; the cosine's progress is the budget's time where there is one."""
    optim = config.optim

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "cosine":
            progress = (step - optim.warmup_steps) / max(1, config.iterations - optim.warmup_steps)
            if clock.budget_s is not None:
                progress = max(progress, clock.spent_fraction())
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


@dataclass
class LevelJob:
    """One cascade level's training: the network and its optimiser, and where it logs and checkpoints.

    Attributes:
        start: the step training starts from (after a resumed checkpoint, the step it holds).
    """

    config: TrainConfig
    level: int
    tag: str
    dist: DistInfo
    run_dir: Path
    log: Log
    network: nn.Module
    network_config: NetworkConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    clock: TrainingClock
    start: int = 0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / f"{self.tag}.pt"

    @property
    def frozen_strategy(self) -> str:
        return self.config.finetune_strategy if self.config.finetune_from else "all"


@dataclass
class _Meter:
    """Losses since the last log line and the time spent waiting for data versus computing."""

    losses: list[float] = field(default_factory=list)
    wait_s: float = 0.0
    compute_s: float = 0.0


def train_level(
    config: TrainConfig,
    level: int,
    arrays: CaseArrays,
    context: list[np.ndarray] | None,
    dist: DistInfo,
    run_dir: Path,
    tag: str,
    log: Log,
    validation: tuple[CaseArrays, list[np.ndarray] | None] | None = None,
    context_draw: Callable[[int, np.random.Generator], np.ndarray] | None = None,
) -> nn.Module:
    """Train one level for ``config.iterations`` steps, resuming from ``checkpoints/<tag>.pt`` when present.
    ``context_draw`` (a roi cascade's ``roi_context.redraw``) gives each sample a fresh context.

    Returns the trained (unwrapped) network on the training device, in eval mode.
    """
    job = start_level(config, level, dist, run_dir, tag, log)
    if job.clock.budget_s is not None and job.clock.elapsed_before_s >= job.clock.budget_s:  # by an earlier run
        log(f"[{tag}] its time budget was spent at step {job.start}")
        return job.network.eval()
    model = wrap_for_training(job)
    loader = build_loader(job, arrays, context, context_draw)
    steps_per_epoch = max(1, len(arrays) // config.batch_size)
    _keep_frozen_in_eval(job.network, job.frozen_strategy)
    meter = _Meter()
    clock = time.perf_counter()
    for offset, (images, targets) in enumerate(loader):
        step = job.start + offset
        loaded = time.perf_counter()
        meter.wait_s += loaded - clock
        meter.losses.append(train_step(job, model, images, targets, step, steps_per_epoch))
        clock = time.perf_counter()
        meter.compute_s += clock - loaded
        done = step + 1
        out_of_time = job.clock.budget_s is not None and any_rank(job.clock.spent(), dist.device)
        last = done == config.iterations or out_of_time
        if done % config.log_every == 0 or last:
            _log_progress(job, done, offset + 1, meter)
            meter.losses = []
        if out_of_time:
            log(f"[{tag}] time budget of {config.time_budget_minutes} min spent at step {done}")
        _validate_and_checkpoint(job, done, validation, last)
        if out_of_time:
            break
    return job.network.eval()


def start_level(config: TrainConfig, level: int, dist: DistInfo, run_dir: Path, tag: str, log: Log) -> LevelJob:
    """The level's network, Adam and learning-rate schedule, restored from its checkpoint when there is one."""
    device = dist.device
    network = build_level(config, level).to(device)
    clock = TrainingClock(None if config.time_budget_minutes is None else 60.0 * config.time_budget_minutes)
    optimizer = torch.optim.Adam(
        [p for p in network.parameters() if p.requires_grad],
        lr=config.optim.lr,
        betas=config.optim.betas,
        eps=config.optim.eps,
        weight_decay=config.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, clock))
    job = LevelJob(
        config,
        level,
        tag,
        dist,
        run_dir,
        log,
        network,
        level_network_config(config, level),
        optimizer,
        scheduler,
        clock,
    )
    if job.checkpoint_path.exists():
        state = torch.load(job.checkpoint_path, map_location=device, weights_only=True)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        job.start = int(state["step"])
        clock.elapsed_before_s = float(state.get("elapsed_s", 0.0))
        log(f"[{tag}] resuming at step {job.start}")
    return job


def wrap_for_training(job: LevelJob) -> nn.Module:
    """The module a step calls: every output (deep supervision), DDP across processes, optionally compiled."""
    device = job.dist.device
    model: nn.Module = WithAux(job.network, job.network_config.has_aux_heads)
    if job.dist.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if job.config.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def build_loader(
    job: LevelJob,
    arrays: CaseArrays,
    context: list[np.ndarray] | None,
    context_draw: Callable[[int, np.random.Generator], np.ndarray] | None = None,
) -> torch.utils.data.DataLoader:
    """Augmented batches keyed by step from ``job.start`` on (so a resumed run sees the same samples)."""
    config, dist = job.config, job.dist
    dataset = AugmentedCases(
        arrays,
        context,
        config.augment,
        config.seed + 1000 * job.level,
        config.batch_size,
        target_factors(job.network_config),
        job.network_config.size_multiple,
        config.patch_size,
        context_draw,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size // dist.world_size,
        sampler=StepSampler(job.start, config.iterations, config.batch_size, dist.rank, dist.world_size),
        num_workers=config.num_workers,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )


def train_step(
    job: LevelJob,
    model: nn.Module,
    images: torch.Tensor,
    targets: list[torch.Tensor],
    step: int,
    steps_per_epoch: int,
) -> float:
    """One optimiser step (bf16/fp16 autocast on CUDA); returns the loss."""
    config, device = job.config, job.dist.device
    images = images.to(device, non_blocking=True)
    targets = [t.to(device, non_blocking=True) for t in targets]
    criterion = DeepSupervisionLoss(loss_weights(config, step, steps_per_epoch), config.loss.dice_weight)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if config.amp == "bf16" else torch.float16)
        if device.type == "cuda" and config.amp != "none"
        else contextlib.nullcontext()
    )
    with autocast:
        outputs = model(images)
    loss = criterion(outputs, targets)
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    job.optimizer.step()
    job.scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return float(loss.detach())


def _log_progress(job: LevelJob, done: int, steps: int, meter: _Meter) -> None:
    """The mean loss over every process since the last line, throughput and the share of time spent waiting."""
    config = job.config
    mean_loss = mean_over_ranks(float(np.mean(meter.losses)), job.dist.device)
    if not job.dist.is_main:
        return
    busy = max(meter.wait_s + meter.compute_s, 1e-9)
    learning_rate = job.scheduler.get_last_lr()[0]
    job.log(
        f"[{job.tag}] step {done}/{config.iterations} loss {mean_loss:.4f} lr {learning_rate:.2e} "
        f"{steps * config.batch_size / busy:.2f} samples/s, waiting for data {100 * meter.wait_s / busy:.0f} %"
    )
    _append_csv(
        job.run_dir / f"metrics_{job.tag}.csv",
        {"step": done, "loss": mean_loss, "lr": learning_rate, "data_wait_fraction": meter.wait_s / busy},
    )


def _validate_and_checkpoint(
    job: LevelJob, done: int, validation: tuple[CaseArrays, list[np.ndarray] | None] | None, last: bool
) -> None:
    """Save a checkpoint (all processes wait) and validate (main process) when their step has come or training
    ends (``last``). The checkpoint comes first: a validation that fails loses no training."""
    config = job.config
    if done % config.checkpoint_every == 0 or last:
        if job.dist.is_main:
            _save_checkpoint(job, done)
        barrier()
    if job.dist.is_main and validation is not None and (done % config.validate_every == 0 or last):
        scores = evaluate(
            job.network, job.network_config, validation[0], validation[1], config.task, cascade_multiple(config)
        )
        job.log(f"[{job.tag}] validation at step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        _append_csv(job.run_dir / f"validation_{job.tag}.csv", {"step": done, **scores})
        _keep_frozen_in_eval(job.network, job.frozen_strategy)


def _save_checkpoint(job: LevelJob, step: int) -> None:
    path = job.checkpoint_path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    torch.save(
        {
            "model": job.network.state_dict(),
            "optimizer": job.optimizer.state_dict(),
            "scheduler": job.scheduler.state_dict(),
            "step": step,
            "level": job.level,
            "elapsed_s": job.clock.elapsed_s(),
        },
        staging,
    )
    staging.replace(path)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
