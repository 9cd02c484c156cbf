"""Restore damaged grayscale photos to colour: mask detection -> inpainting -> colorization."""
import os

# After each parallel op torch's OpenMP workers busy-wait (libgomp: 300k spins) and take the cores
# from the inference engine's threads that run next; shorter spins make a 512x512 restore ~20%
# faster. libgomp reads this when torch loads, so it acts only if torch is not imported yet; a
# value already set wins. (The same line is in stages/__init__.py, whichever is imported first.)
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .pipeline import Pipeline, Restoration, resolve_checkpoint

__all__ = ["Pipeline", "Restoration", "resolve_checkpoint"]
__version__ = "0.1.0"
