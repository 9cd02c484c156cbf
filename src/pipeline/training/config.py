"""Training's configuration: Hydra's config folder, the stage schemas read from each stage's
signature, the one-line error, instantiation and seeding."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from stages import STAGES

CONF_DIR = str((Path(__file__).resolve().parents[1] / "conf").resolve())  # repo: a link to conf/; wheel: a copy


def register_stage_schemas() -> None:
    """Hydra's ``schema/<stage>`` configs: every constructor argument of each registered stage
    with its default, read from the signature (the one home of a default). conf/stage/<stage>.yaml
    puts it under ``model`` and holds overrides only; ``model.KEY=VALUE`` works for every key."""
    from hydra.core.config_store import ConfigStore
    cs = ConfigStore.instance()
    for name, cls in STAGES.items():
        cs.store(group="schema", name=name, node={"_target_": f"{cls.__module__}.{cls.__qualname__}", **cls.defaults()})


register_stage_schemas()


class TrainingError(RuntimeError):
    """A user-facing training failure, reported as one line."""



def _instantiate(node, what: str):
    """``hydra.utils.instantiate`` with the underlying error as one TrainingError line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    try:
        return instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise TrainingError(f"{what}: {msg}") from None



def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
