"""Where each case of a cohort writes its outputs, so that nothing a user has can be lost.

- Each input gets its own place: the output folder mirrors the input's folder relative to the common root of
  all inputs, so ``cohort/p1/image.nii.gz`` and ``cohort/p2/image.nii.gz`` land in ``OUT/p1/`` and ``OUT/p2/``.
  Two inputs that would still share a stem (``scan.nii.gz`` and ``scan.nrrd`` in one folder) get their full
  file name as the stem.
- No output may be an input file: that case is refused before anything runs.
- Outputs that exist already are refused, replaced (``overwrite``) or, when the case is complete, kept and the
  case skipped (``skip``). A case is complete when its biometry JSON exists: it is moved into place last.
- Walking a folder skips the files this tool writes, so a re-run into the input folder never segments its own
  label maps or QC pictures.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from FetalHeadSegLib.core.errors import InputImageError, OutputError

LABEL_SUFFIXES = {"seg.nrrd": ".seg.nrrd", "nii.gz": "_seg.nii.gz"}
"""Label-map file name endings by ``--format``: never the plain ``.nii.gz`` an input scan has."""
MARKUP_NAMES = ("BPD", "OFD", "HC", "plane", "AoP")
PER_CASE_SUFFIXES = (
    *LABEL_SUFFIXES.values(),
    "_biometry.json",
    "_qc.png",
    "_uncertainty.nii.gz",
    *(f"_{name}.mrk.json" for name in MARKUP_NAMES),
)
SUMMARY_NAME = "summary.csv"
FRAME_GLOB = "_frame[0-9][0-9][0-9][0-9]"
"""What follows a case's stem in its cine frames' names (``<stem>_frame0003``)."""


class ExistingOutputs(StrEnum):
    """What to do when a case's outputs exist already."""

    REFUSE = "refuse"
    OVERWRITE = "overwrite"
    SKIP = "skip"
    """Keep complete cases as they are; redo incomplete ones (an interrupted run resumes)."""


def is_tool_output(path: Path) -> bool:
    """True for file names this tool writes (label maps, QC pictures, markups, JSON, uncertainty maps)."""
    name = path.name.lower()
    return name.endswith(tuple(suffix.lower() for suffix in PER_CASE_SUFFIXES))


def image_stem(path: Path) -> str:
    """The file name without its image suffix (``case.nii.gz`` -> ``case``)."""
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named, images inside named folders (sorted, without this tool's outputs), and glob matches.

    Folders also yield DICOM files without a suffix (``IM_0001``: the DICM marker tells them).

    A file named explicitly is always taken; folders and globs leave out what :func:`is_tool_output` recognises.

    Raises:
        InputImageError: nothing was found.
    """
    from FetalHeadSegLib.core.io import SUPPORTED_SUFFIXES, is_dicom_path

    def wanted(path: Path) -> bool:
        if not path.is_file() or is_tool_output(path) or path.name.startswith("."):
            return False
        return path.name.lower().endswith(SUPPORTED_SUFFIXES) or ("." not in path.name and is_dicom_path(path))

    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if wanted(p))
        elif any(ch in pattern for ch in "*?[") and not path.exists():
            found += sorted(p for p in map(Path, glob.glob(pattern)) if wanted(p))
        else:
            found.append(path)
    unique: dict[Path, None] = dict.fromkeys(found)
    if not unique:
        raise InputImageError(f"no input images found in {' '.join(patterns)}")
    return list(unique)


@dataclass(frozen=True)
class Case:
    """One input and the place of its outputs.

    Attributes:
        input: the input file.
        directory: the folder its outputs go to.
        stem: the start of every output file name.
    """

    input: Path
    directory: Path
    stem: str

    @property
    def marker(self) -> Path:
        """The biometry JSON: written last, so its presence means the case is complete."""
        return self.directory / f"{self.stem}_biometry.json"

    def output_paths(self) -> list[Path]:
        """Every file name this case may write."""
        return [self.directory / f"{self.stem}{suffix}" for suffix in PER_CASE_SUFFIXES]

    def existing_outputs(self) -> list[Path]:
        """The outputs of this case, and of its cine frames, that exist now."""
        frames = sorted(self.directory.glob(f"{self.stem}{FRAME_GLOB}_*"))
        return [*(path for path in self.output_paths() if path.exists()), *frames]

    def completion_markers(self) -> list[Path]:
        """The biometry JSON files of this case: its own, or one per cine frame."""
        frames = sorted(self.directory.glob(f"{self.stem}{FRAME_GLOB}_biometry.json"))
        return ([self.marker] if self.is_complete() else []) + frames

    def is_complete(self) -> bool:
        return self.marker.is_file()

    def with_frame(self, frame: int) -> Case:
        """The case of one frame of a cine (``<stem>_frame0003``)."""
        return Case(self.input, self.directory, f"{self.stem}_frame{frame:04d}")


def plan_cases(inputs: list[Path], output_dir: Path) -> list[Case]:
    """The output place of every input (see the module docstring).

    Raises:
        OutputError: an output would be one of the inputs.
    """
    parents = [path.resolve().parent for path in inputs]
    root = Path(os.path.commonpath(parents)) if parents else Path()
    cases = [
        Case(path, output_dir / parent.relative_to(root), image_stem(path))
        for path, parent in zip(inputs, parents, strict=True)
    ]
    counts = Counter((case.directory, case.stem) for case in cases)
    cases = [
        Case(case.input, case.directory, case.input.name.replace(".", "_"))
        if counts[(case.directory, case.stem)] > 1
        else case
        for case in cases
    ]
    resolved_inputs = {path.resolve() for path in inputs}
    for case in cases:
        clash = next((p for p in case.output_paths() if p.resolve() in resolved_inputs), None)
        if clash is not None:
            raise OutputError(f"{clash}: is an input; its outputs would overwrite it (choose another --output)")
    return cases


def existing_outputs_error(case: Case) -> OutputError:
    """The error for a case whose outputs exist and may not be replaced."""
    names = ", ".join(path.name for path in case.existing_outputs()[:3])
    return OutputError(
        f"{case.directory}: outputs of {case.input.name} exist already ({names}); "
        "use --skip-existing to keep them (and resume) or --overwrite to replace them"
    )
