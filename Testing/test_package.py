"""The package itself: a light import (Slicer imports it at start-up) and a resolvable public API."""

from __future__ import annotations

import subprocess
import sys

import FetalHeadSegLib


def test_import_does_not_load_heavy_dependencies() -> None:
    code = (
        "import sys, FetalHeadSegLib; "
        "heavy = [m for m in ('torch', 'SimpleITK', 'skimage', 'scipy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_public_names_resolve() -> None:
    for name in FetalHeadSegLib.__all__:
        assert getattr(FetalHeadSegLib, name) is not None
    assert FetalHeadSegLib.__version__.count(".") == 2
