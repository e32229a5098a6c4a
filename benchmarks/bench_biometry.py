"""Time and peak memory of the biometry engine on a 160^3 head mask and an HC18-size 2D frame.

Run: ``python benchmarks/bench_biometry.py`` (single process; prints one line per case).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from FetalHeadSegLib.measure.biometry import measure_biometry  # noqa: E402

from shapes import make_ellipse_frame, make_ellipsoid, rotation_matrix  # noqa: E402


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    volume = make_ellipsoid(
        (44.0, 35.0, 31.0), rotation=rotation_matrix((1, 2, 3), 0.7), spacing_mm=(0.6,) * 3, margin_mm=4.0
    )
    frame = make_ellipse_frame((45.0, 36.0), 0.4, spacing_mm=(0.15, 0.15))
    measure_biometry(frame)  # import and warm-up
    cases = [
        ("3D mask " + "x".join(map(str, volume.image.shape)), lambda: measure_biometry(volume.image), 5),
        ("2D frame 800x540", lambda: measure_biometry(frame), 10),
    ]
    for name, function, repeats in cases:
        seconds = timed(function, repeats)
        print(f"{name}: median {statistics.median(seconds) * 1000:.0f} ms over {repeats} runs")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole run: {peak_mb:.0f} MB")
    assert np.isfinite(measure_biometry(volume.image).hc_mm)


if __name__ == "__main__":
    main()
