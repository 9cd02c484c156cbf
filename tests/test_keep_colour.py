"""A colour photo keeps its own colour (issue 30): repaired where damaged, unchanged elsewhere."""
import io

import numpy as np
import pytest
from PIL import Image

from stages.processors import own_colour
from tests.conftest import colourful


def _toned(rgb: np.ndarray, tint=(1.07, 0.74, 0.43)) -> np.ndarray:
    """A sepia (or other single-tint) print of ``rgb``: one colour per gray level."""
    g = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)[..., None] / 255
    return np.clip((g * (1 - 0.6 * (1 - g)) * np.array(tint) + 0.6 * g * (1 - g)) * 255, 0, 255).astype(np.uint8)


def _damaged_colour(h=64, w=80, seed=0):
    rgb = colourful(h, w, seed)
    mask = np.zeros((h, w), bool)
    mask[20:40, 25:55] = True
    out = rgb.copy()
    out[mask] = 40
    return rgb, out, mask


def test_own_colour_tells_a_colour_photo_from_a_gray_or_toned_print():
    rgb = colourful(96, 128, 1)
    assert own_colour(rgb)
    assert not own_colour(np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, -1))
    assert not own_colour(_toned(rgb)) and not own_colour(_toned(rgb, (0.55, 0.8, 1.0)))


def test_a_colour_photo_keeps_its_colour_outside_the_damage(tiny_pipeline):
    _, damaged, mask = _damaged_colour()
    kept = np.asarray(tiny_pipeline.restore(damaged, mask=mask), np.int16)
    assert np.abs(kept - damaged)[~mask].max() <= 2          # outside: the photo's own colour
    assert np.abs(kept - damaged)[mask].max() > 10           # inside: repaired
    recoloured = np.asarray(tiny_pipeline.restore(damaged, mask=mask, keep_colour=False), np.int16)
    assert np.abs(recoloured - damaged)[~mask].max() > 2     # recolour: coloured anew from the gray
    gray = np.asarray(Image.fromarray(damaged).convert("L"))
    assert np.array_equal(np.asarray(tiny_pipeline.restore(gray, mask=mask)), recoloured)  # gray in: as before
    toned = _toned(damaged)  # the competition preset colours a toned print from its gray (photo keeps its tone)
    assert np.array_equal(np.asarray(tiny_pipeline.restore(toned, mask=mask, preset="competition")),
                          np.asarray(tiny_pipeline.restore(toned, mask=mask, keep_colour=False, preset="competition")))


def test_cli_and_api_keep_or_recolour(tmp_path, tiny_pipeline):
    from fastapi.testclient import TestClient

    from pipeline.app import create_app
    from pipeline.restore import main as restore_main
    _, damaged, mask = _damaged_colour(seed=2)
    Image.fromarray(damaged).save(tmp_path / "in.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    tiny_pipeline.save(tmp_path / "pipe")
    outs = {}
    for choice in ("auto", "recolour"):
        assert restore_main([str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--checkpoint",
                             str(tmp_path / "pipe"), "--out", str(tmp_path / choice), "--colour", choice,
                             "--no-progress"]) == 0
        outs[choice] = np.asarray(Image.open(tmp_path / choice / "in.png"), np.int16)
    assert np.abs(outs["auto"] - damaged)[~mask].max() <= 2 < np.abs(outs["recolour"] - damaged)[~mask].max()
    client = TestClient(create_app(tiny_pipeline))
    files = {"image": ("a.png", (tmp_path / "in.png").read_bytes()), "mask": ("m.png", (tmp_path / "mask.png").read_bytes())}
    r = client.post("/api/restore", files=files, data={"colour": "keep"})
    assert r.status_code == 200
    assert np.abs(np.asarray(Image.open(io.BytesIO(r.content)), np.int16) - damaged)[~mask].max() <= 2
    bad = client.post("/api/restore", files=files, data={"colour": "sepia"})
    assert bad.status_code == 400 and bad.json()["detail"] == "colour: must be one of auto, keep, recolour, got 'sepia'"


@pytest.mark.parametrize("keep", [True, None])
def test_a_gray_photo_is_coloured_whatever_keep_colour_says(tiny_pipeline, keep):
    gray = np.asarray(Image.fromarray(_damaged_colour()[1]).convert("L"))
    out = np.asarray(tiny_pipeline.restore(gray, keep_colour=keep))
    assert np.array_equal(out, np.asarray(tiny_pipeline.restore(gray, keep_colour=False)))
