"""Standalone training of FetalHeadSeg models (single GPU, multi-GPU through torchrun, or CPU).

Imports ``FetalHeadSegLib`` for networks, preprocessing, phantoms, metrics and the model format; the library
never imports this package. Entry points: ``python -m training.train CONFIG`` and
``python -m training.export RUN_DIR OUT``.
"""
