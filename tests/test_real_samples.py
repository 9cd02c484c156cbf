"""Checks against the real DACON sample pairs in ../shared/data/dacon_samples (skipped without them)."""
import numpy as np
import pytest
from scipy import ndimage

from pipeline.color import pil_gray
from pipeline.damage import mask_from_pair, rule_mask
from pipeline.io import to_gray, to_rgb
from pipeline.metrics import mask_iou_f1, score
from tests.conftest import SHARED

ROOT = SHARED / "dacon_samples"
pytestmark = pytest.mark.skipif(not (ROOT / "train.csv").is_file(), reason="no ../shared/data/dacon_samples")


def pairs():
    from pipeline.data import read_pairs_csv
    return [(to_gray(i), to_rgb(g)) for i, g in read_pairs_csv(ROOT / "train.csv")]


def test_outside_the_shape_the_input_is_pil_gray_and_the_shape_is_one_constant():
    for inp, gt in pairs():
        m = mask_from_pair(inp, pil_gray(gt))
        assert np.array_equal(inp[~m], pil_gray(gt)[~m])
        assert ndimage.label(m)[1] == 1 and 0.009 <= m.mean() <= 0.16
        assert len(np.unique(inp[m])) == 1 and inp[m][0] <= 100


def test_rule_detector_and_gray_copy_score():
    for inp, gt in pairs():
        true = mask_from_pair(inp, pil_gray(gt))
        assert mask_iou_f1(true, rule_mask(inp))[0] > 0.98
        s = score(gt, np.repeat(inp[..., None], 3, -1), true)
        assert s["C"] < 0.1 and s["M"] < 0.2 and s["S"] > 0.8
        assert score(gt, gt, true)["score"] == pytest.approx(1.0)
