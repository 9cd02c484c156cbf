"""``python -m pipeline.train``: the Hydra command line."""
from __future__ import annotations

import os
import sys

from omegaconf import DictConfig

from .config import CONF_DIR, TrainingError
from .loop import run


def main() -> None:
    """``python -m pipeline.train`` (Hydra): train the stage selected with ``stage=``."""
    import hydra

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
    def _app(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except (TrainingError, FileNotFoundError, ValueError, RuntimeError) as e:
            from stages import CheckpointError  # noqa: F401  (a ValueError subclass)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _app()
