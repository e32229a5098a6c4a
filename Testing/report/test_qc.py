"""The QC picture: a 2D frame whole and unrotated, the outline and the ellipse in their own colours, and the
angle of progression's construction drawn where its points are."""

from __future__ import annotations

import numpy as np

from FetalHeadSegLib.cli.report import biometry_table
from FetalHeadSegLib.core.spacing import SpacingChoice, SpacingSource, with_spacing_record
from FetalHeadSegLib.measure.aop import angle_of_progression
from FetalHeadSegLib.measure.biometry import measure_biometry
from FetalHeadSegLib.report.qc import (
    AOP_TANGENT_RGB,
    HC_RGB,
    SEGMENTATION_RGB,
    SYMPHYSIS_AXIS_RGB,
    caption_text,
    qc_picture,
)

from shapes import intrapartum_labels


def _has(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(picture == np.asarray(colour, dtype=np.uint8), axis=2)


def test_an_intrapartum_frame_is_shown_unrotated_with_the_aop_construction() -> None:
    labels = intrapartum_labels()
    head = labels.with_array((labels.array == 2).astype(np.uint8))
    aop = angle_of_progression(labels)
    biometry = measure_biometry(head).with_aop(aop)
    image = labels.with_array(labels.array.astype(np.float32) * 50 + 10)
    picture = qc_picture(image, head, biometry)
    columns, rows = labels.shape[0], labels.shape[1]
    body = picture[:rows]  # the frame at its own pixel size (it is under 900 pixels wide), caption below
    assert body.shape[1] >= columns and abs(picture.shape[1] - max(columns, 640)) <= 1
    for colour in (SEGMENTATION_RGB, HC_RGB, SYMPHYSIS_AXIS_RGB, AOP_TANGENT_RGB):
        assert _has(body, colour).any(), colour
    # The apex V is where the two construction lines meet: both colours are drawn within a pixel of it.
    v_ijk = np.rint((np.r_[aop.v_ras, 1.0] @ np.linalg.inv(labels.ijk_to_ras).T)[:2]).astype(int)
    window = body[v_ijk[1] - 2 : v_ijk[1] + 3, v_ijk[0] - 2 : v_ijk[0] + 3]
    assert _has(window, SYMPHYSIS_AXIS_RGB).any() or _has(window, AOP_TANGENT_RGB).any()
    # Unrotated: the symphysis (label 1) sits in the picture where it sits in the frame.
    symphysis_rows, symphysis_columns = np.nonzero(labels.array[:, :, 0].T == 1)
    assert _has(body, SYMPHYSIS_AXIS_RGB)[symphysis_rows, symphysis_columns].any()


def test_the_caption_shows_the_numbers_of_the_command_line_table() -> None:
    labels = intrapartum_labels()
    head = labels.with_array((labels.array == 2).astype(np.uint8))
    record = measure_biometry(head).with_aop(angle_of_progression(labels)).to_dict()
    caption = caption_text(record)
    assert caption.startswith(f"HC {record['hc_mm']:.1f} mm   BPD {record['bpd_mm']:.1f} mm")
    table_lines = [line.strip() for line in biometry_table(record, "case").splitlines()]
    for name, measurement in (("HC", "HC"), ("OFD", "OFD"), ("CI", "Cephalic index"), ("AoP", "Angle of progression")):
        shown = caption.split(f"{name} ")[1].split("   ")[0]  # e.g. "172.3 mm"
        table_line = next(line for line in table_lines if line.startswith(f"{measurement} "))
        assert shown in table_line, (shown, table_line)
    # In pixel units the lengths are in px and nothing that needs a pixel size is shown.
    pixels = with_spacing_record(record, SpacingChoice((1.0,), SpacingSource.NONE), (1.0, 1.0))
    assert caption_text(pixels).startswith(f"HC {pixels['hc_px']:.1f} px") and "mm" not in caption_text(pixels)
