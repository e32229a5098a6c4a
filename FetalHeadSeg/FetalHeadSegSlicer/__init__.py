"""Slicer-side support of the FetalHeadSeg module: worker process, scene import, biometry table and markups.

Kept out of ``FetalHeadSeg.py`` so the module file stays thin (Slicer treats every ``.py`` directly in a module
folder as a module, so support code lives in this sub-package). Nothing here runs at import time.
"""
