"""Colour hints (issue 28): the colorizer's optional hint channels, from training to the CLI and the API."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from stages import Colorizer, Hints
from stages.color import rgb_to_lab
from tests.conftest import TINY, colourful, tiny

TINY_ENCODER = TINY["encoder_name"]


def test_hints_parse_from_people_and_render_where_they_are():
    h = Hints.of([(10, 5, "#ff0000"), ("3", "4", (0, 128, 255))])
    t = h.render(20, 30)
    assert t.shape == (3, 20, 30) and t[2, 5, 10] == 1 and t[2, 15, 25] == 0
    assert t[0, 5, 10] * 110 == pytest.approx(80.1, abs=1) and t[1, 5, 10] * 110 == pytest.approx(67.2, abs=1)
    assert Hints.of([]) is None and Hints.of(None) is None
    with pytest.raises(ValueError, match="'#12'"):
        Hints.of([(1, 2, "#12")])
    with pytest.raises(ValueError, match="0-255"):
        Hints.of([(1, 2, (300, 0, 0))])


def test_hint_channels_start_at_zero_and_learn_from_sampled_hints():
    col = tiny(Colorizer, hints=True, hint_none=0.0, hint_dense=0.5)
    gray = torch.from_numpy(np.array(Image.fromarray(colourful(64, 64, 1)).convert("L")))[None, None] / 255
    hints = Hints.of([(20, 20, "#00ff00"), (40, 40, "#ff00ff")]).render(64, 64)[None]
    assert torch.equal(col(gray), col(gray, hints))  # zero weights: the network is as without hint channels
    rgb = torch.from_numpy(colourful(64, 64, 2)).permute(2, 0, 1)[None].float().div(255).repeat(4, 1, 1, 1)
    sampled = col.sample_hints(rgb)
    on = sampled[:, 2] > 0
    assert on.any(1).any(1).all()  # hint_none 0: every image gets hints
    ab = rgb_to_lab(rgb)[:, 1:] / 110
    dense = on.float().mean((1, 2)) > 0.03
    assert torch.allclose(sampled[:, :2][dense[:, None, None, None].expand(-1, 2, 64, 64) & on[:, None]],
                          ab[dense[:, None, None, None].expand(-1, 2, 64, 64) & on[:, None]], atol=1e-5)
    col.train()
    batch = {"target_gray": rgb.mean(1, keepdim=True), "rgb": rgb}
    col.loss(batch)["loss"].backward()
    first = next(m for m in col.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.grad[:, 1:].abs().sum() > 0  # the hints reach the network in training


@pytest.mark.slow  # trains a hint branch
def test_a_hint_branch_trains_alone_and_leaves_the_colour_without_hints_bit_identical(tmp_path):
    from pipeline.training.state import _init_from
    base = tiny(Colorizer, prior_shift=0.05)  # decoding reads the prior
    torch.nn.init.uniform_(base.prior)  # a prior of its own: training the branch must not re-estimate it
    base.save(tmp_path / "base")
    col = tiny(Colorizer, prior_shift=0.05, hint_branch=TINY_ENCODER, hint_none=0.0)
    _init_from(col, tmp_path / "base")
    rgb = torch.from_numpy(colourful(64, 64, 2)).permute(2, 0, 1)[None].float().div(255).repeat(4, 1, 1, 1)
    batch = {"target_gray": rgb.mean(1, keepdim=True), "rgb": rgb}
    col.prepare([batch], max_batches=5)
    col.train()
    assert not col.net.training and col.hint_net.training  # the base keeps its norm statistics
    opt = torch.optim.SGD([p for p in col.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        col.loss(batch)["loss"].backward()
        assert all(p.grad is None for p in col.net.parameters())
        opt.step()
    col.eval().save(tmp_path / "branch")
    col = Colorizer.load(tmp_path / "branch")
    gray = np.asarray(Image.fromarray(colourful(64, 64, 3)).convert("L"))
    hints = [Hints.of([(20, 20, "#00ff00"), (40, 40, "#ff00ff")])]
    assert np.array_equal(base.colorize([gray] * 2), col.colorize([gray] * 2))  # no hints: the base's colour
    mixed = col.colorize([gray, gray], hints=[None, hints[0]])
    assert np.array_equal(mixed[0], base.colorize([gray])[0])  # an image without hints in a hinted batch too
    g = torch.from_numpy(gray.copy())[None, None] / 255
    assert not torch.equal(col(g, hints[0].render(64, 64)[None]), base(g))  # the trained branch changes the logits
    with pytest.raises(ValueError, match="exclude each other"):
        tiny(Colorizer, hints=True, hint_branch=TINY_ENCODER)


def test_hint_saturation_applies_to_the_images_with_hints_only():
    col = tiny(Colorizer, saturation=0.8)
    gray = np.asarray(Image.fromarray(colourful(64, 64, 4)).convert("L"))
    hint = Hints.of([(5, 5, "#808080")])  # gray at a corner: its correction hardly reaches the centre
    before = col.colorize([gray, gray], hints=[None, hint])
    col.set("hint_saturation", 0.0)
    after = col.colorize([gray, gray], hints=[None, hint])
    assert np.array_equal(before[0], after[0])  # no hints: the saturation as before
    lab = rgb_to_lab(torch.from_numpy(np.stack([before[1], after[1]])).permute(0, 3, 1, 2).float() / 255)
    chroma = lab[:, 1:, 40:, 40:].norm(dim=1).mean((1, 2))
    assert chroma[1] < 0.5 * chroma[0]  # with hints: the network's colour at hint_saturation


def test_any_colorizer_spreads_hints_to_similar_pixels_near_them(tiny_pipeline):
    gray = np.full((64, 96), 90, np.uint8)
    gray[:, 48:] = 200  # two flat halves: a hint on the left stays on the left
    none = np.asarray(tiny_pipeline.restore(gray, mask=np.zeros(gray.shape, bool)), np.int16)
    hinted = np.asarray(tiny_pipeline.restore(gray, mask=np.zeros(gray.shape, bool), hints=[(10, 30, "#2040c0")]),
                        np.int16)
    change = np.abs(hinted - none).max(-1)
    assert change[30, 10] > 10 and change[:, 60:].max() <= 1  # near and of its gray: changed; across the edge: not
    b = hinted[30, 10]
    assert b[2] > b[0]  # blue where the blue hint is
    off = np.asarray(tiny_pipeline.restore(gray, mask=np.zeros(gray.shape, bool), hints=[(500, 30, "#2040c0")]))
    assert np.array_equal(off, none)  # a point off the image counts nowhere


def test_init_from_widens_the_first_convolution_with_zeros(tmp_path):
    from omegaconf import OmegaConf

    from pipeline.training.state import _init_from
    src = tiny(Colorizer)
    src.save(tmp_path / "col")
    dst = tiny(Colorizer, hints=True)
    torch.nn.init.normal_(next(m for m in dst.net.modules() if isinstance(m, torch.nn.Conv2d)).weight)
    _init_from(dst, tmp_path / "col")
    gray = np.asarray(Image.fromarray(colourful(64, 64, 3)).convert("L"))
    assert np.array_equal(src.colorize([gray]), dst.colorize([gray]))
    assert OmegaConf.create(dict(dst.config))["hints"] is True


def test_hints_change_the_colour_where_they_are_through_pipeline_cli_and_api(tmp_path, tiny_pipeline, capsys):
    from fastapi.testclient import TestClient

    from pipeline import Pipeline
    from pipeline.app import create_app
    from pipeline.restore import main as restore_main
    col = tiny(Colorizer, hints=True)
    with torch.no_grad():  # a hint channel that matters, as training makes it
        next(m for m in col.net.modules() if isinstance(m, torch.nn.Conv2d)).weight[:, 1:] += 0.5
    pipe = Pipeline(mask=tiny_pipeline.mask, inpaint=tiny_pipeline.inpaint, colorize=col)
    gray = np.asarray(Image.fromarray(colourful(64, 64, 4)).convert("L"))
    none = np.asarray(pipe.restore(gray, mask=np.zeros((64, 64), bool)))
    hinted = np.asarray(pipe.restore(gray, mask=np.zeros((64, 64), bool), hints=[(32, 32, "#00ff00")]))
    assert np.abs(none.astype(int) - hinted).max() > 0
    assert np.abs(np.asarray(Image.fromarray(hinted).convert("L"), int) - gray).max() <= 1  # the gray stays
    pipe.save(tmp_path / "pipe")
    Image.fromarray(gray).save(tmp_path / "in.png")
    args = [str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "pipe"), "--no-progress", "--out"]
    assert restore_main([*args, str(tmp_path / "out"), "--hint", "32,32,#00ff00", "--hint", "5,5,0,0,255"]) == 0
    assert np.abs(np.asarray(Image.open(tmp_path / "out" / "in.png"), int) - none).max() > 0
    assert restore_main([*args, str(tmp_path / "bad"), "--hint", "32,32"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --hint 32,32: expected")
    client = TestClient(create_app(pipe))
    assert client.get("/api/info").json()["hint_channels"] is True
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")
    ok = client.post("/api/restore", files={"image": ("a.png", buf.getvalue())},
                     data={"hints": '[[32, 32, "#00ff00"]]', "damage": "shape"})
    bad = client.post("/api/restore", files={"image": ("a.png", buf.getvalue())}, data={"hints": "[[32, 32"})
    assert ok.status_code == 200 and bad.status_code == 400 and "hints: not JSON" in bad.json()["detail"]
