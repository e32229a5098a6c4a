"""Model bundles: a self-describing folder that rebuilds a cascade with nothing but its own files.

Layout::

    <bundle>/bundle.json        format version, id, version, task, networks, preprocessing, labels,
                                model card, SHA-256 of every weight file
    <bundle>/weights/level0.pt  plain state_dict of cascade level 0 (torch.load with weights_only=True)
    <bundle>/weights/level1.pt  ...
    <bundle>/weights/member1/level0.pt  an ensemble's second member (``members``), and so on

Loading verifies every checksum first and refuses a mismatch. Nothing is downloaded.

An ensemble is one bundle: ``networks`` are its first member's cascade levels and ``members`` the others', level for
level; every level's probabilities are the members' average (:class:`~FetalHeadSegLib.models.networks.
AveragedProbabilities`), so preprocessing, cascade, postprocessing, review and model card are the bundle's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from FetalHeadSegLib.core.errors import BundleError, ChecksumError
from FetalHeadSegLib.core.labels import Label
from FetalHeadSegLib.core.tasks import Task, task_spec
from FetalHeadSegLib.inference.cascade import CascadeConfig, CascadeMode
from FetalHeadSegLib.inference.postprocessing import PostprocessingConfig
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
from FetalHeadSegLib.measure.review import ReviewPolicy
from FetalHeadSegLib.models.network_config import NetworkConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelBundle:
    """The description of a model (no weights in memory)."""

    path: Path
    id: str
    version: str
    name: str
    dimension: int
    task: Task
    networks: list[NetworkConfig]
    preprocessing: PreprocessingConfig
    labels: list[Label]
    tile_size: int = 128
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    review: ReviewPolicy = field(default_factory=ReviewPolicy)
    review_tta: ReviewPolicy | None = None
    """Thresholds for results made with flip test-time augmentation, whose signals include the flipped passes'
    disagreement; None: ``review`` decides with and without TTA."""
    postprocessing: PostprocessingConfig = field(default_factory=PostprocessingConfig)
    model_card: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    members: list[list[NetworkConfig]] = field(default_factory=list)
    """An ensemble's further members, each its cascade levels as ``networks`` lists the first member's (empty: one
    network per level)."""
    tta_by_default: bool = False
    """Whether a run that does not say otherwise uses flip test-time augmentation (``InferenceOptions.tta`` None):
    set for a model whose validation measured better with it at a cost its users accept (a 2D frame's flip costs
    what the mirror check costs already)."""

    @property
    def head_label(self) -> int:
        """The label value of the fetal head (from the task registry)."""
        return task_spec(self.task).head_label

    @property
    def levels(self) -> int:
        return len(self.networks)

    def uses_tta(self, asked: bool | None) -> bool:
        """Whether a run flips: as asked, or as this model recommends when the run does not say (None)."""
        return self.tta_by_default if asked is None else asked

    def review_policy(self, tta: bool) -> ReviewPolicy:
        """The review thresholds calibrated for results made with (``tta``) or without flip TTA."""
        return self.review_tta if tta and self.review_tta is not None else self.review

    @property
    def cascades(self) -> list[list[NetworkConfig]]:
        """Every member's cascade levels, the first member's (``networks``) first; a single model has one."""
        return [self.networks, *self.members]

    def level_networks(self, level: int) -> list[NetworkConfig]:
        """The networks whose probabilities are averaged at ``level``, one per member."""
        return [cascade[level] for cascade in self.cascades]

    def member_weight_files(self, member: int) -> list[str]:
        """The weight files of one member's levels (member 0: ``weights/level<n>.pt``)."""
        folder = "weights" if member == 0 else f"weights/member{member}"
        return [f"{folder}/level{level}.pt" for level in range(self.levels)]

    @property
    def weight_files(self) -> list[str]:
        """Every weight file, member by member."""
        return [name for member in range(len(self.cascades)) for name in self.member_weight_files(member)]

    @property
    def fingerprint(self) -> str:
        """One SHA-256 over the bundle's weight checksums, for provenance records."""
        joined = "".join(f"{name}:{self.sha256[name]}" for name in sorted(self.sha256))
        return hashlib.sha256(joined.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "dimension": self.dimension,
            "task": self.task,
            "context": "level n > 0 takes [image, foreground probability of level n - 1]",
            "networks": [network.to_dict() for network in self.networks],
            "preprocessing": self.preprocessing.to_dict(),
            "cascade": self.cascade.to_dict(),
            "review": self.review.to_dict(),
            **({"review_tta": self.review_tta.to_dict()} if self.review_tta is not None else {}),
            "postprocessing": self.postprocessing.to_dict(),
            "labels": [label.to_dict() for label in self.labels],
            "tile_size": self.tile_size,
            "tta_by_default": self.tta_by_default,
            "model_card": self.model_card,
            "sha256": self.sha256,
            **(
                {"members": [[network.to_dict() for network in member] for member in self.members]}
                if self.members
                else {}
            ),
        }


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    """Read and validate ``bundle.json`` (weights are not read).

    Raises:
        BundleError: missing folder or file, unknown format version, invalid settings.
    """
    folder = Path(path)
    manifest = folder / "bundle.json"
    if not manifest.is_file():
        raise BundleError(f"{folder}: not a model bundle (no bundle.json)")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest}: cannot be read as JSON ({err})") from err
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest}: format version {data.get('format_version')} is not supported "
            f"(this FetalHeadSeg reads version {FORMAT_VERSION})"
        )
    try:
        bundle = ModelBundle(
            path=folder,
            id=str(data["id"]),
            version=str(data["version"]),
            name=str(data.get("name", data["id"])),
            dimension=int(data["dimension"]),
            task=Task(str(data["task"])),
            networks=[NetworkConfig.from_dict(network) for network in data["networks"]],
            preprocessing=PreprocessingConfig.from_dict(data["preprocessing"]),
            labels=[Label.from_dict(label) for label in data["labels"]],
            tile_size=int(data.get("tile_size", 128)),
            cascade=CascadeConfig.from_dict(data.get("cascade")),
            review=ReviewPolicy.from_dict(data.get("review")),
            review_tta=ReviewPolicy.from_dict(data["review_tta"]) if data.get("review_tta") else None,
            postprocessing=PostprocessingConfig.from_dict(data.get("postprocessing")),
            model_card=dict(data.get("model_card", {})),
            sha256={str(k): str(v) for k, v in data["sha256"].items()},
            members=[[NetworkConfig.from_dict(network) for network in member] for member in data.get("members", [])],
            tta_by_default=_boolean(data.get("tta_by_default", False), "tta_by_default"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{manifest}: invalid model description ({err})") from err
    if bundle.dimension not in (2, 3) or not bundle.networks:
        raise BundleError(f"{manifest}: dimension must be 2 or 3, with at least one network")
    if bundle.cascade.mode is CascadeMode.ROI and len(bundle.cascade.level_preprocessing) != bundle.levels:
        raise BundleError(f"{manifest}: a roi cascade needs one preprocessing per level ({bundle.levels})")
    for number, member in enumerate(bundle.members, start=1):
        if len(member) != bundle.levels or any(
            (config.spatial_dims, config.in_channels, config.out_channels)
            != (first.spatial_dims, first.in_channels, first.out_channels)
            for config, first in zip(member, bundle.networks, strict=False)
        ):
            raise BundleError(
                f"{manifest}: ensemble member {number} does not match the first member level for level "
                "(number of levels, dimension, input or output channels)"
            )
    expected = task_spec(bundle.task).label_values
    if [label.value for label in bundle.labels] != expected:
        raise BundleError(f"{manifest}: task {bundle.task.value} has labels {expected}, the bundle lists others")
    missing = [name for name in bundle.weight_files if name not in bundle.sha256]
    if missing:
        raise BundleError(f"{manifest}: no SHA-256 recorded for {', '.join(missing)}")
    return bundle


def _boolean(value: Any, key: str) -> bool:
    """A JSON true or false (``bool("false")`` would be True)."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def verify_bundle(bundle: ModelBundle) -> None:
    """Check every weight file against its recorded SHA-256.

    Raises:
        ChecksumError: a file is missing or its checksum differs.
    """
    for name in bundle.weight_files:
        file = bundle.path / name
        if not file.is_file():
            raise ChecksumError(f"{file}: weight file missing; reinstall or re-export the model")
        found = sha256_of(file)
        if found != bundle.sha256[name]:
            raise ChecksumError(
                f"{file}: SHA-256 mismatch (expected {bundle.sha256[name][:12]}..., found {found[:12]}...): "
                "the file is damaged or was changed; reinstall or re-export the model"
            )


def load_networks(bundle: ModelBundle, device: torch.device) -> list[nn.Module]:
    """Verify the checksums, then build each level's network, load its weights (``weights_only=True``) in
    float32 and put it in eval mode on ``device``; an ensemble's level is its members' average
    (:class:`~FetalHeadSegLib.models.networks.AveragedProbabilities`).

    Raises:
        ChecksumError: see :func:`verify_bundle`.
        BundleError: the weights do not fit the described networks.
    """
    import torch

    from FetalHeadSegLib.models.networks import AveragedProbabilities, build_network

    verify_bundle(bundle)

    def load(config: NetworkConfig, name: str) -> nn.Module:
        network = build_network(config)
        state = torch.load(bundle.path / name, map_location="cpu", weights_only=True)
        try:
            network.load_state_dict({key: value.float() for key, value in state.items()})
        except RuntimeError as err:
            raise BundleError(f"{bundle.path / name}: weights do not match the network in bundle.json") from err
        return network.to(device).eval()

    members = [
        [load(config, name) for config, name in zip(cascade, bundle.member_weight_files(number), strict=True)]
        for number, cascade in enumerate(bundle.cascades)
    ]
    return [level[0] if len(level) == 1 else AveragedProbabilities(list(level)) for level in zip(*members, strict=True)]


def write_bundle(
    destination: str | os.PathLike[str],
    description: ModelBundle,
    state_dicts: list[dict[str, torch.Tensor]],
    half_precision: bool = False,
) -> ModelBundle:
    """Write a bundle folder: weights (optionally float16), their SHA-256, and ``bundle.json``.

    The folder appears complete or not at all (written beside the destination, then renamed). An existing
    folder at ``destination`` is replaced.
    """
    import torch

    target = Path(destination)
    if len(state_dicts) != len(description.weight_files):
        raise ValueError(f"{len(description.weight_files)} networks described but {len(state_dicts)} state_dicts given")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle must be readable by every user of an installation
    try:
        checksums = {}
        for name, state in zip(description.weight_files, state_dicts, strict=True):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            tensors = {
                k: (v.half() if half_precision and v.is_floating_point() else v).detach().cpu().contiguous()
                for k, v in state.items()
            }
            torch.save(tensors, staging / name)
            checksums[name] = sha256_of(staging / name)
        bundle = ModelBundle(**{**description.__dict__, "path": target, "sha256": checksums})
        (staging / "bundle.json").write_text(json.dumps(bundle.to_dict(), indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundle
