"""Segment labels: value, name, colour and DICOM terminology (pure data; used by bundles, outputs and Slicer).

Codes are from 3D Slicer's bundled DICOM master list (``SegmentationCategoryTypeModifier-DICOM-Master.json``),
category Anatomical Structure (SCT 123037004). No code is invented: a structure without a verified code has no
terminology entry, only its name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

_CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_ANATOMICAL_STRUCTURE = "SCT^123037004^Anatomical Structure"


@dataclass(frozen=True)
class Label:
    """One segment of a label map."""

    value: int
    name: str
    color_rgb: tuple[int, int, int]
    snomed_code: str | None = None
    snomed_meaning: str | None = None

    @property
    def terminology_entry(self) -> str | None:
        """Slicer's 7-part terminology string, or None without a verified code."""
        if self.snomed_code is None:
            return None
        kind = f"SCT^{self.snomed_code}^{self.snomed_meaning}"
        return f"{_CONTEXT}~{_ANATOMICAL_STRUCTURE}~{kind}~^^~{_ANATOMIC_CONTEXT}~^^~^^"

    @property
    def segment_id(self) -> str:
        return self.name.replace(" ", "_")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Label:
        color = tuple(int(c) for c in data["color_rgb"])
        if len(color) != 3:
            raise ValueError(f"label {data.get('name')!r}: color_rgb needs three values")
        return cls(
            int(data["value"]),
            str(data["name"]),
            (color[0], color[1], color[2]),
            data.get("snomed_code"),
            data.get("snomed_meaning"),
        )


HEAD = Label(1, "Head", (177, 122, 101), "69536005", "Head")
SKULL = Label(1, "Skull", (241, 213, 144), "89546000", "Skull")
BRAIN = Label(2, "Brain", (250, 250, 225), "12738006", "Brain")
PUBIC_SYMPHYSIS = Label(1, "Pubic symphysis", (128, 174, 128))
FETAL_HEAD = Label(2, "Head", (177, 122, 101), "69536005", "Head")
