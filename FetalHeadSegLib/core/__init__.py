"""The core: what every stage shares, from the in-memory image to the task registry.

An :class:`~FetalHeadSegLib.core.image.Image` is a voxel array in (X, Y, Z) index order plus its voxel-to-RAS affine;
:mod:`~FetalHeadSegLib.core.io` and :mod:`~FetalHeadSegLib.core.dicom` are the only ways in from files, and
:mod:`~FetalHeadSegLib.core.spacing` says where each pixel size came from. Beside them: the library's exception
classes, atomic writes, the label definitions, the task registry (which labels a task segments and how its result
is measured) and the bundled sample cases. Nothing here knows about networks. Importing this package loads nothing.
"""
