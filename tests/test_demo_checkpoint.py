"""The shipped demo checkpoint: loads by name, fits the size budget, restores with the properties any
weights give. What these weights find (recall, the look set, the gate's gains) is a benchmark:
``python benchmarks/demo_weights.py --check``."""
import numpy as np
import pytest
from PIL import Image

from pipeline import Pipeline
from pipeline.pipeline import CHECKPOINTS_DIR
from stages import Colorizer, Inpainter, MaskDetector


def test_demo_is_shipped_small_and_complete():
    d = CHECKPOINTS_DIR / "demo"
    total = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    assert total <= 40 * 2 ** 20
    pipe = Pipeline.load("demo")
    assert isinstance(pipe.mask, MaskDetector) and isinstance(pipe.inpaint, Inpainter)
    assert isinstance(pipe.colorize, Colorizer)
    # the inference settings demo ships with
    assert pipe.inpaint.config["context"] == 64 and pipe.colorize.config["hole_saturation"] == 0.6
    assert isinstance(pipe.scratch, MaskDetector) and isinstance(pipe.scratch2, MaskDetector)
    assert pipe.engine("mask")[1] == "fp32"


@pytest.mark.slow  # the shipped networks at full size
def test_demo_restores_a_damaged_sample_leaving_the_rest_as_it_was():
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    from pipeline.data import SAMPLES_DIR
    from pipeline.io import to_rgb
    rgb = to_rgb(sorted(SAMPLES_DIR.glob("*"))[2])
    d = random_damage(*rgb.shape[:2], np.random.default_rng(7))
    gray = apply_damage(pil_gray(rgb), d)
    r = Pipeline.load("demo").restore(gray, return_intermediates=True)
    g, used = np.asarray(r.gray), np.asarray(r.mask) > 0
    assert np.array_equal(g[~used], gray[~used])
    assert np.abs(np.asarray(r.image.convert("L")).astype(int) - g).max() <= 1
    assert isinstance(r.image, Image.Image) and r.image.size == (rgb.shape[1], rgb.shape[0])
