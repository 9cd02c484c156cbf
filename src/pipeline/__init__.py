"""Restore damaged grayscale photos to colour: mask detection -> inpainting -> colorization.

``pipeline`` chains the stages of the ``stages`` package (never the reverse)."""
import stages  # noqa: F401  (first: it sets GOMP_SPINCOUNT before torch loads, see stages/__init__.py)

from .pipeline import Pipeline, Restoration, resolve_checkpoint

__all__ = ["Pipeline", "Restoration", "resolve_checkpoint"]
__version__ = "0.1.0"
