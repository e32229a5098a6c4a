"""Mask clean-up shared by segmentation and biometry: largest connected component (for a network's output, the one
holding the most probability) and hole filling, and a model's own extra steps (:class:`PostprocessingConfig`: the
head's decision threshold, tissue stuck to the head cut away)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components of a boolean (X, Y, Z) mask with full connectivity (26 in 3D; 8 within a 2D frame).

    Returns the label array (0 = background) and the voxel count of each component, in label order.
    """
    from scipy import ndimage

    structure = np.ones((3, 3, 3), dtype=bool)
    if mask.shape[2] == 1:
        structure[:, :, (0, 2)] = False  # in-plane neighbours only
    labelled, _ = ndimage.label(mask, structure=structure)
    return labelled, np.bincount(labelled.ravel())[1:]


def keep_largest_component(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The largest connected component of a boolean mask (an empty mask stays empty).

    With ``weights`` (the class probability, same shape), the component holding the largest probability mass: its
    expected voxel count rather than its voxel count, so that a sure head beats a slightly larger, doubtful blob
    (a fetal trunk or a second head beside the measured one).
    """
    labelled, sizes = connected_components(mask)
    if sizes.size == 0:
        return np.zeros(mask.shape, dtype=bool)
    if weights is not None:
        sizes = np.bincount(labelled.ravel(), weights=weights.ravel())[1:]
    return np.asarray(labelled == int(np.argmax(sizes)) + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes: in 3D for volumes, in the frame's plane for single-slice (X, Y, 1) masks."""
    from scipy import ndimage

    if mask.shape[2] == 1:
        return np.asarray(ndimage.binary_fill_holes(mask[:, :, 0]))[:, :, np.newaxis]
    return np.asarray(ndimage.binary_fill_holes(mask))


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a boolean (X, Y, Z) mask, in 3D for volumes, in the frame's plane for single-slice (X, Y, 1)
    masks (scikit-image; each voxel counts with its faces' centres). A flat mask (one plane of a volume, a line) is
    its own hull; an empty one stays empty."""
    import warnings

    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    if not mask.any():
        return mask.copy()
    # scikit-image tests every voxel it is given against the hull: give it the mask's bounding box only, which holds
    # every voxel centre of the hull (the outermost face centres lie half a voxel outside it)
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    part = mask[box]
    plane = mask.shape[2] == 1
    with warnings.catch_warnings():  # scikit-image warns and returns an empty image where Qhull finds no hull
        warnings.simplefilter("ignore", UserWarning)
        hull = np.asarray(convex_hull_image(part[:, :, 0] if plane else part))
    result = mask.copy()
    result[box] |= hull[:, :, np.newaxis] if plane else hull
    return result


def decide_labels(class_probabilities: np.ndarray, head_class: int, head_threshold: float | None = None) -> np.ndarray:
    """The label of every voxel of (K, X, Y, Z) probabilities, as uint8 (X, Y, Z).

    Without ``head_threshold``: the most probable class. With it: ``head_class`` where its probability exceeds the
    threshold, elsewhere the most probable of the other classes.
    """
    labels = np.argmax(class_probabilities, axis=0).astype(np.uint8)
    if head_threshold is None:
        return labels
    head = class_probabilities[head_class] > head_threshold
    demoted = (labels == head_class) & ~head  # the head won the argmax but not the threshold: the next class instead
    if demoted.any():
        runners_up = class_probabilities[:, demoted]  # (K, N) for those voxels only, not a copy of the whole map
        runners_up[head_class] = -np.inf
        labels[demoted] = np.argmax(runners_up, axis=0)
    labels[head] = head_class
    return labels


def clean_label_map(labels: np.ndarray, values: list[int], class_probabilities: np.ndarray | None = None) -> np.ndarray:
    """Each label reduced to its largest component with holes filled (later labels win where they overlap).

    With the (K, X, Y, Z) ``class_probabilities`` the labels came from, "largest" is by probability mass
    (:func:`keep_largest_component`).
    """
    cleaned = np.zeros(labels.shape, dtype=np.uint8)
    for value in values:
        region = labels == value
        if region.any():
            weights = None if class_probabilities is None else class_probabilities[value]
            cleaned[fill_holes(keep_largest_component(region, weights))] = value
    return cleaned


@dataclass(frozen=True)
class PostprocessingConfig:
    """What a model's label map gets beyond the clean-up every model gets (largest component, holes filled).

    Attributes:
        detach_fraction: cut tissue that touches the head away from it (uterine wall, placenta, a limb the
            network took for head): a morphological opening of the head with a ball whose radius is this fraction
            of the head's equivalent-sphere radius. A convex head whose smallest radius of curvature exceeds the
            ball passes unchanged; what hangs on it by a neck narrower than the ball falls off. None: off.
        head_threshold: a voxel is head where the head's probability exceeds this; every other voxel takes the
            most probable of the other classes (:func:`decide_labels`). Where the skull runs along the beam it gives
            little echo, the head's probability falls off gradually there and its 0.5 level lies inside the true
            border, while a bright skull makes the fall sharp and the level hardly matters: a threshold below 0.5
            takes back what the faint stretches lose. None: the plain argmax of all classes.
    """

    detach_fraction: float | None = None
    head_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.detach_fraction is not None and not 0.0 < self.detach_fraction < 1.0:
            raise ValueError(f"detach_fraction must lie between 0 and 1, got {self.detach_fraction}")
        if self.head_threshold is not None and not 0.0 < self.head_threshold < 1.0:
            raise ValueError(f"head_threshold must lie between 0 and 1, got {self.head_threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PostprocessingConfig:
        values = dict(data or {})
        fraction, threshold = values.get("detach_fraction"), values.get("head_threshold")
        return cls(
            detach_fraction=None if fraction is None else float(fraction),
            head_threshold=None if threshold is None else float(threshold),
        )


OPENING_VOXELS_PER_RADIUS = 16
"""The finest grid :func:`detach_attached_tissue` opens a large mask on, in voxels per radius of the opening's ball."""
OPENING_EXACT_VOXELS = 128**3
"""A mask whose bounding box holds at most this many voxels is opened on its own grid."""


def detach_attached_tissue(
    mask: np.ndarray, spacing_mm: tuple[float, float, float], radius_fraction: float
) -> np.ndarray:
    """The head without tissue stuck to it: a boolean mask (X, Y, Z), or (X, Y, 1) for a frame.

    The mask is eroded by a ball of ``radius_fraction`` times its equivalent-sphere (frames: equivalent-disc) radius
    in mm, the largest remaining core is kept and grown back by the same radius plus one voxel, and the result is
    the mask within it: an opening computed with exact Euclidean distance transforms on the mask's bounding box.
    The image's edge does not erode (a head cut by the field of view keeps its cut side). A mask too thin to keep a
    core is returned as it is. A large mask (more than :data:`OPENING_EXACT_VOXELS` voxels in its box) finer than
    :data:`OPENING_VOXELS_PER_RADIUS` voxels per ball radius is opened on a coarser grid (each block of voxels in or
    out by majority) and the grown core, one coarse voxel more generous, cut from the full-resolution mask: the
    head keeps its own border, and a 0.3 mm volume is not spent on distance transforms.
    """
    from scipy import ndimage

    if not mask.any():
        return mask
    axes = 2 if mask.shape[2] == 1 else 3
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    size = float(mask.sum() * spacing[:axes].prod())  # mm^2 or mm^3
    equivalent_radius_mm = math.sqrt(size / math.pi) if axes == 2 else (3.0 * size / (4.0 * math.pi)) ** (1.0 / 3.0)
    radius_mm = radius_fraction * equivalent_radius_mm
    indices = np.argwhere(mask)
    margin = np.ceil(radius_mm / spacing).astype(int) + 2
    low = np.maximum(indices.min(axis=0) - margin, 0)
    high = np.minimum(indices.max(axis=0) + margin + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    part = mask[box]
    factors = np.ones(3, dtype=int)  # voxels per block along each axis
    if part.size > OPENING_EXACT_VOXELS:
        factors[:axes] = np.maximum(1, np.floor(radius_mm / OPENING_VOXELS_PER_RADIUS / spacing[:axes]))
    coarsened = bool((factors > 1).any())
    coarse, step = part, spacing * factors
    if coarsened:  # blocks in or out by majority; the box's far end padded with its own edge values
        from skimage.measure import block_reduce

        ends = [(0, int(-n % f)) for n, f in zip(part.shape, factors, strict=True)]
        coarse = block_reduce(np.pad(part, ends, mode="edge"), tuple(factors), np.mean) >= 0.5
    # the image's edge is not background: pad with the mask's own edge values before measuring distances (a frame's
    # single slice becomes three equal ones, which leaves its in-plane distances as they are)
    inside_mm = ndimage.distance_transform_edt(np.pad(coarse, 1, mode="edge"), sampling=step)[1:-1, 1:-1, 1:-1]
    core = keep_largest_component(inside_mm > radius_mm)
    if not core.any():
        return mask
    reach_mm = radius_mm + (2 if coarsened else 1) * float(step[:axes].max())
    grown = ndimage.distance_transform_edt(~core, sampling=step) <= reach_mm
    for axis, factor in enumerate(factors):
        grown = np.repeat(grown, factor, axis=axis) if factor > 1 else grown
    kept = mask.copy()
    kept[box] = part & grown[: part.shape[0], : part.shape[1], : part.shape[2]]
    return kept
