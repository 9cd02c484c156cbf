"""The shipped demo's restorations, pinned: refactors must not change what a user gets.

``tests/pinned/*`` were written by ``tests/pinned/make_pinned.py`` (torch fp32) and are re-pinned
only when the shipped weights or the ``competition`` preset's settings change. On the machine that
pinned them the results are bit-identical; another CPU's fp32 kernels may round a few pixels
differently, so gray and colour may differ by ≤ 2 levels on ≤ 0.5 % of pixels, never more.
Every case is pinned under the ``competition`` preset; under ``auto`` a competition input must
restore the same.
"""
import numpy as np
import pytest
from PIL import Image

from tests.pinned.make_pinned import CASES, HERE, SAMPLES, cases, inputs, restore_all

pytestmark = pytest.mark.slow
NAMES = [n.split(".")[0] for n in SAMPLES] + list(CASES)


@pytest.fixture(scope="module")
def restored():
    return {name: r for name, _, r in restore_all(preset="competition")}


def _same(r, name):
    assert np.array_equal(np.asarray(r.mask), np.asarray(Image.open(HERE / f"{name}_mask.png")))
    for part in ("gray", "image"):
        got = np.asarray(getattr(r, part), np.int16)
        want = np.asarray(Image.open(HERE / f"{name}_{part}.png"), np.int16)
        assert got.shape == want.shape
        diff = np.abs(got - want)
        assert diff.max() <= 2 and (diff > 0).mean() <= 0.005, (name, part, diff.max(), (diff > 0).mean())


def test_inputs_are_the_pinned_ones():
    for name, img in inputs() + [(n, i) for n, i, _ in cases()]:
        assert np.array_equal(img, np.asarray(Image.open(HERE / f"{name}_input.png"))), name


@pytest.mark.parametrize("name", NAMES)
def test_competition_preset_restores_the_pinned_ones(restored, name):
    _same(restored[name], name)
    assert restored[name].report.preset == "competition"


def test_auto_restores_competition_inputs_as_pinned():
    from pipeline import Pipeline
    pipe = Pipeline.load("demo", backend="torch", precision="fp32")
    for name, gray in inputs():
        r = pipe.restore(gray, return_intermediates=True)
        assert r.report.preset == "competition", r.report
        _same(r, name)
