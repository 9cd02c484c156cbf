"""Training one stage: ``python -m pipeline.train stage=<mask|inpaint|colorize> [key=value ...]``.

Writes to ``out_dir``: the stage checkpoint (config.yaml + model.safetensors, loadable with
``Stage.load(out_dir)``), ``train_config.yaml`` (the resolved Hydra config), ``metrics.csv``
(step, tag, value), ``samples/step_XXXXXXX.png`` grids (input | target | prediction), TensorBoard
events when available, and ``last/`` (weights + optimizer/scheduler/RNG state for ``resume=true``).

- ``config``: Hydra's config folder, the stage schemas, ``TrainingError``, seeding;
- ``inputs``: the data loaders and the frozen upstream stages (``upstream=``);
- ``state``: metrics, sample grids, the resume state (``last/``) and ``init_from``;
- ``distributed``: ``trainer.strategy`` (one process, or DDP under ``torchrun``);
- ``loop``: ``Trainer`` and ``run``; ``cli``: ``main``, the command line.
"""
from .cli import main
from .config import CONF_DIR, TrainingError, register_stage_schemas, seed_everything
from .distributed import Distributed, LossModule, unused_parameters
from .inputs import UpstreamSample, apply_upstream, load_upstream
from .loop import Trainer, make_optimizer, run
from .state import MetricLog, save_grid

__all__ = ["CONF_DIR", "Distributed", "LossModule", "MetricLog", "Trainer", "TrainingError", "UpstreamSample",
           "apply_upstream", "load_upstream", "main", "make_optimizer", "register_stage_schemas", "run",
           "save_grid", "seed_everything", "unused_parameters"]
