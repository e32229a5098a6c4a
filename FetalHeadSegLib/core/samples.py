"""Sample data bundled inside the package (see ``resources/samples/ATTRIBUTION.md`` for sources and licences)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

SAMPLES_DIR = Path(str(resources.files("FetalHeadSegLib"))) / "resources" / "samples"


@dataclass(frozen=True)
class Sample:
    """A bundled case: its files and what is known about it."""

    name: str
    image_path: Path
    annotation_path: Path | None
    info: dict[str, Any]


def list_samples() -> dict[str, Sample]:
    """Every bundled sample, keyed by name."""
    catalog = json.loads((SAMPLES_DIR / "samples.json").read_text(encoding="utf-8"))
    return {
        name: Sample(
            name,
            SAMPLES_DIR / entry["image"],
            SAMPLES_DIR / entry["annotation"] if entry.get("annotation") else None,
            entry,
        )
        for name, entry in catalog.items()
    }


def get_sample(name: str) -> Sample:
    """One bundled sample by name.

    Raises:
        KeyError: no sample has that name (the message lists the names).
    """
    samples = list_samples()
    if name not in samples:
        raise KeyError(f"no bundled sample {name!r}; available: {', '.join(sorted(samples))}")
    return samples[name]
