import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
# the engine cache (ONNX exports, OpenVINO blobs, measured precisions) of the test run: never the user's
os.environ.setdefault("RESTORE_PIPELINE_CACHE", __import__("tempfile").mkdtemp(prefix="restore-cache-"))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = dict(encoder_name="tu-mobilenetv3_small_050", encoder_depth=3, decoder_channels=[16, 8, 8])
TINY_OVERRIDES = ["model.encoder_name=tu-mobilenetv3_small_050", "model.encoder_depth=3",
                  "model.decoder_channels=[16,8,8]"]


def tiny(cls, **kw):
    torch.manual_seed(0)
    return cls(**{**TINY, **kw}).eval()


@pytest.fixture(scope="session")
def tiny_pipeline():
    from pipeline import Pipeline
    from stages import Colorizer, Inpainter, MaskDetector
    return Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def colourful(h=64, w=64, seed=0):
    """A smooth, saturated colour image (uint8 RGB)."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    ch = [np.sin(2 * np.pi * (x * r.uniform(1, 3) + y * r.uniform(0, 2) + r.uniform())) for _ in range(3)]
    return ((np.stack(ch, -1) * 0.5 + 0.5) * 255).astype(np.uint8)


# each test here runs a command (python -m pipeline.restore / assemble / evaluate / demo) in a new process
COMMAND_LINE_TESTS = {"test_cli.py", "test_output_names.py"}


def pytest_collection_modifyitems(config, items):
    """Tiers (markers registered in setup.cfg): a ``browser`` (Chromium) or ``cluster`` (torchrun,
    Ray, several processes) test is also ``slow``, so ``pytest -m "not slow"`` is the quick loop
    (under 2 minutes on 2 cores) and plain ``pytest`` (CI) runs every tier."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("cluster") \
                or item.path.name in COMMAND_LINE_TESTS:
            item.add_marker(pytest.mark.slow)
