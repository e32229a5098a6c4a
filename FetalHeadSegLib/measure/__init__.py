"""Measurement: biometry of a label map in millimetres, and how far to trust it.

:mod:`~FetalHeadSegLib.measure.biometry` fits ellipses (:mod:`~FetalHeadSegLib.measure.ellipse`) on the
measurement plane (:mod:`~FetalHeadSegLib.measure.section`) to give HC, BPD, OFD and head volume;
:mod:`~FetalHeadSegLib.measure.growth` turns them into a gestational age and a size-for-age centile, and
:mod:`~FetalHeadSegLib.measure.aop` measures the angle of progression. Every result carries its quality flags
(:mod:`~FetalHeadSegLib.measure.quality`) and a review decision (:mod:`~FetalHeadSegLib.measure.review`).
:mod:`~FetalHeadSegLib.measure.metrics` and :mod:`~FetalHeadSegLib.measure.hc18` score results against references.
Importing this package loads nothing.
"""
