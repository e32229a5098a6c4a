"""Make Screenshots/results.png from the demo's QC pictures: the 3D phantom's measurement planes above the HC18
frame's. Run ``fetalheadseg demo -o DEMO_DIR`` first, then ``python docs/make_screenshot.py DEMO_DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from FetalHeadSegLib.report.preview import write_png


def main() -> None:
    demo = Path(sys.argv[1])
    pictures = [
        sitk.GetArrayFromImage(sitk.ReadImage(str(demo / name)))
        for name in ("phantom3d_s000001_qc.png", "hc18_207_HC_qc.png")
    ]
    width = max(p.shape[1] for p in pictures)
    padded = [np.pad(p, ((0, 6), (0, width - p.shape[1]), (0, 0))) for p in pictures]
    write_png(np.concatenate(padded, axis=0)[:-6], Path(__file__).resolve().parents[1] / "Screenshots" / "results.png")


if __name__ == "__main__":
    main()
