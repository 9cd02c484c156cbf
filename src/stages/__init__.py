"""The three restoration stages, sharing one ``Stage`` interface.

``STAGES`` maps the registry name written in a checkpoint's config.yaml to its class.
"""
import os

# After each parallel op torch's OpenMP workers busy-wait (libgomp: 300k spins) and take the cores
# from the inference engine's threads that run next; shorter spins make a 512x512 restore ~20%
# faster. libgomp reads this when torch loads, so it acts only if torch is not imported yet; a
# value already set wins. ``pipeline`` sets the same value on import (it loads torch lazily).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .base import Stage, register_stage
from .registry import STAGES, CheckpointError
from .colorize import Colorizer
from .inpaint import Inpainter
from .mask import MaskDetector
from .processors import KINDS, Hints, MaskProcessor, Reference, TeleaPrefill

__all__ = ["STAGES", "CheckpointError", "Stage", "register_stage", "MaskDetector", "Inpainter",
           "Colorizer", "MaskProcessor", "TeleaPrefill", "Reference", "Hints", "KINDS"]
