"""The three restoration stages, sharing one ``Stage`` interface.

``STAGES`` maps the registry name written in a checkpoint's config.yaml to its class.
"""
import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # see pipeline/__init__.py

from .base import STAGES, CheckpointError, Stage, register_stage
from .colorize import Colorizer
from .inpaint import Inpainter
from .mask import MaskDetector

__all__ = ["STAGES", "CheckpointError", "Stage", "register_stage", "MaskDetector", "Inpainter",
           "Colorizer"]
