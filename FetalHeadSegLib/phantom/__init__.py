"""Fetal-head ultrasound phantoms with exact ground truth (3D volumes and 2D frames)."""

from FetalHeadSegLib.phantom.generator import Phantom, PhantomConfig, generate_phantom

__all__ = ["Phantom", "PhantomConfig", "generate_phantom"]
