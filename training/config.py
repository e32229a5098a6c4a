"""The training configuration: frozen dataclasses read from JSON (or YAML with PyYAML) plus CLI overrides.

``python -m training.train run.json optim.lr=1e-4 iterations=500``: each override is ``dotted.key=value`` with
the value parsed as JSON when possible (numbers, lists, true/false/null), else taken as a string.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from FetalHeadSegLib.core.errors import ConfigError
from FetalHeadSegLib.core.tasks import Task, task_spec
from FetalHeadSegLib.inference.cascade import CascadeConfig, CascadeMode
from FetalHeadSegLib.inference.postprocessing import PostprocessingConfig
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
from FetalHeadSegLib.models.network_config import PRESETS, Architecture, NetworkConfig
from training.augment import AugmentConfig
from training.data import DataConfig

CONTEXT_MODES = ("kfold", "resubstitution", "perturbed")
FINETUNE_STRATEGIES = ("all", "decoder", "encoder_frozen")


@dataclass(frozen=True)
class OptimConfig:
    """Adam (the seed: lr 4e-5 constant, betas 0.9/0.999, eps 1e-8); ``cosine`` decays to 1 % after warm-up."""

    lr: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0


@dataclass(frozen=True)
class LossConfig:
    """Deep supervision: cross-entropy on every head (the seed: weights 1, no decay, no Dice).

    ``aux_weights`` are the auxiliary heads' weights coarse to fine; ``aux_decay`` multiplies them once per epoch
    (a pass over the training cases); ``dice_weight`` adds soft Dice on the main head.
    """

    aux_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    main_weight: float = 1.0
    aux_decay: float = 1.0
    dice_weight: float = 0.0


@dataclass(frozen=True)
class ContextDrawConfig:
    """How the training contexts of a roi cascade's finer levels are drawn from the truth (``training/roi_data.py``).

    Lengths are in voxels of the coarser level's grid; ranges are (low, high) of uniform draws. The defaults fit a
    coarse level that is usually right to within a voxel or two; a coarse level that spills into the tissue around
    the head (as a 3D level 1 trained on few CPU iterations does) needs larger offsets and ``attached_blobs``.
    """

    offset: tuple[float, float] = (-1.0, 2.5)
    """How far the context's boundary lies outside the true one (negative: inside)."""
    wave: tuple[float, float] = (0.0, 1.0)
    """Amplitude of the boundary's waviness."""
    softness: tuple[float, float] = (0.25, 1.0)
    """Width of the context's edge (logistic scale)."""
    scale: tuple[float, float] = (0.6, 1.0)
    """The context's peak value (a coarse level is rarely certain everywhere)."""
    blobs: int = 3
    """At most this many false blobs anywhere in the region."""
    attached_blobs: int = 0
    """At most this many false blobs centred on the head's boundary (tissue or fluid the coarse level took for
    head), each 10-50 % of the head's equivalent radius."""
    missed: float = 0.1
    """Share of cases whose context is nearly empty (a coarse level that missed the head)."""
    cut: float = 0.0
    """Share of cases whose context lacks a cap of the head beyond a plane of random orientation (a coarse level
    that lost the head behind a shadow, a faint skull or dropout: on the 3D stress suite such misses reach 7-17 mm
    deep, far beyond ``offset``)."""
    cut_plane: tuple[float, float] = (0.3, 0.95)
    """Where the cutting plane lies, from the head's centre, in units of its equivalent radius (0.3: most of a
    hemisphere is cut away; 1: nothing)."""
    redraw: bool = False
    """Draw a new context for every training sample (keyed by step and slot) instead of one per case at
    preprocessing; the crop stays the cached one. A level that always sees the same context with a case can learn
    the pair rather than the border. Validation keeps the cached contexts. Two-level cascades."""

    def __post_init__(self) -> None:
        for name in ("offset", "wave", "softness", "scale", "cut_plane"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"invalid training config: roi_context.{name} needs low <= high, got {low}, {high}")
        if self.blobs < 0 or self.attached_blobs < 0 or not 0.0 <= self.missed <= 1.0 or not 0.0 <= self.cut <= 1.0:
            raise ConfigError(
                "invalid training config: roi_context blobs >= 0, attached_blobs >= 0, missed and cut in [0, 1]"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ContextDrawConfig:
        return cls(**_tuples(data or {}))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` in the run folder."""

    run_dir: str
    data: DataConfig
    seed: int = 0
    task: str = "head"
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    level_networks: tuple[NetworkConfig, ...] = ()
    """One network per cascade level where the levels differ (each a preset name or settings, as ``network``);
    empty: ``network`` at every level. Their deep-supervision heads must match ``network``'s (``loss.aux_weights``)."""
    levels: int = 2
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    context: str = "kfold"
    folds: int = 5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch_size: int = 1
    iterations: int = 24300
    time_budget_minutes: float | None = None
    """Stop each trained level (and each fold model of ``context: kfold``) after this many minutes of training (a
    leased GPU's time, say): it ends with a checkpoint, validation and weights as after its last step, and a cosine
    schedule runs over the minutes instead of the steps, so the level still ends at its lowest learning rate.
    ``iterations`` stays the upper bound. Where the run stops depends on the machine's speed, so two runs are not
    the same step for step."""
    patch_size: tuple[int, ...] | None = None
    validate_every: int = 1000
    checkpoint_every: int = 200
    log_every: int = 100
    amp: str = "bf16"
    compile: bool = False
    gradient_checkpointing: bool = False
    num_workers: int = 4
    device: str = "auto"
    finetune_from: str | None = None
    finetune_strategy: str = "all"
    finetune_member: int = 0
    """Which network of an ensemble ``finetune_from`` starts from (0: its first member; ``network`` must describe
    that member's architecture). A single model has member 0 only."""
    reuse_levels: int | tuple[int, ...] = 0
    """Levels taken from ``finetune_from`` as they are: a count (the first N) or level numbers (1-based; a roi
    cascade's finer levels do not depend on the coarser ones, so ``[2]`` retrains level 1 and keeps level 2)."""
    roi_context: ContextDrawConfig = field(default_factory=ContextDrawConfig)
    """How a roi cascade's finer levels' training contexts are drawn (ignored by same-grid cascades)."""
    postprocessing: PostprocessingConfig = field(default_factory=PostprocessingConfig)
    """The bundle's extra clean-up after the networks (exported with the model)."""
    model: dict[str, Any] = field(default_factory=dict)

    def reused(self, level: int) -> bool:
        """Whether level ``level`` (0-based) is taken from ``finetune_from`` as it is."""
        if isinstance(self.reuse_levels, int):
            return level < self.reuse_levels
        return level + 1 in self.reuse_levels

    def __post_init__(self) -> None:
        checks = [
            (self.task in {t.value for t in Task}, f"task must be one of {[t.value for t in Task]}, got {self.task!r}"),
            (self.levels >= 1, "levels must be at least 1"),
            (self.finetune_member >= 0, f"finetune_member must be 0 or more, got {self.finetune_member}"),
            (
                not any(self.reused(level) for level in range(self.levels))
                or (self.finetune_from is not None and not all(self.reused(level) for level in range(self.levels))),
                "reuse_levels copies levels of finetune_from: give finetune_from, train one level at least",
            ),
            (
                isinstance(self.reuse_levels, int) or all(1 <= n <= self.levels for n in self.reuse_levels),
                f"reuse_levels: level numbers run from 1 to {self.levels}",
            ),
            (
                self.cascade.mode is CascadeMode.ROI
                or not any(self.reused(level) and not self.reused(level - 1) for level in range(1, self.levels)),
                "reuse_levels: a same-grid level learns from the level before it; retrain every level after a "
                "retrained one",
            ),
            (self.context in CONTEXT_MODES, f"context must be one of {CONTEXT_MODES}"),
            (self.folds >= 2, "folds must be at least 2"),
            (self.batch_size >= 1 and self.iterations >= 1, "batch_size and iterations must be positive"),
            (
                self.time_budget_minutes is None or self.time_budget_minutes > 0,
                "time_budget_minutes must be positive (or null: no budget)",
            ),
            (self.amp in ("none", "bf16", "fp16"), "amp must be none, bf16 or fp16"),
            (self.finetune_strategy in FINETUNE_STRATEGIES, f"finetune_strategy must be one of {FINETUNE_STRATEGIES}"),
            (
                not self.roi_context.redraw or (self.cascade.mode is CascadeMode.ROI and self.levels == 2),
                "roi_context.redraw: a two-level roi cascade redraws its level 2's contexts; there is none here",
            ),
            (
                all(n.in_channels == 1 for n in (self.network, *self.level_networks)),
                "network.in_channels is set per cascade level; leave it at 1",
            ),
            (
                not self.level_networks or len(self.level_networks) == self.levels,
                f"level_networks needs one network per level ({self.levels}) or none",
            ),
            (
                all(_heads(n) == _heads(self.network) for n in self.level_networks),
                "level_networks: every level needs the dimension, classes and deep-supervision heads of network",
            ),
            (
                self.patch_size is None or len(self.patch_size) == self.network.spatial_dims,
                "patch_size needs one value per spatial axis",
            ),
        ]
        if self.cascade.mode is CascadeMode.ROI:
            checks.append(
                (
                    len(self.cascade.level_preprocessing) == self.levels,
                    f"cascade.level_preprocessing needs one entry per level ({self.levels})",
                )
            )
            checks.append(
                (
                    self.batch_size == 1 or self.patch_size is not None,
                    "a roi cascade's crops differ in size: give patch_size (or batch_size 1)",
                )
            )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid training config: {message}")
        expected = len(self.network.channels) - 1 if self.network.deep_supervision else 0
        if self.network.architecture is Architecture.USEGNET and len(self.loss.aux_weights) != expected:
            raise ConfigError(
                f"loss.aux_weights needs {expected} values (one per auxiliary head), got {len(self.loss.aux_weights)}"
            )

    @property
    def classes(self) -> int:
        return self.network.out_channels

    def level_preprocessing(self, level: int) -> PreprocessingConfig:
        """The preprocessing of one cascade level (``preprocessing`` for every level of a same-grid cascade)."""
        return self.cascade.preprocessing(level, self.preprocessing)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["cascade"] = self.cascade.to_dict()
        values["postprocessing"] = self.postprocessing.to_dict()
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        values = dict(data)
        try:
            values["network"] = _network(values.get("network", {}))
            values["level_networks"] = tuple(_network(n) for n in values.get("level_networks", ()))
            values["data"] = DataConfig.from_dict(values["data"])
            values["preprocessing"] = PreprocessingConfig.from_dict(values.get("preprocessing", {}))
            values["cascade"] = CascadeConfig.from_dict(values.get("cascade"))
            values["postprocessing"] = PostprocessingConfig.from_dict(values.get("postprocessing"))
            values["roi_context"] = ContextDrawConfig.from_dict(values.get("roi_context"))
            augment = dict(values.get("augment", {}))
            augment.setdefault("flip_axes", list(task_spec(values.get("task", "head")).mirror_axes))
            values["augment"] = AugmentConfig.from_dict(augment)
            values["optim"] = OptimConfig(**_tuples(values.get("optim", {})))
            values["loss"] = LossConfig(**_tuples(values.get("loss", {})))
            if values.get("patch_size") is not None:
                values["patch_size"] = tuple(int(v) for v in values["patch_size"])
            if isinstance(values.get("reuse_levels"), list):
                values["reuse_levels"] = tuple(int(v) for v in values["reuse_levels"])
            return cls(**values)
        except KeyError as err:
            raise ConfigError(f"invalid training config: unknown or missing setting {err}") from err
        except (TypeError, ValueError) as err:
            raise ConfigError(f"invalid training config: {err}") from err


def _network(settings: str | dict[str, Any]) -> NetworkConfig:
    """A network from a preset name, from settings, or from a preset with some settings changed (``"preset"``)."""
    if isinstance(settings, str):
        return PRESETS[settings]
    if "preset" in settings:
        settings = {**PRESETS[settings["preset"]].to_dict(), **{k: v for k, v in settings.items() if k != "preset"}}
    return NetworkConfig.from_dict(settings)


def _heads(network: NetworkConfig) -> tuple[int, int, int]:
    """What the loss depends on: dimension, classes and the number of deep-supervision outputs (0: none)."""
    return network.spatial_dims, network.out_channels, len(network.channels) if network.has_aux_heads else 0


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def read_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a JSON or YAML config file and apply ``dotted.key=value`` overrides.

    Raises:
        ConfigError: unreadable file, bad override, invalid setting.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{file}: cannot read the config ({err.strerror or err})") from err
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ConfigError(f"{file}: YAML configs need PyYAML (pip install 'FetalHeadSeg[train]')") from err
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{file}: not valid JSON ({err})") from err
    for override in overrides or []:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not of the form dotted.key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return TrainConfig.from_dict(data)
