"""What ``base`` and ``checkpoint`` (and ``runtimes``) share, so that none of them imports another
in a circle: the stage registry, the checkpoint error and atomic file writes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

STAGES: dict[str, type] = {}  # registry name (config.yaml: stage) -> Stage subclass


class CheckpointError(ValueError):
    """A checkpoint folder is missing, truncated, of another kind, or names an unknown stage."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
