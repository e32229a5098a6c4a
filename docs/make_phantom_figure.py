"""Make docs/phantoms.png: the bundled 2D phantom beside the bundled real HC18 frame, and the 3D phantom's
three orthogonal planes with the head outline. Run: ``python docs/make_phantom_figure.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.transform import resize

from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.samples import get_sample
from FetalHeadSegLib.report.preview import orthogonal_slices, write_png

WIDTH = 1000


def rows_by_columns(image_path: Path, spacing: float | None = None) -> np.ndarray:
    return read_image(image_path, spacing_mm=spacing).array[:, :, 0].T


def to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def fit_width(picture: np.ndarray, width: int) -> np.ndarray:
    height = int(round(picture.shape[0] * width / picture.shape[1]))
    scaled = resize(picture, (height, width, 3), order=1, preserve_range=True, anti_aliasing=True)
    return np.asarray(np.clip(scaled, 0, 255).astype(np.uint8))


def main() -> None:
    frame = to_rgb(rows_by_columns(get_sample("phantom2d_s000001").image_path))
    real = to_rgb(rows_by_columns(get_sample("hc18_207_HC").image_path))
    top = fit_width(np.concatenate([frame, np.zeros((frame.shape[0], 8, 3), np.uint8), real], axis=1), WIDTH)
    volume = get_sample("phantom3d_s000001")
    assert volume.annotation_path is not None
    planes = orthogonal_slices(read_image(volume.image_path), read_image(volume.annotation_path))
    bottom = fit_width(planes, WIDTH)
    gap = np.zeros((8, WIDTH, 3), np.uint8)
    write_png(np.concatenate([top, gap, bottom], axis=0), Path(__file__).with_name("phantoms.png"))


if __name__ == "__main__":
    main()
