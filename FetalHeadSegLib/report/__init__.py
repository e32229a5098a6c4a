"""Reports: every file a result becomes, written atomically, never over a user's data.

:mod:`~FetalHeadSegLib.report.outputs` writes one case (label map, ``.seg.nrrd`` from
:mod:`~FetalHeadSegLib.report.segfile`, Slicer markups from :mod:`~FetalHeadSegLib.report.markups`, biometry JSON,
the QC picture of :mod:`~FetalHeadSegLib.report.qc` and :mod:`~FetalHeadSegLib.report.preview`);
:mod:`~FetalHeadSegLib.report.cohort` names the cases of a batch and :mod:`~FetalHeadSegLib.report.summary`
collects them in one CSV. :mod:`~FetalHeadSegLib.report.rows` is the one place a biometry record becomes table
rows, and :mod:`~FetalHeadSegLib.report.protocol` the JSON-lines events a worker prints. Importing this package
loads nothing.
"""
