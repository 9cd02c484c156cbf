"""Deprecated: tiled inference moved to ``stages.nets.tiled`` (the stages tile their own networks).
This module re-exports it for one release."""
import warnings

from stages.nets import tiled  # noqa: F401

warnings.warn("pipeline.tiling is deprecated: use stages.nets.tiled", DeprecationWarning, stacklevel=2)
