"""Restore damaged grayscale photos to colour: mask detection -> inpainting -> colorization."""
from .pipeline import Pipeline, Restoration, resolve_checkpoint

__all__ = ["Pipeline", "Restoration", "resolve_checkpoint"]
__version__ = "0.1.0"
