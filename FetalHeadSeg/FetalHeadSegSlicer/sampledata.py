"""The module's sample data: the bundled phantom volume and HC18 frame, registered with Slicer's Sample Data module
as local files (no download), each with its SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

SAMPLES = (
    ("FetalHeadPhantom3D", "phantom3d_s000001_image.nii.gz", "FetalHeadPhantom3D"),
    ("FetalHeadHC18Frame", "hc18_207_HC.png", "FetalHeadHC18Frame"),
)
"""(sample name, file name, node name) of each sample."""


def register_sample_data(samples_dir: Path, icon: Path) -> None:
    """Register every sample of :data:`SAMPLES` found in ``samples_dir`` under the category "Fetal head"."""
    import SampleData

    for sample_name, file_name, node_name in SAMPLES:
        path = samples_dir / file_name
        if not path.exists():
            continue
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="Fetal head",
            sampleName=sample_name,
            uris=path.as_uri(),
            fileNames=file_name,
            nodeNames=node_name,
            thumbnailFileName=str(icon),
            checksums=f"SHA256:{checksum}",
        )
