"""Training data: cases from image/label pairs, HC18, PSFHS or phantoms, preprocessed exactly as the inference
engine does (``FetalHeadSegLib.inference.preprocessing``), split by subject, cached in one compact ``.npz`` file.

The cache holds each case's normalised image as uint8 (value / 255) and its label map, on the model's working
grid: a whole data set fits in tens of MB and can be carried to a remote GPU machine at once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from FetalHeadSegLib.core.errors import ConfigError, FetalHeadSegError, InputImageError
from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig, resample, to_working_grid, working_spacing

if TYPE_CHECKING:
    from FetalHeadSegLib.phantom import PhantomConfig

KINDS = ("pairs", "hc18", "psfhs", "phantom")
LABEL_SUFFIXES = ("_label", "_labels", "_head", "_mask", "_seg")


@dataclass(frozen=True)
class DataConfig:
    """Where the training cases come from.

    Attributes:
        kind: ``pairs`` (a folder of ``<case>_image.<ext>`` + ``<case>_label.<ext>`` files, or ``list_file``),
            ``hc18``, ``psfhs`` or ``phantom``.
        root: folder of the data set (not for phantoms).
        list_file: for ``pairs``: CSV or JSON list with ``image``, ``label`` and optional ``subject``,
            ``spacing_mm`` per case (paths relative to the list file).
        head_labels: label values merged into the head (pairs, phantom); empty keeps the labels as they are.
        validation_fraction: share of subjects held out for validation.
        split_seed: seed of the subject split.
        max_cases: use only the first N cases (after sorting), for quick runs.
        phantom: settings of generated cases: ``count`` and first ``seed``; ``dimension``; ``size`` (one grid) or
            ``sizes`` (case with seed s gets ``sizes[s % len(sizes)]``); and ``ga_weeks_range``,
            ``head_fill_range``, ``elevation_ratio_range``, ``appearance`` (``classic`` or ``randomised``) and
            ``factors`` (fixed or narrowed randomisation factors) as in :class:`FetalHeadSegLib.phantom.PhantomConfig`;
            ``classic_fraction``: with ``appearance`` randomised, this share of the seeds (drawn per seed) keeps the
            classic appearance instead, so a model learns the randomised world without forgetting the classic one;
            ``joint``: ``{"fraction": f, "families": [...], "ends": e}``: this share of the randomised seeds (drawn
            per seed) moves the numeric factors of one of the named families (drawn per seed) together, at a point
            within the outer ``e`` of the family's shared axis at either end
            (:func:`FetalHeadSegLib.phantom.appearance.joint_family_factors`): the family's corners (every gain knob
            dark at once), which independent draws almost never reach;
            ``image_space_fraction``: this share of the seeds (drawn per seed, volumes only) comes from the second,
            image-space generator (:mod:`FetalHeadSegLib.phantom.image_space`: egg-shaped heads, speckle along the
            image axes, shadows along one axis) on the case's grid size instead, so a model meets two simulators'
            looks and learns the head rather than one simulator;
            ``truth``: ``whole`` (default: the whole analytic head) or ``visible`` (the head within the imaged field
            of view: what a network can see, and what an annotator would draw on a cut or cropped volume).
        cache: path of the preprocessed cache; built when missing, reused when present.
        workers: processes that load, generate and preprocess the cases before training (a many-core GPU machine
            builds its phantoms in a fraction of the time); the arrays are the same whatever the number, since every
            random draw is keyed by the case.
    """

    kind: str = "pairs"
    root: str | None = None
    list_file: str | None = None
    head_labels: tuple[int, ...] = ()
    validation_fraction: float = 0.2
    split_seed: int = 0
    max_cases: int | None = None
    phantom: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"data.workers must be at least 1, got {self.workers}")
        if self.kind not in KINDS:
            raise ConfigError(f"data.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "phantom" and not (self.root or self.list_file):
            raise ConfigError(f"data.kind {self.kind!r} needs data.root (or data.list_file)")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError("data.validation_fraction must lie between 0 and 1")
        if self.kind == "phantom":
            if self.phantom.get("truth", "whole") not in ("whole", "visible"):
                raise ConfigError(f"data.phantom.truth must be whole or visible, got {self.phantom['truth']!r}")
            for seed in range(len(self.phantom.get("sizes") or [None])):
                phantom_config(self.phantom, seed)  # every grid checked before any case is generated
            draws_image_space(self.phantom, 0)  # the share checked too

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        values = dict(data)
        if "head_labels" in values:
            values["head_labels"] = tuple(int(v) for v in values["head_labels"])
        return cls(**values)


@dataclass(frozen=True)
class Case:
    """One training case before loading."""

    case_id: str
    subject: str
    image: Path | None = None
    label: Path | None = None
    spacing_mm: float | None = None
    seed: int | None = None  # phantoms


@dataclass
class CaseArrays:
    """Preprocessed cases: images (uint8, value/255), labels (uint8), each (X, Y, Z) on the working grid."""

    case_ids: list[str]
    subjects: list[str]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    spacings: list[tuple[float, float, float]]

    def __len__(self) -> int:
        return len(self.case_ids)

    def append(self, case: Case, image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float]) -> None:
        self.case_ids.append(case.case_id)
        self.subjects.append(case.subject)
        self.images.append(image)
        self.labels.append(label)
        self.spacings.append(spacing)

    def subset(self, indices: list[int]) -> CaseArrays:
        return CaseArrays(
            [self.case_ids[i] for i in indices],
            [self.subjects[i] for i in indices],
            [self.images[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.spacings[i] for i in indices],
        )

    def image_float(self, index: int) -> np.ndarray:
        return np.asarray(self.images[index], dtype=np.float32) / 255.0

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            "case_ids": np.asarray(self.case_ids),
            "subjects": np.asarray(self.subjects),
            "spacings": np.asarray(self.spacings, dtype=np.float64),
        }
        for index, (image, label) in enumerate(zip(self.images, self.labels, strict=True)):
            arrays[f"image_{index}"], arrays[f"label_{index}"] = image, label
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial.npz")
        np.savez_compressed(staging, **arrays)
        staging.replace(path)

    @classmethod
    def load(cls, path: Path) -> CaseArrays:
        with np.load(path) as data:
            count = len(data["case_ids"])
            return cls(
                [str(c) for c in data["case_ids"]],
                [str(s) for s in data["subjects"]],
                [data[f"image_{i}"] for i in range(count)],
                [data[f"label_{i}"] for i in range(count)],
                [(float(s[0]), float(s[1]), float(s[2])) for s in data["spacings"]],
            )


def find_cases(config: DataConfig) -> list[Case]:
    """The cases the config names, sorted; checks that every file exists before any training starts.

    Raises:
        ConfigError: a file is missing or the data set is empty.
    """
    if config.kind == "phantom":
        count = int(config.phantom.get("count", 100))
        first = int(config.phantom.get("seed", 0))
        cases = [Case(f"phantom_{first + i:06d}", f"phantom_{first + i:06d}", seed=first + i) for i in range(count)]
    elif config.kind == "hc18":
        cases = _hc18_cases(Path(config.root or ""))
    elif config.kind == "psfhs":
        root = Path(config.root or "")
        images = sorted((root / "image_mha").glob("*.mha"))
        cases = [Case(p.stem, p.stem, p, root / "label_mha" / p.name) for p in images]
    else:
        cases = _pair_cases(config)
    if config.max_cases is not None:
        cases = cases[: config.max_cases]
    if not cases:
        raise ConfigError(f"no training cases found for data.kind {config.kind!r} in {config.root or config.list_file}")
    missing = [str(p) for c in cases for p in (c.image, c.label) if p is not None and not p.exists()]
    if missing:
        raise ConfigError(f"{len(missing)} data files are missing, e.g. {missing[0]}")
    return cases


def _hc18_cases(root: Path) -> list[Case]:
    from FetalHeadSegLib.measure.hc18 import read_pixel_size_csv, subject_id

    csv_file = root / "subset_pixel_size_and_HC.csv"
    if not csv_file.exists():
        csv_file = root / "training_set_pixel_size_and_HC.csv"
    table = read_pixel_size_csv(csv_file)
    cases = []
    for name in sorted(table):
        image = root / "training_set" / name
        if image.exists():
            annotation = image.with_name(name.replace(".png", "_Annotation.png"))
            cases.append(Case(Path(name).stem, subject_id(name), image, annotation, table[name].pixel_size_mm))
    return cases


def _pair_cases(config: DataConfig) -> list[Case]:
    if config.list_file:
        list_path = Path(config.list_file)
        base = list_path.parent
        if list_path.suffix.lower() == ".json":
            rows = json.loads(list_path.read_text())
        else:
            with list_path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
        return [
            Case(
                str(row.get("case_id") or Path(row["image"]).name.split(".")[0]),
                str(row.get("subject") or row.get("case_id") or Path(row["image"]).name.split(".")[0]),
                base / row["image"],
                base / row["label"],
                float(row["spacing_mm"]) if row.get("spacing_mm") else None,
            )
            for row in rows
        ]
    from FetalHeadSegLib.core.io import SUPPORTED_SUFFIXES, image_suffix

    root = Path(config.root or "")
    cases = []
    for image in sorted(p for p in root.iterdir() if p.name.lower().endswith(SUPPORTED_SUFFIXES)):
        stem = image.name[: -len(image_suffix(image))]
        if not stem.endswith("_image"):
            continue
        case_id = stem[: -len("_image")]
        labels = [p for suffix in LABEL_SUFFIXES for p in image.parent.glob(f"{case_id}{suffix}.*")]
        if not labels:
            raise ConfigError(f"{image}: no label file {case_id}_label.<ext> beside it")
        cases.append(Case(case_id, case_id, image, labels[0]))
    return cases


def split_by_subject(subjects: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation cases; every case of a subject lands on the same side."""
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    count = max(1, int(round(fraction * len(unique))))
    held_out = {unique[i] for i in order[:count]}
    train = [i for i, s in enumerate(subjects) if s not in held_out]
    validation = [i for i, s in enumerate(subjects) if s in held_out]
    return train, validation


def split_case_ids(config: DataConfig) -> tuple[list[str], list[str]]:
    """Case ids of the training and validation parts as ``training.train`` splits them, from the file list alone.

    Raises:
        ConfigError: as :func:`find_cases`.
    """
    cases = find_cases(config)
    train, validation = split_by_subject([c.subject for c in cases], config.validation_fraction, config.split_seed)
    return [cases[i].case_id for i in train], [cases[i].case_id for i in validation]


CLASSIC_STREAM = 0xC1A55
"""Random stream of the per-seed classic-or-randomised draw (``phantom.classic_fraction``)."""
JOINT_STREAM = 0x10147
"""Random stream of the per-seed joint draw of one factor family (``phantom.joint``)."""
IMAGE_SPACE_STREAM = 0x1A6E5
"""Random stream of the per-seed choice of the image-space generator (``phantom.image_space_fraction``)."""


def _in_share(settings: dict[str, Any], key: str, seed: int, stream: int) -> bool:
    """Whether the case with ``seed`` falls in the share ``settings[key]`` (0 when absent) of the phantom cases,
    drawn per seed from its own random stream.

    Raises:
        ConfigError: a share that is not a number within 0-1.
    """
    fraction = settings.get(key, 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"data.phantom.{key} must lie between 0 and 1, got {fraction!r}")
    return bool(fraction) and bool(np.random.default_rng([seed, stream]).random() < fraction)


def draws_image_space(settings: dict[str, Any], seed: int) -> bool:
    """Whether the phantom case with ``seed`` comes from the image-space generator (``image_space_fraction``).

    Raises:
        ConfigError: a share outside 0-1, or one given for 2D frames (the generator draws volumes).
    """
    if settings.get("image_space_fraction") and int(settings.get("dimension", 3)) != 3:
        raise ConfigError("data.phantom.image_space_fraction is for volumes (dimension 3) only")
    return _in_share(settings, "image_space_fraction", seed, IMAGE_SPACE_STREAM)


def phantom_config(settings: dict[str, Any], seed: int) -> PhantomConfig:
    """The generator config of the phantom case with ``seed`` under the data config's ``phantom`` settings.

    Raises:
        ConfigError: settings the generator refuses.
    """
    from FetalHeadSegLib.phantom import PhantomConfig

    sizes = settings.get("sizes") or [settings.get("size", (96, 96, 96))]
    record = {"dimension": int(settings.get("dimension", 3)), "size": sizes[seed % len(sizes)]}
    for key in ("ga_weeks_range", "head_fill_range", "elevation_ratio_range", "appearance", "factors"):
        if key in settings:
            record[key] = settings[key]
    if _in_share(settings, "classic_fraction", seed, CLASSIC_STREAM):
        record["appearance"] = "classic"
        record.pop("factors", None)
    elif settings.get("joint") and record.get("appearance") == "randomised":
        record["factors"] = {**record.get("factors", {}), **_joint_draw(settings["joint"], record.get("factors"), seed)}
    try:
        return PhantomConfig.from_dict(record)
    except (ValueError, TypeError, IndexError) as err:
        raise ConfigError(f"invalid data.phantom settings: {err}") from err


def _joint_draw(joint: dict[str, Any], factors: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """The fixed factors of the seed's joint family draw under ``phantom.joint`` (empty when it draws none)."""
    from FetalHeadSegLib.phantom.appearance import joint_family_factors

    fraction, families, ends = joint.get("fraction", 0.0), joint.get("families"), joint.get("ends", 0.5)
    numbers = all(isinstance(value, int | float) for value in (fraction, ends))
    if not (numbers and 0.0 <= fraction <= 1.0 and 0.0 < ends <= 0.5 and isinstance(families, list) and families):
        raise ConfigError(
            "data.phantom.joint needs fraction within 0-1, a non-empty list of families and ends within (0, 0.5], "
            f"got {joint}"
        )
    rng = np.random.default_rng([seed, JOINT_STREAM])
    drawn, family, u = rng.random(), families[int(rng.integers(len(families)))], ends * rng.random()
    if drawn >= fraction:
        return {}
    try:
        return joint_family_factors(family, u if rng.random() < 0.5 else 1.0 - u, factors)
    except ValueError as err:
        raise ConfigError(f"invalid data.phantom.joint: {err}") from err


def load_case(case: Case, config: DataConfig, preprocessing: PreprocessingConfig) -> tuple[Image, Image]:
    """The case's image and label map on their original grid (before preprocessing).

    Raises:
        InputImageError: unreadable files, or image and label on different grids.
    """
    from FetalHeadSegLib.core.io import read_image

    if case.seed is not None:
        from FetalHeadSegLib.phantom import generate_phantom
        from FetalHeadSegLib.phantom.image_space import generate_image_space

        generator_config = phantom_config(config.phantom, case.seed)
        field_of_view: Image | None
        if draws_image_space(config.phantom, case.seed):
            size = generator_config.size
            drawn = generate_image_space(case.seed, size=(size[0], size[1], size[2]))
            image, head, field_of_view = drawn.image, drawn.head_mask, drawn.field_of_view
        else:
            phantom = generate_phantom(generator_config, case.seed)
            image, head, field_of_view = phantom.image, phantom.head_mask, phantom.field_of_view
        if config.phantom.get("truth", "whole") == "visible" and field_of_view is not None:
            head = head.with_array(head.array * (field_of_view.array > 0).astype(head.array.dtype))
        return image, head
    assert case.image is not None and case.label is not None
    image = read_image(case.image, spacing_mm=case.spacing_mm)
    if config.kind == "hc18":
        from FetalHeadSegLib.measure.hc18 import ellipse_from_outline, rasterize_ellipse

        outline = read_image(case.label, spacing_mm=case.spacing_mm)
        filled = rasterize_ellipse(ellipse_from_outline(outline.array[:, :, 0]), outline.shape[:2])
        label = outline.with_array(filled[:, :, np.newaxis].astype(np.uint8))
    else:
        label = read_image(case.label, spacing_mm=case.spacing_mm)
    if label.shape != image.shape or not np.allclose(label.ijk_to_ras, image.ijk_to_ras, atol=1e-3):
        raise InputImageError(f"{case.label}: label grid {label.shape} differs from the image's {image.shape}")
    if config.head_labels:
        label = label.with_array(np.isin(label.array, config.head_labels).astype(np.uint8))
    return image, label


def is_headless_phantom(case: Case, label: Image) -> bool:
    """Whether ``case`` is a phantom whose training truth is empty (with ``truth: visible``, a head drawn wholly
    outside the field of view); such draws are skipped, with a log line (:func:`headless_message`). An empty label
    map of real data is an error of the data set instead (``training.train.check_labels``)."""
    return case.seed is not None and not label.array.any()


def load_trainable_case(
    case: Case, config: DataConfig, preprocessing: PreprocessingConfig
) -> tuple[Image, Image] | None:
    """:func:`load_case`, or None for a phantom with no head to learn (:func:`is_headless_phantom`).

    Raises:
        ConfigError: the case cannot be loaded (naming it).
    """
    try:
        image, label = load_case(case, config, preprocessing)
    except FetalHeadSegError as err:
        raise ConfigError(f"case {case.case_id}: {err}") from err
    return None if is_headless_phantom(case, label) else (image, label)


def headless_message(case: Case) -> str:
    return f"case {case.case_id}: no head within the field of view; skipped"


def preprocess_case(
    image: Image, label: Image, preprocessing: PreprocessingConfig
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Image (uint8: the 256 input levels x 255) and label on the working grid: the inference engine's own
    ``to_working_grid``, so the cache holds exactly what the networks see at inference."""
    working = to_working_grid(image, preprocessing)
    spacing = working_spacing(image, preprocessing)
    if spacing is not None:
        label = resample(label, spacing, linear=False)
    return (np.rint(working.array * 255.0).astype(np.uint8), label.array.astype(np.uint8), working.spacing_mm)


def build_arrays(config: DataConfig, preprocessing: PreprocessingConfig, log: Any = print) -> CaseArrays:
    """Load and preprocess every case (or read the cache when it exists, and write it when configured)."""
    if config.cache and Path(config.cache).exists():
        log(f"reading the preprocessed cache {config.cache}")
        return CaseArrays.load(Path(config.cache))
    cases = find_cases(config)
    arrays = CaseArrays([], [], [], [], [])
    jobs = [(config, preprocessing, case) for case in cases]
    for number, (case, prepared) in enumerate(map_cases(_prepare_case, jobs, config.workers), start=1):
        if prepared is None:
            log(headless_message(case))
        else:
            arrays.append(case, *prepared)
        if number % max(1, len(cases) // 10) == 0:
            log(f"preprocessed {number}/{len(cases)} cases")
    if config.cache:
        arrays.save(Path(config.cache))
        log(f"wrote the preprocessed cache {config.cache} ({Path(config.cache).stat().st_size / 1e6:.1f} MB)")
    return arrays


def _prepare_case(
    job: tuple[DataConfig, PreprocessingConfig, Case],
) -> tuple[Case, tuple[np.ndarray, np.ndarray, tuple[float, float, float]] | None]:
    """A case on the working grid (None: a phantom with no head to learn); runs in a worker."""
    config, preprocessing, case = job
    loaded = load_trainable_case(case, config, preprocessing)
    if loaded is None:
        return case, None
    values, labels, spacing = preprocess_case(*loaded, preprocessing)
    return case, (values, labels, (float(spacing[0]), float(spacing[1]), float(spacing[2])))


Job = TypeVar("Job")
Prepared = TypeVar("Prepared")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def map_cases(function: Callable[[Job], Prepared], jobs: Iterable[Job], workers: int) -> Iterator[Prepared]:
    """``function`` over ``jobs``, results in order: in this process (``workers`` 1) or in that many spawned ones,
    each computing on one thread (``function`` must be a module-level function, its jobs picklable)."""
    if workers == 1:
        yield from map(function, jobs)
        return
    with (
        _one_thread_per_child(),
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread) as pool,
    ):
        yield from pool.map(function, jobs, chunksize=4)


@contextlib.contextmanager
def _one_thread_per_child() -> Iterator[None]:
    """Processes started within start with one BLAS and OpenMP thread each: numpy's BLAS reads these variables when
    it loads, before a pool's initializer runs, and N workers with N threads each crowd N cores (on a 16-core GPU
    machine 60 phantoms took 44 s with the default threads, 19 s with one)."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _one_thread() -> None:
    """A worker computes on one thread (PyTorch's and ITK's): the workers share the cores."""
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def fit_to(array: np.ndarray, shape: tuple[int, ...], offset: tuple[int, ...]) -> np.ndarray:
    """Crop (at ``offset``) or zero-pad (centred) the last three axes of ``array`` to ``shape``."""
    result = array
    for axis, size in enumerate(shape):
        axis_index = array.ndim - 3 + axis
        current = result.shape[axis_index]
        if current > size:
            result = np.take(result, range(offset[axis], offset[axis] + size), axis=axis_index)
        elif current < size:
            before = (size - current) // 2
            pad = [(0, 0)] * result.ndim
            pad[axis_index] = (before, size - current - before)
            result = np.pad(result, pad)
    return result


def padded_shape(shape: tuple[int, ...], multiple: int, is_2d: bool) -> tuple[int, int, int]:
    """The smallest (X, Y, Z) at least ``shape`` whose spatial axes are multiples of ``multiple``."""
    out = [int(math.ceil(n / multiple)) * multiple for n in shape]
    if is_2d:
        out[2] = 1
    return out[0], out[1], out[2]
