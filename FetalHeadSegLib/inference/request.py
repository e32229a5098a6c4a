"""One segment request, from the Slicer panel to the engine: what to segment, where the outputs go, how to run.

``fetalheadseg segment`` parses its arguments into a :class:`SegmentRequest` once (``from_namespace``) and passes
typed objects down; the Slicer module builds a request and turns it into the worker's command line (``to_argv``).
``from_namespace(parse(to_argv()))`` gives back the same request, so the panel, the worker and the command line
cannot disagree about an option. Import-light: no torch, SimpleITK or scipy.

Example:
    >>> from FetalHeadSegLib.cli import build_parser
    >>> request = SegmentRequest(("case.nrrd",), Path("out"), device="cpu", tta=True)
    >>> SegmentRequest.from_namespace(build_parser().parse_args(["segment", *request.to_argv()])) == request
    True
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from FetalHeadSegLib.core.errors import ConfigError
from FetalHeadSegLib.core.spacing import CHOOSABLE, SpacingSource
from FetalHeadSegLib.inference.engine import InferenceOptions
from FetalHeadSegLib.models.device import Device
from FetalHeadSegLib.report.cohort import LABEL_SUFFIXES, ExistingOutputs

LABEL_FORMATS = tuple(LABEL_SUFFIXES)
"""Label-map formats (``--format``): ``seg.nrrd`` (a Slicer segmentation) or ``nii.gz``."""


class ProgressMode(StrEnum):
    """How progress is reported: text on stderr, JSON lines on stdout (the Slicer worker), or not at all."""

    TEXT = "text"
    JSONL = "jsonl"
    NONE = "none"


@dataclass(frozen=True)
class SegmentRequest:
    """Everything ``fetalheadseg segment`` needs to run: the inputs, the outputs and the inference options.

    Attributes:
        inputs: image files, folders of images or glob patterns, as given.
        output: the output folder.
        model: a model id or bundle folder; None: the installed default for each input's dimension.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (resolved by ``device.resolve_device``).
        spacing_mm: the pixel/voxel size of every input, in mm (one value, or one per axis).
        spacing_csv: a CSV of per-file pixel sizes in mm (HC18 style).
        spacing_source: the source to use when several give a pixel size and they disagree.
        pixel_units: measure files that carry no pixel size in pixels instead of refusing them.
        existing: what to do with outputs that exist already (refuse, overwrite, or keep complete cases).
        label_format: a key of ``LABEL_SUFFIXES``: ``seg.nrrd`` or ``nii.gz``.
        tta: test-time flips (adds an uncertainty map and a quality flag); None: as the model recommends.
        tile_size: always predict in tiles of this many voxels (a positive multiple of 8); None: whole volumes.
        biometry: measure the head, not only segment it.
        ga_weeks: known gestational age in weeks (z-scores, centiles).
        qc: write the QC picture.
        threads: CPU threads for the networks; None: torch's default (every core).
        progress: how progress is reported.

    Raises:
        ConfigError: an option has a value the command cannot run with (the message names its flag).
    """

    inputs: tuple[str, ...]
    output: Path
    model: str | None = None
    device: str = Device.AUTO
    spacing_mm: tuple[float, ...] | None = None
    spacing_csv: Path | None = None
    spacing_source: SpacingSource | None = None
    pixel_units: bool = False
    existing: ExistingOutputs = ExistingOutputs.REFUSE
    label_format: str = "seg.nrrd"
    tta: bool | None = None
    tile_size: int | None = None
    biometry: bool = True
    ga_weeks: float | None = None
    qc: bool = True
    threads: int | None = None
    progress: ProgressMode = ProgressMode.TEXT

    def __post_init__(self) -> None:
        # Normalised in place so that requests built in Python and parsed from argv compare equal.
        object.__setattr__(self, "inputs", tuple(str(path) for path in self.inputs))
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "existing", ExistingOutputs(self.existing))
        object.__setattr__(self, "progress", ProgressMode(self.progress))
        if self.spacing_mm is not None:
            object.__setattr__(self, "spacing_mm", tuple(float(value) for value in self.spacing_mm))
        if self.ga_weeks is not None:
            object.__setattr__(self, "ga_weeks", float(self.ga_weeks))
        if self.spacing_csv is not None:
            object.__setattr__(self, "spacing_csv", Path(self.spacing_csv))
        if self.spacing_source is not None:
            object.__setattr__(self, "spacing_source", SpacingSource(self.spacing_source))
        if not self.inputs:
            raise ConfigError("no input given: name image files, folders of images or glob patterns")
        if self.label_format not in LABEL_SUFFIXES:
            raise ConfigError(f"--format must be one of {', '.join(LABEL_FORMATS)}, got {self.label_format!r}")
        if self.spacing_source is not None and self.spacing_source not in CHOOSABLE:
            choices = ", ".join(source.value for source in CHOOSABLE)
            raise ConfigError(f"--spacing-source must be one of {choices}, got {self.spacing_source.value!r}")
        if self.tile_size is not None and (self.tile_size < 8 or self.tile_size % 8):
            raise ConfigError(f"--tile-size must be a positive multiple of 8, got {self.tile_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> SegmentRequest:
        """The request of parsed ``fetalheadseg segment`` arguments.

        Raises:
            ConfigError: see the class.
        """
        existing = (
            ExistingOutputs.OVERWRITE
            if args.overwrite
            else ExistingOutputs.SKIP
            if args.skip_existing
            else ExistingOutputs.REFUSE
        )
        return cls(
            inputs=tuple(args.inputs),
            output=args.output,
            model=args.model,
            device=args.device,
            spacing_mm=tuple(args.spacing) if args.spacing else None,
            spacing_csv=args.spacing_csv,
            spacing_source=SpacingSource(args.spacing_source) if args.spacing_source else None,
            pixel_units=args.pixel_units,
            existing=existing,
            label_format=args.format,
            tta=args.tta,
            tile_size=args.tile_size,
            biometry=not args.no_biometry,
            ga_weeks=args.ga_weeks,
            qc=not args.no_qc,
            threads=args.threads,
            progress=ProgressMode(args.progress),
        )

    def to_argv(self) -> list[str]:
        """The arguments of ``fetalheadseg segment`` that ask for this request (without the command's name).

        Numbers are written with ``repr``, the shortest text that reads back as the same float.
        """
        argv = [*self.inputs, "-o", str(self.output), "--device", str(self.device)]
        if self.model:
            argv += ["--model", self.model]
        if self.spacing_mm:
            argv += ["--spacing", *(repr(value) for value in self.spacing_mm)]
        if self.spacing_csv is not None:
            argv += ["--spacing-csv", str(self.spacing_csv)]
        if self.spacing_source is not None:
            argv += ["--spacing-source", self.spacing_source.value]
        if self.pixel_units:
            argv.append("--pixel-units")
        if self.existing is ExistingOutputs.OVERWRITE:
            argv.append("--overwrite")
        elif self.existing is ExistingOutputs.SKIP:
            argv.append("--skip-existing")
        argv += ["--format", self.label_format]
        if self.ga_weeks is not None:
            argv += ["--ga-weeks", repr(float(self.ga_weeks))]
        if not self.biometry:
            argv.append("--no-biometry")
        if self.tta is not None:
            argv.append("--tta" if self.tta else "--no-tta")
        if self.tile_size is not None:
            argv += ["--tile-size", str(self.tile_size)]
        if not self.qc:
            argv.append("--no-qc")
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        return [*argv, "--progress", self.progress.value]

    def inference_options(self) -> InferenceOptions:
        """How to run the model on each image."""
        return InferenceOptions(tta=self.tta, tile_size=self.tile_size, biometry=self.biometry, ga_weeks=self.ga_weeks)
