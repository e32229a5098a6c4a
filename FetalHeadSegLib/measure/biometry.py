"""Fetal head biometry from a binary head mask: HC, BPD, OFD, cephalic index, volume, GA, size for age.

The recipe is ``biometry.md`` §1 (2D) and §3 (3D): the mask's outer border, an ellipse fitted to sub-pixel edge
points in millimetres, HC by Ramanujan's first perimeter formula, BPD and OFD outer-to-outer from the ellipse's
axes. In 3D the measurement plane is found from the mask's principal axes (or from a given left-right axis) and
the real cross-section is measured on it.

Every length is in mm, volumes in mL, points in RAS mm.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.measure.aop import AngleOfProgression
from FetalHeadSegLib.measure.ellipse import Ellipse, fit_ellipse, mask_edge_points
from FetalHeadSegLib.measure.growth import (
    GaEstimate,
    SizeForAge,
    estimate_gestational_age,
    intergrowth_2014_size_for_age,
)
from FetalHeadSegLib.measure.quality import ComponentInfo, Flag, mask_flags, measurement_flags
from FetalHeadSegLib.measure.section import PlaneGrid, plane_grid_around, principal_axes, sample_on_plane

logger = logging.getLogger(__name__)

BIOMETRY_JSON_KEYS = (
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "cephalic_index",
    "head_volume_ml",
    "ga_weeks",
    "plane",
    "landmarks",
    "flags",
    "aop_deg",
)
"""Keys every biometry JSON carries (null where not defined): the contract with scripts and the Slicer module."""

HC_POLYLINE_POINTS = 64
PLANE_SEARCH_OFFSETS = 9
"""Parallel planes tried when searching the level of maximal transverse width."""


@dataclass(frozen=True)
class MeasurementPlane:
    """The plane the head was measured on (RAS mm).

    ``method`` is ``"image_plane"`` (2D frame), ``"anatomical_left_right"`` (3D, left-right axis given) or
    ``"principal_axes"`` (3D, the two longest axes of the mask: left-right and cranio-caudal cannot be told
    apart from a mask alone).
    """

    origin_ras: np.ndarray
    normal_ras: np.ndarray
    ofd_axis_ras: np.ndarray
    lr_axis_ras: np.ndarray
    method: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin_ras": _rounded(self.origin_ras),
            "normal_ras": _rounded(self.normal_ras, 6),
            "ofd_axis_ras": _rounded(self.ofd_axis_ras, 6),
            "lr_axis_ras": _rounded(self.lr_axis_ras, 6),
            "method": self.method,
            "note": self.note,
        }


@dataclass(frozen=True)
class Landmarks:
    """Caliper end points and the HC ellipse, in RAS mm, for drawing as markups."""

    bpd_ras: np.ndarray
    ofd_ras: np.ndarray
    hc_ellipse_ras: np.ndarray
    bpd_oi_ras: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "coordinate_system": "RAS",
            "units": "mm",
            "bpd": _rounded(self.bpd_ras),
            "ofd": _rounded(self.ofd_ras),
            "hc_ellipse": _rounded(self.hc_ellipse_ras),
            "bpd_outer_inner": None if self.bpd_oi_ras is None else _rounded(self.bpd_oi_ras),
        }


@dataclass(frozen=True)
class Biometry:
    """Everything measured on one head. ``to_dict()`` gives the JSON written by the command line."""

    dimension: int
    hc_mm: float
    bpd_mm: float
    ofd_mm: float
    cephalic_index: float
    bpd_oi_mm: float | None
    head_volume_ml: float | None
    ellipse: Ellipse
    plane: MeasurementPlane
    landmarks: Landmarks
    gestational_age: dict[str, GaEstimate]
    size_for_age: dict[str, SizeForAge] | None
    flags: list[Flag]
    quality: dict[str, float | int]
    aop: AngleOfProgression | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def with_aop(self, aop: AngleOfProgression) -> Biometry:
        """A copy carrying an angle-of-progression measurement."""
        return Biometry(**{**self.__dict__, "aop": aop})

    def with_flags(self, flags: list[Flag]) -> Biometry:
        """A copy with more quality flags appended."""
        return Biometry(**{**self.__dict__, "flags": [*self.flags, *flags]})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary; numbers in mm / mL / weeks, None where not defined."""
        return {
            "dimension": self.dimension,
            "hc_mm": round(self.hc_mm, 3),
            "bpd_mm": round(self.bpd_mm, 3),
            "bpd_convention": "outer-outer",
            "bpd_outer_inner_mm": None if self.bpd_oi_mm is None else round(self.bpd_oi_mm, 3),
            "ofd_mm": round(self.ofd_mm, 3),
            "cephalic_index": round(self.cephalic_index, 2),
            "head_volume_ml": None if self.head_volume_ml is None else round(self.head_volume_ml, 3),
            "hc_method": "Ramanujan I perimeter of the ellipse fitted to the outer border",
            "ga_weeks": {key: estimate.to_dict() for key, estimate in self.gestational_age.items()},
            "size_for_ga": None
            if self.size_for_age is None
            else {key: value.to_dict() for key, value in self.size_for_age.items()},
            "aop_deg": None if self.aop is None else round(self.aop.aop_deg, 1),
            "aop": None if self.aop is None else self.aop.to_dict(),
            "plane": self.plane.to_dict(),
            "ellipse_in_plane_mm": {
                "center": _rounded(np.asarray(self.ellipse.center)),
                "semi_axes": [round(self.ellipse.semi_major, 3), round(self.ellipse.semi_minor, 3)],
                "angle_rad": round(self.ellipse.angle_rad, 6),
            },
            "landmarks": self.landmarks.to_dict(),
            "flags": [flag.to_dict() for flag in self.flags],
            "quality": self.quality,
            **self.extra,
        }


def measure_biometry(
    mask: Image,
    ga_weeks: float | None = None,
    inner_mask: npt.NDArray[Any] | None = None,
    left_right_axis_ras: npt.ArrayLike | None = None,
) -> Biometry:
    """Measure the fetal head in a binary mask (2D frame or 3D volume).

    Args:
        mask: the head mask (non-zero = head: outer skull border and everything inside) with its geometry.
        ga_weeks: gestational age if known; adds INTERGROWTH-21st z-scores and centiles for HC, BPD and OFD.
        inner_mask: optional mask of the intracranial contents (inside the skull's inner edge) on the same grid;
            adds BPD outer-to-inner, the convention Hadlock's BPD dating expects.
        left_right_axis_ras: optional left-right direction of the head (e.g. the falx normal); in 3D the
            measurement plane then contains it. Without it the plane holds the two longest principal axes.

    Returns:
        The measurements, landmarks, GA estimates and quality flags.

    Raises:
        InputImageError: the mask is empty, not finite, or has no measurable border.

    Example:
        >>> biometry = measure_biometry(read_image("head_mask.nii.gz"))  # doctest: +SKIP
        >>> biometry.hc_mm, biometry.head_volume_ml  # doctest: +SKIP
    """
    head, component_info = _clean_mask(mask.array)
    inner = None
    if inner_mask is not None:
        if inner_mask.shape != mask.shape:
            raise InputImageError(f"the inner mask's shape {inner_mask.shape} differs from the mask's {mask.shape}")
        inner = np.asarray(inner_mask) != 0
    if mask.is_2d:
        ellipse, inner_ellipse, plane, grid = _measure_frame(mask, head, inner)
        volume_ml = None
    else:
        ellipse, inner_ellipse, plane, grid = _measure_volume(mask, head, inner, left_right_axis_ras)
        volume_ml = float(head.sum()) * mask.voxel_volume_mm3 / 1000.0
    hc, bpd, ofd = ellipse.perimeter, 2.0 * ellipse.semi_minor, 2.0 * ellipse.semi_major
    bpd_oi, bpd_oi_ras = _outer_inner_bpd(ellipse, inner_ellipse, grid)
    landmarks = Landmarks(
        bpd_ras=grid.plane_to_ras(ellipse.minor_axis_endpoints()),
        ofd_ras=grid.plane_to_ras(ellipse.major_axis_endpoints()),
        hc_ellipse_ras=grid.plane_to_ras(ellipse.points(HC_POLYLINE_POINTS)),
        bpd_oi_ras=bpd_oi_ras,
    )
    size_for_age = None
    if ga_weeks is not None:
        size_for_age = {
            "hc": intergrowth_2014_size_for_age("hc", hc, ga_weeks),
            "bpd": intergrowth_2014_size_for_age("bpd", bpd, ga_weeks),
            "ofd": intergrowth_2014_size_for_age("ofd", ofd, ga_weeks),
        }
    flags = mask_flags(head, component_info, mask.is_2d)
    flags += measurement_flags(ellipse, hc)
    if plane.method == "principal_axes":
        flags.append(Flag("plane_from_principal_axes", plane.note))
    quality: dict[str, float | int] = {
        "fit_residual_rms_mm": round(ellipse.residual_rms, 4),
        "components": component_info.count,
        "largest_component_fraction": round(component_info.largest_fraction, 4),
    }
    return Biometry(
        dimension=2 if mask.is_2d else 3,
        hc_mm=hc,
        bpd_mm=bpd,
        ofd_mm=ofd,
        cephalic_index=100.0 * bpd / ofd,
        bpd_oi_mm=bpd_oi,
        head_volume_ml=volume_ml,
        ellipse=ellipse,
        plane=plane,
        landmarks=landmarks,
        gestational_age=estimate_gestational_age(hc, bpd_oo_mm=bpd, bpd_oi_mm=bpd_oi),
        size_for_age=size_for_age,
        flags=flags,
        quality=quality,
    )


def _clean_mask(array: np.ndarray) -> tuple[np.ndarray, ComponentInfo]:
    """Largest connected component with holes filled; also describe the components of the raw mask."""
    from FetalHeadSegLib.inference.postprocessing import connected_components, fill_holes

    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputImageError("the mask holds NaN or infinite values")
    binary = array != 0
    total = int(binary.sum())
    if total == 0:
        raise InputImageError("the mask is empty: no head voxels to measure")
    labelled, sizes = connected_components(binary)
    order = np.argsort(sizes)[::-1]
    head = fill_holes(labelled == order[0] + 1)  # a skull-only shell becomes a solid head
    second = float(sizes[order[1]]) / total if len(sizes) > 1 else 0.0
    return head, ComponentInfo(len(sizes), float(sizes[order[0]]) / total, second)


def _measure_frame(
    mask: Image, head: np.ndarray, inner: np.ndarray | None
) -> tuple[Ellipse, Ellipse | None, MeasurementPlane, PlaneGrid]:
    """2D: fit in the image plane, with in-plane coordinates (i * sx, j * sy) mm."""
    sx, sy, _ = mask.spacing_mm
    ellipse = fit_ellipse(mask_edge_points(head[:, :, 0], (sx, sy)))
    inner_ellipse = None
    if inner is not None and inner.any():
        inner_ellipse = fit_ellipse(mask_edge_points(inner[:, :, 0], (sx, sy)))
    direction = mask.direction_ras
    grid = PlaneGrid(mask.origin_ras, direction[:, 0], direction[:, 1], 0.0, 0.0, 1.0, head.shape[:2])
    center_ras = grid.plane_to_ras(np.asarray(ellipse.center))[0]
    plane = MeasurementPlane(
        origin_ras=center_ras,
        normal_ras=grid.normal_ras,
        ofd_axis_ras=grid.plane_to_ras(ellipse.major_direction)[0] - grid.origin_ras,
        lr_axis_ras=grid.plane_to_ras(ellipse.minor_direction)[0] - grid.origin_ras,
        method="image_plane",
        note="2D frame: measured in the image plane",
    )
    return ellipse, inner_ellipse, plane, grid


def _measure_volume(
    mask: Image, head: np.ndarray, inner: np.ndarray | None, left_right_axis_ras: npt.ArrayLike | None
) -> tuple[Ellipse, Ellipse | None, MeasurementPlane, PlaneGrid]:
    """3D: principal axes, the plane through the OFD axis at the level of maximal width, and its section."""
    cropped, offset = _crop_to_mask(mask, head)
    points = cropped.ijk_to_ras_points(np.argwhere(cropped.array > 0.5))
    axes = principal_axes(points)
    ofd_axis = axes.axes_ras[:, 0]
    if left_right_axis_ras is None:
        lr_axis = axes.axes_ras[:, 1]
        method = "principal_axes"
        note = (
            "no anatomical left-right cue: plane spanned by the two longest principal axes of the mask "
            "(left-right and cranio-caudal may be swapped)"
        )
    else:
        lr = np.asarray(left_right_axis_ras, dtype=np.float64).reshape(3)
        lr = lr - (lr @ ofd_axis) * ofd_axis
        if np.linalg.norm(lr) < 1e-6:
            raise InputImageError("the given left-right axis is parallel to the head's occipito-frontal axis")
        lr_axis = lr / np.linalg.norm(lr)
        method, note = "anatomical_left_right", "plane spanned by the occipito-frontal and the given left-right axis"
    normal = np.cross(ofd_axis, lr_axis)
    step = 0.5 * min(mask.spacing_mm)
    search_half_width = 0.3 * float(np.ptp(points @ normal)) / 2.0
    best_offset = _level_of_maximal_width(
        cropped, points, axes.centroid_ras, ofd_axis, lr_axis, normal, step, search_half_width
    )
    origin = axes.centroid_ras + best_offset * normal
    grid = plane_grid_around(points, origin, ofd_axis, lr_axis, step)
    ellipse = _fit_section(cropped, grid)
    inner_ellipse = None
    if inner is not None and inner.any():
        inner_cropped = cropped.with_array(_crop_like(inner, offset, cropped.shape).astype(np.float32))
        inner_ellipse = _fit_section(inner_cropped, grid)
    center = grid.plane_to_ras(np.asarray(ellipse.center))[0]
    plane = MeasurementPlane(
        origin_ras=center,
        normal_ras=normal,
        ofd_axis_ras=ellipse.major_direction[0] * ofd_axis + ellipse.major_direction[1] * lr_axis,
        lr_axis_ras=ellipse.minor_direction[0] * ofd_axis + ellipse.minor_direction[1] * lr_axis,
        method=method,
        note=note,
    )
    return ellipse, inner_ellipse, plane, grid


def _level_of_maximal_width(
    volume: Image,
    points: np.ndarray,
    centroid: np.ndarray,
    ofd_axis: np.ndarray,
    lr_axis: np.ndarray,
    normal: np.ndarray,
    step: float,
    half_width: float,
) -> float:
    """Offset along ``normal`` (mm from the centroid) of the section with the widest fitted minor axis."""
    offsets = np.linspace(-half_width, half_width, PLANE_SEARCH_OFFSETS)
    widths = []
    for offset in offsets:
        grid = plane_grid_around(points, centroid + offset * normal, ofd_axis, lr_axis, 2.0 * step)
        try:
            widths.append(_fit_section(volume, grid).semi_minor)
        except InputImageError:
            widths.append(0.0)
    best = int(np.argmax(widths))
    if 0 < best < len(offsets) - 1:
        # Vertex of the parabola through the best sample and its two neighbours.
        w_left, w_mid, w_right = widths[best - 1], widths[best], widths[best + 1]
        curvature = w_left - 2.0 * w_mid + w_right
        if curvature < 0:
            shift = 0.5 * (w_left - w_right) / curvature
            return float(offsets[best] + shift * (offsets[1] - offsets[0]))
    return float(offsets[best])


def _fit_section(volume: Image, grid: PlaneGrid) -> Ellipse:
    """Ellipse fitted to the 0.5 iso-contour of the volume's section on ``grid``, in plane coordinates (mm)."""
    section = sample_on_plane(volume, grid)
    edge = mask_edge_points(section, (grid.step_mm, grid.step_mm)) + grid.grid_offset()
    return fit_ellipse(edge)


def _crop_to_mask(mask: Image, head: np.ndarray) -> tuple[Image, np.ndarray]:
    """The head as float32 on its bounding box plus a one-voxel margin, with the matching geometry."""
    nonzero = np.argwhere(head)
    low = np.maximum(nonzero.min(axis=0) - 1, 0)
    high = np.minimum(nonzero.max(axis=0) + 2, head.shape)
    shift = np.eye(4)
    shift[:3, 3] = low
    cropped = head[low[0] : high[0], low[1] : high[1], low[2] : high[2]].astype(np.float32)
    return Image(cropped, mask.ijk_to_ras @ shift), low


def _crop_like(array: np.ndarray, low: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return array[low[0] : low[0] + shape[0], low[1] : low[1] + shape[1], low[2] : low[2] + shape[2]]


def _outer_inner_bpd(outer: Ellipse, inner: Ellipse | None, grid: PlaneGrid) -> tuple[float | None, np.ndarray | None]:
    """BPD outer-to-inner: from one end of the outer minor axis, across, to the inner skull edge on the far side."""
    if inner is None:
        return None, None
    start = outer.minor_axis_endpoints()[0]
    direction = outer.minor_direction
    distance = inner.line_exit_distance(start, direction)
    if distance is None or not math.isfinite(distance):
        return None, None
    end = start + distance * direction
    return distance, grid.plane_to_ras(np.stack([start, end]))


def _rounded(values: np.ndarray, digits: int = 4) -> Any:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()
