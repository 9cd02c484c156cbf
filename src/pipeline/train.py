"""``python -m pipeline.train stage=<mask|inpaint|colorize> [key=value ...]``: the command line of
``pipeline.training`` (the loop, its inputs, state and resume, distributed runs), and its names."""
from .training import (CONF_DIR, Distributed, LossModule, MetricLog, Trainer, TrainingError,  # noqa: F401
                       UpstreamSample, apply_upstream, load_upstream, main, make_optimizer,
                       register_stage_schemas, run, save_grid, seed_everything, unused_parameters)
from .training.config import _instantiate  # noqa: F401  (pipeline.evaluate)

if __name__ == "__main__":
    main()
