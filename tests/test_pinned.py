"""The shipped demo's restorations, pinned: refactors must not change what a user gets.

``tests/pinned/*`` were written by ``tests/pinned/make_pinned.py`` (torch fp32, before the
issue-16 refactor) and are re-pinned only when the shipped weights change. On the machine that
pinned them the results are bit-identical; another CPU's fp32 kernels may round a few pixels
differently, so gray and colour may differ by ≤ 2 levels on ≤ 0.5 % of pixels, never more.
"""
import numpy as np
import pytest
from PIL import Image

from tests.pinned.make_pinned import HERE, SAMPLES, inputs, restore_all


@pytest.fixture(scope="module")
def restored():
    return restore_all()


def test_inputs_are_the_pinned_ones():
    for name, gray in inputs():
        assert np.array_equal(gray, np.asarray(Image.open(HERE / f"{name}_input.png")))


@pytest.mark.parametrize("i", range(len(SAMPLES)))
def test_restorations_match_the_pinned_ones(restored, i):
    name, _, r = restored[i]
    assert np.array_equal(np.asarray(r.mask), np.asarray(Image.open(HERE / f"{name}_mask.png")))
    for part in ("gray", "image"):
        got = np.asarray(getattr(r, part), np.int16)
        want = np.asarray(Image.open(HERE / f"{name}_{part}.png"), np.int16)
        assert got.shape == want.shape
        diff = np.abs(got - want)
        assert diff.max() <= 2 and (diff > 0).mean() <= 0.005, (name, part, diff.max(), (diff > 0).mean())
