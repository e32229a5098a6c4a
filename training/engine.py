"""Training one cascade level, evaluating it, and predicting context maps: the loop, top to bottom."""

from __future__ import annotations

import contextlib
import csv
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from FetalHeadSegLib.network_config import NetworkConfig
from FetalHeadSegLib.networks import build_network
from training.config import TrainConfig
from training.data import CaseArrays
from training.distributed import DistInfo, barrier, mean_over_ranks
from training.losses import DeepSupervisionLoss
from training.samples import AugmentedCases, StepSampler

Log = Callable[[str], None]


def level_network_config(config: TrainConfig, level: int) -> NetworkConfig:
    """Level 0 sees the image; later levels the image plus the previous level's foreground probability."""
    return config.network.with_in_channels(1 if level == 0 else 2)


def target_factors(network: NetworkConfig) -> list[int]:
    """Down-sampling factor of each training output, coarse to fine (the main output last, factor 1)."""
    if network.architecture == "usegnet" and network.deep_supervision:
        return [2**level for level in reversed(range(len(network.channels)))]
    return [1]


def loss_weights(config: TrainConfig, step: int, steps_per_epoch: int) -> list[float]:
    if config.network.architecture != "usegnet" or not config.network.deep_supervision:
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
    network = build_network(level_network_config(config, level))
    if config.gradient_checkpointing and hasattr(network, "checkpointing"):
        setattr(network, "checkpointing", True)  # noqa: B010 - USegNet's switch, absent on other networks
    if config.finetune_from:
        from FetalHeadSegLib.bundle import verify_bundle
        from FetalHeadSegLib.catalog import find_model

        bundle = find_model(config.finetune_from)
        verify_bundle(bundle)
        state = torch.load(
            bundle.path / bundle.weight_files[min(level, bundle.levels - 1)], map_location="cpu", weights_only=True
        )
        network.load_state_dict(widen_inputs({k: v.float() for k, v in state.items()}, network.state_dict()))
        freeze_for_finetuning(network, config.finetune_strategy)
    return network


def widen_inputs(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a network with fewer input channels, made to fit ``target``: the new input channels (a cascade
    level's context) start at zero, so the widened network first computes exactly what the source did.

    Raises:
        ConfigError: a tensor differs in any other way.
    """
    from FetalHeadSegLib.errors import ConfigError

    widened = {}
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape:
            widened[key] = value
            continue
        if value.ndim < 2 or value.shape[0] != want.shape[0] or value.shape[2:] != want.shape[2:]:
            raise ConfigError(
                f"finetune_from: weight {key} has shape {tuple(value.shape)}, expected {tuple(want.shape)}"
            )
        extra = torch.zeros((value.shape[0], want.shape[1] - value.shape[1], *value.shape[2:]), dtype=value.dtype)
        widened[key] = torch.cat([value, extra], dim=1)
    return widened


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


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    optim = config.optim

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "cosine":
            progress = (step - optim.warmup_steps) / max(1, config.iterations - optim.warmup_steps)
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


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
) -> nn.Module:
    """Train one level for ``config.iterations`` steps, resuming from ``checkpoints/<tag>.pt`` when present.

    Returns the trained (unwrapped) network on the training device, in eval mode.
    """
    device = dist.device
    network = build_level(config, level).to(device)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        trainable,
        lr=config.optim.lr,
        betas=config.optim.betas,
        eps=config.optim.eps,
        weight_decay=config.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    checkpoint_path = run_dir / "checkpoints" / f"{tag}.pt"
    start = 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
        log(f"[{tag}] resuming at step {start}")
    network_config = level_network_config(config, level)
    model: nn.Module = WithAux(network, network_config.architecture == "usegnet" and network_config.deep_supervision)
    if dist.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    multiple = network_config.size_multiple
    dataset = AugmentedCases(
        arrays,
        context,
        config.augment,
        config.seed + 1000 * level,
        config.batch_size,
        target_factors(network_config),
        multiple,
        config.patch_size,
    )
    sampler = StepSampler(start, config.iterations, config.batch_size, dist.rank, dist.world_size)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size // dist.world_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    steps_per_epoch = max(1, len(arrays) // config.batch_size)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if config.amp == "bf16" else torch.float16)
        if device.type == "cuda" and config.amp != "none"
        else contextlib.nullcontext()
    )
    metrics_file = run_dir / f"metrics_{tag}.csv"
    _keep_frozen_in_eval(network, config.finetune_strategy if config.finetune_from else "all")
    window: list[float] = []
    wait = compute = 0.0
    clock = time.perf_counter()
    for offset, (images, targets) in enumerate(loader):
        step = start + offset
        loaded = time.perf_counter()
        wait += loaded - clock
        images = images.to(device, non_blocking=True)
        targets = [t.to(device, non_blocking=True) for t in targets]
        criterion = DeepSupervisionLoss(loss_weights(config, step, steps_per_epoch), config.loss.dice_weight)
        with autocast:
            outputs = model(images)
        loss = criterion(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        window.append(float(loss.detach()))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        clock = time.perf_counter()
        compute += clock - loaded
        done = step + 1
        if done % config.log_every == 0 or done == config.iterations:
            mean_loss = mean_over_ranks(float(np.mean(window)), device)
            if dist.is_main:
                rate = (offset + 1) * config.batch_size / max(wait + compute, 1e-9)
                waiting = 100 * wait / max(wait + compute, 1e-9)
                log(
                    f"[{tag}] step {done}/{config.iterations} loss {mean_loss:.4f} lr {scheduler.get_last_lr()[0]:.2e} "
                    f"{rate:.2f} samples/s, waiting for data {waiting:.0f} %"
                )
                _append_csv(
                    metrics_file,
                    {
                        "step": done,
                        "loss": mean_loss,
                        "lr": scheduler.get_last_lr()[0],
                        "data_wait_fraction": wait / max(wait + compute, 1e-9),
                    },
                )
            window = []
        if dist.is_main and validation is not None and (done % config.validate_every == 0 or done == config.iterations):
            scores = evaluate(
                network, network_config, validation[0], validation[1], config.task, cascade_multiple(config)
            )
            log(f"[{tag}] validation at step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            _append_csv(run_dir / f"validation_{tag}.csv", {"step": done, **scores})
            _keep_frozen_in_eval(network, config.finetune_strategy if config.finetune_from else "all")
        if done % config.checkpoint_every == 0 or done == config.iterations:
            if dist.is_main:
                _save_checkpoint(checkpoint_path, network, optimizer, scheduler, done, config, level)
            barrier()
    return network.eval()


def _save_checkpoint(
    path: Path,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    config: TrainConfig,
    level: int,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    torch.save(
        {
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "level": level,
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


def cascade_multiple(config: TrainConfig) -> int:
    """The size multiple the inference engine pads every level's input to (the exported bundle's)."""
    from FetalHeadSegLib.preprocessing import cascade_size_multiple

    pad_multiples = [config.level_preprocessing(level).pad_multiple for level in range(config.levels)]
    return cascade_size_multiple(math.lcm(*pad_multiples), [config.network.size_multiple])


def predict_probabilities(
    network: nn.Module,
    network_config: NetworkConfig,
    image: np.ndarray,
    context: np.ndarray | None,
    size_multiple: int,
) -> np.ndarray:
    """Softmax probabilities (K, X, Y, Z) of one preprocessed case (image float (X, Y, Z) in the 256 input levels):
    the inference engine's own padding and forward pass (``FetalHeadSegLib.cascade.predict_unpadded``)."""
    from FetalHeadSegLib.cascade import predict_unpadded

    network.eval()
    return predict_unpadded(network, network_config.spatial_dims, size_multiple, image, context)


def predict_context(
    network: nn.Module,
    network_config: NetworkConfig,
    arrays: CaseArrays,
    context: list[np.ndarray] | None,
    size_multiple: int,
) -> list[np.ndarray]:
    """The foreground probability (uint8, value / 255) of every case: the next level's context channel, in the
    same 256 levels the engine's ``context_channel`` gives."""
    from FetalHeadSegLib.cascade import context_channel

    maps = []
    for index in range(len(arrays)):
        previous = None if context is None else np.asarray(context[index], np.float32) / 255.0
        probabilities = predict_probabilities(
            network, network_config, arrays.image_float(index), previous, size_multiple
        )
        maps.append(np.rint(context_channel(probabilities) * 255.0).astype(np.uint8))
    return maps


def evaluate(
    network: nn.Module,
    network_config: NetworkConfig,
    arrays: CaseArrays,
    context: list[np.ndarray] | None,
    task: str,
    size_multiple: int,
) -> dict[str, float]:
    """Mean Dice (foreground classes), HD95 (mm) and HC error (mm; head task) or AoP error (deg; intrapartum) on
    the working grid, after the same clean-up as inference."""
    from FetalHeadSegLib.aop import angle_of_progression
    from FetalHeadSegLib.biometry import measure_biometry
    from FetalHeadSegLib.errors import FetalHeadSegError
    from FetalHeadSegLib.image import Image, make_ijk_to_ras
    from FetalHeadSegLib.metrics import segmentation_metrics
    from FetalHeadSegLib.postprocessing import clean_label_map
    from FetalHeadSegLib.tasks import Task, task_spec

    dice, hd95, errors = [], [], []
    spec = task_spec(task)
    head_value = spec.head_label
    for index in range(len(arrays)):
        previous = None if context is None else np.asarray(context[index], np.float32) / 255.0
        probabilities = predict_probabilities(
            network, network_config, arrays.image_float(index), previous, size_multiple
        )
        values = list(range(1, probabilities.shape[0]))
        predicted = clean_label_map(np.argmax(probabilities, axis=0).astype(np.uint8), values)
        truth = arrays.labels[index]
        spacing = arrays.spacings[index]
        is_2d = truth.shape[2] == 1
        squeeze = (lambda a: a[:, :, 0]) if is_2d else (lambda a: a)
        per_class = [
            segmentation_metrics(squeeze(predicted == v), squeeze(truth == v), spacing[:2] if is_2d else spacing)
            for v in values
        ]
        dice.append(float(np.mean([m.dice for m in per_class])))
        head_metric = per_class[values.index(head_value)] if head_value in values else per_class[0]
        if math.isfinite(head_metric.hd95_mm):
            hd95.append(head_metric.hd95_mm)
        grid = make_ijk_to_ras(spacing)
        try:
            if spec.task is Task.INTRAPARTUM:
                errors.append(
                    abs(
                        angle_of_progression(Image(predicted, grid)).aop_deg
                        - angle_of_progression(Image(truth, grid)).aop_deg
                    )
                )
            else:
                errors.append(
                    abs(
                        measure_biometry(Image(spec.head_mask(predicted), grid)).hc_mm
                        - measure_biometry(Image(spec.head_mask(truth), grid)).hc_mm
                    )
                )
        except FetalHeadSegError:
            errors.append(float("nan"))
    key = "aop_error_deg" if spec.task is Task.INTRAPARTUM else "hc_error_mm"
    return {
        "dice": float(np.mean(dice)),
        "hd95_mm": float(np.mean(hd95)) if hd95 else float("nan"),
        key: float(np.nanmean(errors)) if not all(math.isnan(e) for e in errors) else float("nan"),
    }
