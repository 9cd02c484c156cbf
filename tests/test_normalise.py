"""A faded print's contrast, restored on request (issue 29, item 4): off by default, measured."""
import io

import numpy as np
from PIL import Image

from pipeline.color import pil_gray
from stages.processors import stretch_contrast
from tests.conftest import colourful


def _faded(h=64, w=80, seed=0, lo=70, hi=170):
    g = pil_gray(colourful(h, w, seed)).astype(np.float32)
    g = (g - g.min()) / max(1.0, float(np.ptp(g)))
    return np.rint(lo + (hi - lo) * g).astype(np.uint8)


def test_stretch_spreads_a_faded_gray_and_leaves_a_full_one_alone():
    faded = _faded()
    out = stretch_contrast(faded)
    assert np.ptp(faded) <= 100 and np.ptp(out) >= 250
    assert np.all(np.diff(out.ravel()[np.argsort(faded, axis=None)].astype(int)) >= 0)  # tone order kept
    full = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    assert np.array_equal(stretch_contrast(full), full)
    damaged = faded.copy()
    damaged[:, :10] = 255                                  # white damage must not set the white point
    excl = np.zeros(faded.shape, bool)
    excl[:, :10] = True
    assert np.array_equal(stretch_contrast(damaged, excl)[:, 10:], stretch_contrast(faded[:, 10:]))


def test_restore_normalises_only_on_request(tiny_pipeline, tmp_path):
    faded = _faded()
    mask = np.zeros(faded.shape, bool)
    mask[20:30, 30:50] = True
    plain = tiny_pipeline.restore(faded, mask=mask, return_intermediates=True)
    spread = tiny_pipeline.restore(faded, mask=mask, return_intermediates=True, normalise=True)
    assert np.array_equal(np.asarray(plain.gray)[~mask], faded[~mask])              # off: the input's gray
    g = np.asarray(spread.gray)
    assert np.ptp(g[~mask]) >= 250 and np.abs(np.asarray(spread.image.convert("L"), np.int16) - g).max() <= 1
    colour = colourful(64, 80, 3)
    kept = tiny_pipeline.restore(colour, mask=mask, normalise=True)             # a colour photo: kept as it is
    assert np.abs(np.asarray(kept, np.int16) - colour)[~mask].max() <= 2

    from pipeline import restore
    Image.fromarray(faded).save(tmp_path / "f.png")
    d = tmp_path / "pipe"
    tiny_pipeline.save(d)
    assert restore.main([str(tmp_path / "f.png"), "--checkpoint", str(d), "--out", str(tmp_path / "o"),
                         "--normalise", "--save-intermediates", "--no-progress"]) == 0
    assert np.ptp(np.asarray(Image.open(tmp_path / "o" / "f_gray.png"))) >= 250


def test_the_api_takes_normalise(tiny_pipeline):
    from fastapi.testclient import TestClient

    from pipeline.app import create_app
    client = TestClient(create_app(tiny_pipeline, max_upload_mb=1))
    buf = io.BytesIO()
    Image.fromarray(_faded()).save(buf, format="PNG")
    outs = {}
    for flag in ("false", "true"):
        r = client.post("/api/restore", files={"image": ("f.png", buf.getvalue())}, data={"normalise": flag})
        assert r.status_code == 200
        outs[flag] = np.asarray(Image.open(io.BytesIO(r.content)).convert("L"))
    assert np.ptp(outs["true"]) > np.ptp(outs["false"]) + 100
