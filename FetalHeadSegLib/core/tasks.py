"""The task registry: what each kind of model segments, which label is the head, and how a result is measured.

This is the one place that knows the tasks. A bundle names its task; the engine, the command line, training,
evaluation and the Slicer module ask this module for the labels, the head label and the measurement instead of
comparing strings or label values of their own. Adding a task or a label is a change to :data:`TASKS` only.

Example:
    >>> spec = task_spec("intrapartum")
    >>> spec.head_label, [label.name for label in spec.labels]
    (2, ['Pubic symphysis', 'Head'])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from FetalHeadSegLib.core.errors import ConfigError
from FetalHeadSegLib.core.labels import FETAL_HEAD, HEAD, PUBIC_SYMPHYSIS, Label

if TYPE_CHECKING:
    from FetalHeadSegLib.core.image import Image
    from FetalHeadSegLib.measure.biometry import Biometry


FRAME_BEAM_AXIS = 1
"""The image axis along which a 2D ultrasound frame's beam runs (Y: the probe at the top)."""


class Task(StrEnum):
    """What a model segments."""

    HEAD = "head"
    """The fetal head (skull and contents) in 3D volumes or 2D standard planes: HC, BPD, OFD, volume, GA."""
    INTRAPARTUM = "intrapartum"
    """Pubic symphysis and fetal head on transperineal frames (PSFHS): head biometry and angle of progression."""


@dataclass(frozen=True)
class TaskSpec:
    """Everything the code needs to know about one task.

    Attributes:
        task: the task.
        labels: the label map's segments, background (0) excluded, in value order.
        head_label: the value of the fetal head in the label map.
        description: one line for help texts.
        measure: biometry of a label map of this task (``labels`` on the image grid, ``ga_weeks`` optional).
        mirror_axes: image axes (X 0, Y 1, Z 2) along which a mirrored image is still a valid image of this task
            (training flips, test-time augmentation). Intrapartum frames keep the probe at the top (Y is the beam),
            so only X.
    """

    task: Task
    labels: tuple[Label, ...]
    head_label: int
    description: str
    measure: Callable[[Image, float | None], Biometry]
    mirror_axes: tuple[int, ...] = (0, 1, 2)

    def flip_passes(self, dims: int) -> list[tuple[int, ...]]:
        """Flipped passes (test-time augmentation, the mirror check): no flip, then one per mirror axis of a
        ``dims``-D image, as axes of a (C, X, Y, Z) array. A 2D frame is never mirrored along its beam axis Y: its
        probe stays at the top, as in every frame a model meets. (On the 134 HC18 validation frames the
        beam-flipped pass of hc18-plane-2d 0.2.5 measured 15 heads off by more than 5 mm, the left-right one 12,
        the frame itself 10.)"""
        kept = [axis for axis in self.mirror_axes if axis < dims and not (dims == 2 and axis == FRAME_BEAM_AXIS)]
        return [()] + [(axis + 1,) for axis in kept]

    @property
    def classes(self) -> int:
        """Network output channels: background plus one per label."""
        return len(self.labels) + 1

    @property
    def label_values(self) -> list[int]:
        return [label.value for label in self.labels]

    def head_mask(self, labels: np.ndarray) -> np.ndarray:
        """The head as a uint8 0/1 array of a label map of this task."""
        return (labels == self.head_label).astype(np.uint8)


def _measure_head(labels: Image, ga_weeks: float | None) -> Biometry:
    from FetalHeadSegLib.measure.biometry import measure_biometry

    return measure_biometry(labels.with_array(TASKS[Task.HEAD].head_mask(labels.array)), ga_weeks=ga_weeks)


def _measure_intrapartum(labels: Image, ga_weeks: float | None) -> Biometry:
    from FetalHeadSegLib.measure.aop import angle_of_progression
    from FetalHeadSegLib.measure.biometry import measure_biometry

    head = labels.with_array(TASKS[Task.INTRAPARTUM].head_mask(labels.array))
    return measure_biometry(head, ga_weeks=ga_weeks).with_aop(angle_of_progression(labels))


TASKS: dict[Task, TaskSpec] = {
    Task.HEAD: TaskSpec(
        Task.HEAD,
        (HEAD,),
        HEAD.value,
        "fetal head in 3D volumes or 2D standard planes",
        _measure_head,
    ),
    Task.INTRAPARTUM: TaskSpec(
        Task.INTRAPARTUM,
        (PUBIC_SYMPHYSIS, FETAL_HEAD),
        FETAL_HEAD.value,
        "pubic symphysis and fetal head on intrapartum transperineal frames (angle of progression)",
        _measure_intrapartum,
        mirror_axes=(0,),
    ),
}


def task_spec(task: Task | str) -> TaskSpec:
    """The registry entry of a task name.

    Raises:
        ConfigError: an unknown task, with the known ones.
    """
    try:
        return TASKS[Task(task)]
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise ConfigError(f"unknown task {task!r}; known tasks: {known}") from None
