"""Training data of a coarse-to-fine cascade's finer levels (``cascade.mode: roi``).

Each case is cropped around its true foreground with a margin drawn per side (0.5-1.5 times the bundle's margin,
plus however far the drawn context overshoots the head), as an imperfect level 1 would place the box, and brought
onto the level's working grid by the inference engine's own ``to_working_grid``. Its context channel is what a
coarse level's probability looks like on cases it has not seen (:func:`coarse_context`): the true head grown or
shrunk by up to a few coarse voxels with a wavy boundary, soft at the coarse resolution, scaled, sometimes with
false blobs beside it, lacking a cap of the head beyond a plane (``roi_context.cut``) or nearly empty. A finer level
trained on clean truth contexts follows a coarse level that over-segments; this one learns to take the boundary from
the image. Every draw is keyed by (seed, level, case), so the arrays are the same in every run and process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig, resample_like, to_working_grid, working_spacing
from FetalHeadSegLib.inference.roi import crop, foreground_box, whole_box
from training.config import ContextDrawConfig, TrainConfig
from training.data import (
    Case,
    CaseArrays,
    find_cases,
    headless_message,
    load_trainable_case,
    map_cases,
    preprocess_case,
)

MARGIN_DRAW = (0.5, 1.5)
"""Each side's margin is the bundle's margin times a factor drawn from this range."""


def roi_case(
    image: Image,
    label: Image,
    level: PreprocessingConfig,
    coarse: PreprocessingConfig,
    margin_mm: float,
    rng: np.random.Generator,
    draw: ContextDrawConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], np.ndarray]:
    """One case on a finer level's grid: image values (uint8, the 256 input levels), labels, spacing and the
    context channel (uint8, value / 255), the context drawn as ``draw`` says."""
    draw = draw or ContextDrawConfig()
    foreground = label.with_array((label.array > 0).astype(np.uint8))
    coarse_step_mm = float(np.max((working_spacing(image, coarse) or image.spacing_mm)[0]))
    offset_mm, attached_radii_mm = draw_misplacement(equivalent_radius_mm(foreground), coarse_step_mm, rng, draw)
    # the box of a coarse level that overshoots is larger by as much: the margins grow with the overshoot
    overshoot_mm = max(offset_mm, 2.0 * float(attached_radii_mm.max(initial=0.0)), 0.0)
    low, high = (margin_mm * rng.uniform(*MARGIN_DRAW, size=3) + overshoot_mm for _ in range(2))
    box = foreground_box(foreground, margin_mm, margin_high_mm=high, margin_low_mm=low) or whole_box(image)
    region, region_label = crop(image, box), crop(label, box)
    working = to_working_grid(region, level)
    labels = resample_like(region_label, working, linear=False).array.astype(np.uint8)
    context = coarse_context(labels > 0, working.spacing_mm, coarse_step_mm, offset_mm, rng, draw, attached_radii_mm)
    values = np.rint(working.array * 255.0).astype(np.uint8)
    spacing = working.spacing_mm
    return values, labels, (spacing[0], spacing[1], spacing[2]), np.rint(context * 255).astype(np.uint8)


class ContextRedraw:
    """Fresh training contexts for a two-level cascade's level 2 (``roi_context.redraw``): case ``index`` of its
    crops gets a new context for every sample, drawn from its labels on the crop's grid as :func:`roi_case` draws
    the cached one (offset, wave, softness, blobs), at the coarse voxel size of the same case's level 1 grid.

    The head's signed distance, which every draw of a case starts from and which costs more than half a draw
    (two distance transforms), is computed once per case here, in ``workers`` processes, and kept as float16
    (0.06 mm steps at 100 mm, far below the softest edge drawn).

    Args:
        crops: level 2's cases.
        coarse: level 1's cases (whole images), by the same case ids.
        draw: how contexts are drawn.
        workers: processes computing the signed distances (``data.workers``).
    """

    def __init__(self, crops: CaseArrays, coarse: CaseArrays, draw: ContextDrawConfig, workers: int = 1) -> None:
        steps = zip(coarse.case_ids, coarse.spacings, strict=True)
        coarse_step_mm = {case_id: float(spacing[0]) for case_id, spacing in steps}
        self.crops, self.draw = crops, draw
        self.coarse_step_mm = [coarse_step_mm[case_id] for case_id in crops.case_ids]
        self.head_radius_mm = [
            equivalent_radius_mm(Image(labels, make_ijk_to_ras(spacing)))
            for labels, spacing in zip(crops.labels, crops.spacings, strict=True)
        ]
        jobs = list(zip(crops.labels, crops.spacings, strict=True))
        self.signed_mm = list(map_cases(_stored_signed_distance, jobs, workers))

    def __call__(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Case ``index``'s context (uint8, value / 255) drawn with ``rng``."""
        step_mm = self.coarse_step_mm[index]
        offset_mm, radii_mm = draw_misplacement(self.head_radius_mm[index], step_mm, rng, self.draw)
        head, spacing_mm = self.crops.labels[index] > 0, self.crops.spacings[index]
        signed_mm = self.signed_mm[index]  # float16: the draw's float64 arithmetic promotes it
        context = coarse_context(head, spacing_mm, step_mm, offset_mm, rng, self.draw, radii_mm, signed_mm)
        return np.rint(context * 255).astype(np.uint8)


def _stored_signed_distance(job: tuple[np.ndarray, tuple[float, float, float]]) -> np.ndarray:
    """A crop's head signed distance (mm, float16) as :func:`coarse_context` reads it; runs in a worker."""
    labels, spacing_mm = job
    return signed_distance_mm(*_in_plane(labels > 0, spacing_mm)).astype(np.float16)


def draw_misplacement(
    head_radius_mm: float, coarse_step_mm: float, rng: np.random.Generator, draw: ContextDrawConfig
) -> tuple[float, np.ndarray]:
    """How far a drawn context's boundary lies outside the true one (mm) and the radii (mm) of the blobs attached
    to it, each 10-50 % of the head's equivalent radius."""
    offset_mm = rng.uniform(*draw.offset) * coarse_step_mm
    attached = int(rng.integers(0, draw.attached_blobs + 1))
    return offset_mm, head_radius_mm * rng.uniform(0.1, 0.5, attached)


def equivalent_radius_mm(foreground: Image) -> float:
    """The radius of the disc (2D) or ball (3D) with the foreground's area or volume."""
    mask = foreground.array[:, :, 0] if foreground.is_2d else foreground.array
    return _equivalent_radius_mm(mask != 0, np.asarray(foreground.spacing_mm[: mask.ndim]))


def _equivalent_radius_mm(mask: np.ndarray, sampling: np.ndarray) -> float:
    """The radius of the disc (2D mask) or ball (3D) with the mask's area or volume (``sampling`` mm per axis)."""
    size = float(np.count_nonzero(mask)) * float(np.prod(sampling))
    return float(np.sqrt(size / np.pi)) if mask.ndim == 2 else float(np.cbrt(size * 3.0 / (4.0 * np.pi)))


def coarse_context(
    foreground: np.ndarray,
    spacing_mm: tuple[float, ...],
    coarse_step_mm: float,
    offset_mm: float,
    rng: np.random.Generator,
    draw: ContextDrawConfig | None = None,
    attached_radii_mm: Sequence[float] | np.ndarray = (),
    signed_mm: np.ndarray | None = None,
) -> np.ndarray:
    """A coarse level's foreground probability (0-1) as it looks on a case it has not seen, drawn from the truth.

    The boundary is the true one moved outwards by ``offset_mm`` plus a smooth random wave, with a logistic edge
    as soft as the coarse grid; blobs of ``attached_radii_mm`` sit on the true boundary (what the coarse level
    took for head beside it), false blobs may lie anywhere, a cap of the head may be cut away beyond a plane, the
    whole map is scaled, and in a few cases it is nearly empty (``draw``). A 2D image (one slice) is treated
    in-plane. ``signed_mm``: the foreground's :func:`signed_distance_mm` (in-plane for a 2D image), when the caller
    keeps it between draws.
    """
    from scipy.ndimage import gaussian_filter

    draw = draw or ContextDrawConfig()
    planar = foreground.shape[2] == 1
    mask, sampling = _in_plane(foreground, spacing_mm)
    if not mask.any():
        return np.zeros(foreground.shape, np.float32)
    if signed_mm is None:
        signed_mm = signed_distance_mm(mask, sampling)
    wave = gaussian_filter(rng.standard_normal(mask.shape), 2.0 * coarse_step_mm / sampling)
    wave *= rng.uniform(*draw.wave) * coarse_step_mm / max(float(wave.std()), 1e-6)
    softness_mm = rng.uniform(*draw.softness) * coarse_step_mm
    probability = _soft_inside(signed_mm + wave - offset_mm, softness_mm)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(mask.shape, sampling, strict=True)], indexing="ij"))
    if draw.cut > 0.0 and rng.random() < draw.cut:
        probability *= _cap_cut(mask, grid, sampling, softness_mm, rng, draw.cut_plane)
    boundary = np.argwhere(mask & (signed_mm >= -float(sampling.max())))
    for radius_mm in attached_radii_mm:
        distance_mm = np.sqrt(_squared_distance_mm(grid, boundary[rng.integers(len(boundary))] * sampling))
        probability = np.maximum(probability, _soft_inside(distance_mm - radius_mm, softness_mm))
    extent_mm = np.asarray(mask.shape) * sampling
    for _ in range(int(rng.integers(0, draw.blobs + 1))):
        distance2 = _squared_distance_mm(grid, rng.uniform(0.0, 1.0, size=mask.ndim) * extent_mm)
        radius_mm = rng.uniform(0.05, 0.2) * float(extent_mm.max())
        probability = np.maximum(probability, rng.uniform(0.3, 1.0) * np.exp(-distance2 / (2.0 * radius_mm**2)))
    probability *= rng.uniform(*draw.scale)
    if rng.random() < draw.missed:
        probability *= rng.uniform(0.0, 0.3)
    out = np.clip(probability, 0.0, 1.0).astype(np.float32)
    return out[:, :, np.newaxis] if planar else out


def _in_plane(foreground: np.ndarray, spacing_mm: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The mask and its voxel size in mm, in-plane for a 2D image (one slice)."""
    if foreground.shape[2] == 1:
        return foreground[:, :, 0], np.asarray(spacing_mm[:2], dtype=np.float64)
    return foreground, np.asarray(spacing_mm, dtype=np.float64)


def signed_distance_mm(mask: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) of every voxel to the mask's border: positive outside, negative inside."""
    from scipy.ndimage import distance_transform_edt

    return np.asarray(
        distance_transform_edt(~mask, sampling=sampling) - distance_transform_edt(mask, sampling=sampling)
    )


def _cap_cut(
    mask: np.ndarray,
    grid_mm: np.ndarray,
    sampling: np.ndarray,
    softness_mm: float,
    rng: np.random.Generator,
    plane: tuple[float, float],
) -> np.ndarray:
    """A factor (0-1) that removes what lies beyond a plane of random orientation, drawn ``plane`` equivalent radii
    from the head's centre, with the context's logistic edge."""
    from scipy.ndimage import center_of_mass

    normal = rng.standard_normal(mask.ndim)
    normal /= max(float(np.linalg.norm(normal)), 1e-12)
    centre_mm = np.asarray(center_of_mass(mask)) * sampling
    radius_mm = _equivalent_radius_mm(mask, sampling)
    along_mm = np.tensordot(normal, grid_mm - centre_mm.reshape((-1,) + (1,) * mask.ndim), axes=1)
    beyond_mm = along_mm - rng.uniform(*plane) * radius_mm
    return _soft_inside(beyond_mm, softness_mm)


def _soft_inside(signed_mm: np.ndarray, softness_mm: float) -> np.ndarray:
    """A logistic edge: 1 well inside (negative signed distance), 0.5 on the boundary, 0 well outside."""
    return 0.5 * (1.0 - np.tanh(signed_mm / (2.0 * softness_mm)))


def _squared_distance_mm(grid_mm: np.ndarray, centre_mm: np.ndarray) -> np.ndarray:
    """Squared distance (mm^2) of every point of ``grid_mm`` (ndim, ...) to ``centre_mm``."""
    return np.asarray(sum((grid_mm[axis] - centre_mm[axis]) ** 2 for axis in range(len(centre_mm))))


def build_level_arrays(config: TrainConfig, log: Any = print) -> tuple[list[CaseArrays], list[list[np.ndarray]]]:
    """Every level's cases in one pass over the data (level 0: the whole image), and the finer levels' contexts;
    ``data.workers`` processes prepare the cases.

    Caches: ``data.cache`` for level 0 and ``<cache stem>.level<n>.npz`` for level n (context included).
    """
    caches = [_level_cache(config.data.cache, level) for level in range(config.levels)]
    if all(path is not None and path.exists() for path in caches):
        log("reading the preprocessed caches " + ", ".join(str(p) for p in caches))
        return _load(caches)  # type: ignore[arg-type]
    cases = find_cases(config.data)
    arrays = [CaseArrays([], [], [], [], []) for _ in range(config.levels)]
    contexts: list[list[np.ndarray]] = [[] for _ in range(config.levels)]
    jobs = [(config, number, case) for number, case in enumerate(cases, start=1)]
    for number, (case, levels) in enumerate(map_cases(_prepare_case, jobs, config.data.workers), start=1):
        if levels is None:
            log(headless_message(case))
        else:
            for level, (values, labels, spacing, context) in enumerate(levels):
                arrays[level].append(case, values, labels, spacing)
                if context is not None:
                    contexts[level].append(context)
        if number % max(1, len(cases) // 10) == 0:
            log(f"preprocessed {number}/{len(cases)} cases for {config.levels} levels")
    for level, path in enumerate(caches):
        if path is not None:
            arrays[level].save(path)
            if level > 0:
                np.savez_compressed(path.with_suffix(".context.npz"), *contexts[level])
    return arrays, contexts


LevelCase = tuple[np.ndarray, np.ndarray, tuple[float, float, float], np.ndarray | None]
"""One case on one level: image, label, spacing in mm and (finer levels) context."""


def _prepare_case(job: tuple[TrainConfig, int, Case]) -> tuple[Case, list[LevelCase] | None]:
    """Case ``number`` of the data on every level (None: a phantom with no head to learn); runs in a worker."""
    config, number, case = job
    cascade = config.cascade
    loaded = load_trainable_case(case, config.data, cascade.level_preprocessing[0])
    if loaded is None:
        return case, None
    image, label = loaded
    levels: list[LevelCase] = []
    for level in range(config.levels):
        context = None
        if level == 0:
            values, labels, spacing = preprocess_case(image, label, cascade.level_preprocessing[0])
        else:
            rng = np.random.default_rng([config.seed, level, number])
            values, labels, spacing, context = roi_case(
                image,
                label,
                cascade.level_preprocessing[level],
                cascade.level_preprocessing[level - 1],
                cascade.roi_margin_mm,
                rng,
                config.roi_context,
            )
        levels.append((values, labels, (float(spacing[0]), float(spacing[1]), float(spacing[2])), context))
    return case, levels


def _level_cache(cache: str | None, level: int) -> Path | None:
    if cache is None:
        return None
    path = Path(cache)
    return path if level == 0 else path.with_name(f"{path.stem}.level{level}.npz")


def _load(caches: list[Path]) -> tuple[list[CaseArrays], list[list[np.ndarray]]]:
    arrays = [CaseArrays.load(path) for path in caches]
    contexts: list[list[np.ndarray]] = [[]]
    for path in caches[1:]:
        with np.load(path.with_suffix(".context.npz")) as stored:
            contexts.append([stored[f"arr_{i}"] for i in range(len(stored.files))])
    return arrays, contexts


def select(arrays: CaseArrays, context: list[np.ndarray] | None, case_ids: list[str]) -> tuple[CaseArrays, Any]:
    """The cases named (in that order) and their contexts."""
    index = {case_id: i for i, case_id in enumerate(arrays.case_ids)}
    chosen = [index[case_id] for case_id in case_ids]
    return arrays.subset(chosen), None if context is None else [context[i] for i in chosen]
