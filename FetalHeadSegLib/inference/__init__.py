"""Inference: from an image and a model bundle to a label map, probabilities and an uncertainty map.

The engine (:mod:`~FetalHeadSegLib.inference.engine`: ``load_model``, ``segment``, ``Segmenter``) runs named
stages: :mod:`~FetalHeadSegLib.inference.preprocessing` resamples and normalises onto the model's working grid,
:mod:`~FetalHeadSegLib.inference.cascade` and :mod:`~FetalHeadSegLib.inference.roi_cascade` run the levels (in
:mod:`~FetalHeadSegLib.inference.tiling`'s sliding windows when memory is short, on the boxes
:mod:`~FetalHeadSegLib.inference.roi` crops), and :mod:`~FetalHeadSegLib.inference.postprocessing` keeps for each
label the component holding the most of its probability. :mod:`~FetalHeadSegLib.inference.request` is the segment
contract shared by the command line and the Slicer module. This package re-exports nothing, so importing one stage
never loads the engine (or torch); the public names are also at the top level (``from FetalHeadSegLib import
load_model``).
"""
