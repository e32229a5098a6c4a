"""FetalHeadSeg: fetal head segmentation and biometry in prenatal ultrasound.

The public API is small and import-light: importing the package loads numpy only. Everything else (SimpleITK,
scikit-image, scipy and, for segmentation, torch) is imported when first used.

Example:
    >>> from FetalHeadSegLib import read_image, measure_biometry
    >>> biometry = measure_biometry(read_image("head_mask.nii.gz"))  # doctest: +SKIP
    >>> print(biometry.hc_mm, biometry.bpd_mm, biometry.head_volume_ml)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from FetalHeadSegLib._version import __version__

if TYPE_CHECKING:
    from FetalHeadSegLib.core.image import Image
    from FetalHeadSegLib.core.io import read_image, write_image, write_labelmap
    from FetalHeadSegLib.inference.engine import InferenceOptions, Segmentation, Segmenter, load_model, segment
    from FetalHeadSegLib.measure.aop import AngleOfProgression, angle_of_progression
    from FetalHeadSegLib.measure.biometry import Biometry, measure_biometry
    from FetalHeadSegLib.measure.metrics import segmentation_metrics
    from FetalHeadSegLib.report.markups import write_markups

__all__ = [
    "AngleOfProgression",
    "Biometry",
    "Image",
    "InferenceOptions",
    "Segmentation",
    "Segmenter",
    "__version__",
    "angle_of_progression",
    "load_model",
    "measure_biometry",
    "read_image",
    "segment",
    "segmentation_metrics",
    "write_image",
    "write_labelmap",
    "write_markups",
]

_LAZY = {
    "AngleOfProgression": "FetalHeadSegLib.measure.aop",
    "angle_of_progression": "FetalHeadSegLib.measure.aop",
    "Biometry": "FetalHeadSegLib.measure.biometry",
    "measure_biometry": "FetalHeadSegLib.measure.biometry",
    "Image": "FetalHeadSegLib.core.image",
    "InferenceOptions": "FetalHeadSegLib.inference.engine",
    "Segmentation": "FetalHeadSegLib.inference.engine",
    "Segmenter": "FetalHeadSegLib.inference.engine",
    "load_model": "FetalHeadSegLib.inference.engine",
    "segment": "FetalHeadSegLib.inference.engine",
    "read_image": "FetalHeadSegLib.core.io",
    "write_image": "FetalHeadSegLib.core.io",
    "write_labelmap": "FetalHeadSegLib.core.io",
    "write_markups": "FetalHeadSegLib.report.markups",
    "segmentation_metrics": "FetalHeadSegLib.measure.metrics",
}


def __getattr__(name: str) -> Any:
    """Resolve public names on first use (PEP 562), keeping ``import FetalHeadSegLib`` cheap."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'FetalHeadSegLib' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
