"""The web app: its HTTP API (FastAPI TestClient, tiny networks) and, where a browser exists, the
page itself in a real headless Chromium (Playwright driving the system's browser)."""
import io
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.color import pil_gray
from pipeline.damage import apply_damage, random_damage
from tests.conftest import colourful, tiny

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _damaged(seed=0, h=64, w=80):
    return apply_damage(pil_gray(colourful(h, w, seed)), random_damage(h, w, np.random.default_rng(seed)))


@pytest.fixture(scope="module")
def client(tiny_pipeline):
    from fastapi.testclient import TestClient

    from pipeline.app import create_app
    return TestClient(create_app(tiny_pipeline, max_upload_mb=1))


def test_page_is_served_and_needs_nothing_from_outside(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas id=\"overlay\"" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no CDN, fonts or analytics
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load a CDN script


def test_restore_returns_a_png_that_keeps_the_gray_outside_the_mask(client):
    gray = _damaged()
    mask = np.zeros_like(gray)
    mask[10:30, 20:50] = 255
    r = client.post("/api/restore", files={"image": ("a.png", _png(gray)), "mask": ("m.png", _png(mask))})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(r.content))
    assert out.mode == "RGB" and out.size == (80, 64)
    lum = np.asarray(out.convert("L"), np.int16)
    assert np.abs(lum - gray)[mask == 0].max() <= 1


def test_full_restore_and_detect_give_the_mask_and_the_inpainted_gray(client):
    gray = _damaged(1)
    r = client.post("/api/restore/full", files={"image": ("b.jpg", _png(gray))}, data={"damage": "shape"})
    assert r.status_code == 200
    body = r.json()
    assert body["image"].startswith("data:image/png;base64,") and 0 <= body["damaged_fraction"] <= 1
    d = client.post("/api/detect", files={"image": ("b.png", _png(gray))})
    assert d.status_code == 200 and Image.open(io.BytesIO(d.content)).size == (80, 64)


@pytest.mark.parametrize("files,data,code,msg", [
    ({"image": ("x.png", b"not an image")}, {}, 400, "image: not an image file"),
    ({"image": ("x.png", b"")}, {}, 400, "image: empty upload"),
    ({"image": ("x.png", _png(np.zeros((64, 80), np.uint8))), "mask": ("m.png", _png(np.zeros((8, 8), np.uint8)))},
     {}, 400, "mask upload: mask is 8x8, the image is 80x64"),
    ({"image": ("x.png", _png(np.zeros((64, 80), np.uint8)))}, {"saturation": "5"}, 400, "saturation"),
    ({"image": ("x.png", _png(np.zeros((64, 80), np.uint8)))}, {"damage": "fire"}, 400, "damage: must be one of"),
    ({"image": ("x.png", np.random.default_rng(0).integers(0, 255, 1_200_000, dtype=np.uint8).tobytes())},
     {}, 413, "over the 1 MB limit"),
])
def test_a_bad_upload_is_one_4xx_line_and_the_server_goes_on(client, files, data, code, msg):
    r = client.post("/api/restore", files=files, data=data)
    assert r.status_code == code and msg in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert client.post("/api/restore", files={"image": ("ok.png", _png(_damaged()))}).status_code == 200


def test_a_decompression_bomb_is_refused(client, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = client.post("/api/restore", files={"image": ("big.png", _png(np.zeros((100, 100), np.uint8)))})
    assert r.status_code == 400 and "too large" in r.json()["detail"]


def test_reference_photos_give_the_hole_its_true_content(client):
    import base64

    from pipeline.data import SAMPLES_DIR
    truth = np.asarray(Image.open(sorted(SAMPLES_DIR.glob("*.jpg"))[2]).convert("RGB"))[:256, 64:320]
    gray, mask = pil_gray(truth).copy(), np.zeros((256, 256), np.uint8)
    mask[60:100, 70:130] = 255
    gray[mask > 0] = 30
    files = [("image", ("x.png", _png(gray))), ("mask", ("m.png", _png(mask))),
             ("references", ("same.png", _png(truth))), ("references", ("other.png", _png(colourful(64, 64, 3))))]
    out = client.post("/api/restore/full", files=files)
    assert out.status_code == 200
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(out.json()["gray"].split(",")[1]))))
    assert np.array_equal(got, pil_gray(truth))
    plain = client.post("/api/restore/full", files=files[:2]).json()["gray"]
    guess = np.asarray(Image.open(io.BytesIO(base64.b64decode(plain.split(",")[1]))))
    assert not np.array_equal(guess[mask > 0], pil_gray(truth)[mask > 0])  # without them: a guess


def test_two_requests_at_once_do_not_mix(client):
    images = [_damaged(s) for s in (3, 4)]
    want = [client.post("/api/restore", files={"image": ("i.png", _png(g))}, data={"saturation": str(s)}).content
            for g, s in zip(images, (0.2, 1.2))]
    got = [None, None]

    def run(i, s):
        got[i] = client.post("/api/restore", files={"image": ("i.png", _png(images[i]))}, data={"saturation": str(s)}).content
    for _ in range(2):
        threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate((0.2, 1.2))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert got == want


# --------------------------------------------------------------------------- a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pipeline):
    """``python -m pipeline.app`` as users start it, on a free port, with a tiny pipeline."""
    from pipeline import Pipeline
    from stages import Colorizer
    root = tmp_path_factory.mktemp("app")
    col = tiny(Colorizer, hints=True)  # with hint channels: the page offers colour hints
    with torch.no_grad():  # ... that change the colour, as training makes them
        next(m for m in col.net.modules() if isinstance(m, torch.nn.Conv2d)).weight[:, 1:] += 0.5
    Pipeline(mask=tiny_pipeline.mask, inpaint=tiny_pipeline.inpaint, colorize=col).save(root / "pipe")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "pipeline.app", "--checkpoint", str(root / "pipe"), "--port", str(port), "--no-warm-up"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    assert f"http://127.0.0.1:{port}/" in line, line
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/", root
    p.terminate()
    p.wait(timeout=20)
    p.stdout.close()


def _stroke(page, start, end):
    """One brush stroke over the damage overlay, from ``start`` to ``end`` (fractions of its size)."""
    box = page.locator("#overlay").bounding_box()
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=8)
    page.mouse.up()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_the_page_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = server
    gray = _damaged(5, 96, 128)
    src, colour_src = tmp_path / "old photo.png", tmp_path / "colour print.png"
    Image.fromarray(gray).save(src)
    colour = colourful(96, 128, 7).astype(np.int16)
    Image.fromarray(colour.astype(np.uint8)).save(colour_src)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800}, accept_downloads=True)
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
        page.add_init_script("""const send = window.fetch; window.sent = [];
            window.fetch = (u, o) => { if (o && o.body instanceof FormData) window.sent.push([...o.body.keys()]);
                                       return send(u, o); };""")
        page.goto(url)
        page.set_input_files("#file", str(src))
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
        _stroke(page, (0.1, 0.8), (0.45, 0.85))
        page.fill("#hint-colour", "#ff0000")
        page.click("#hint")
        box = page.locator("#overlay").bounding_box()
        page.mouse.click(box["x"] + 0.5 * box["width"], box["y"] + 0.3 * box["height"])
        page.click("#restore")
        page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
        # an untouched colour-strength slider sends none: the checkpoint's own (hint_saturation with hints)
        sent = page.evaluate("window.sent")[-1]
        assert "hints" in sent and "saturation" not in sent, sent
        with page.expect_download() as dl:
            page.click("#download")
        result = Image.open(dl.value.path())
        with page.expect_download() as dl_mask:
            page.click("#download-mask")
        mask = np.asarray(Image.open(dl_mask.value.path()).convert("L")) > 0
        same = page.request.post(url + "api/restore", multipart={  # the same restore without the colour hint
            "image": {"name": "a.png", "mimeType": "image/png", "buffer": src.read_bytes()},
            "mask": {"name": "m.png", "mimeType": "image/png", "buffer": Path(dl_mask.value.path()).read_bytes()}})
        unhinted = np.asarray(Image.open(io.BytesIO(same.body())).convert("RGB"), np.int16)
        page.set_input_files("#file", str(colour_src))                      # a colour photo, "auto"
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
        page.click("#clear")
        page.click("#restore")
        page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
        with page.expect_download() as dl:
            page.click("#download")
        kept = np.asarray(Image.open(dl.value.path()).convert("RGB"), np.int16)
        with page.expect_download() as dl_mask:
            page.click("#download-mask")
        kept_mask = np.asarray(Image.open(dl_mask.value.path()).convert("L")) > 0
        browser.close()
    assert result.mode == "RGB" and result.size == (128, 96)
    assert np.abs(np.asarray(result, np.int16) - unhinted).max() > 0  # the colour placed on the photo counted
    assert np.abs(kept - colour)[~np.asarray(kept_mask)].max() <= 2  # a colour photo keeps its colour
    painted = mask[int(0.8 * 96) - 2: int(0.85 * 96) + 3, int(0.1 * 128): int(0.45 * 128)]
    assert painted.mean() > 0.3  # the brush stroke is in the mask the server used
    lum = np.asarray(result.convert("L"), np.int16)
    assert np.abs(lum - gray)[~mask].max() <= 1  # gray unchanged outside the mask
    assert not outside, outside


def test_a_missing_field_is_one_line_and_the_page_has_an_icon(client):
    r = client.post("/api/restore", data={"damage": "auto"})
    assert r.status_code == 400 and r.json()["detail"] == "image: field required"
    assert client.get("/favicon.ico").status_code == 200


def test_a_too_large_photo_is_one_line_for_a_person(client, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = client.post("/api/restore", files={"image": ("big.png", _png(np.zeros((64, 80), np.uint8)))})
    detail = r.json()["detail"]
    assert r.status_code == 400 and "\n" not in detail and "--max-pixels" in detail and "PIL." not in detail


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_the_page_has_no_dead_ends_and_works_from_the_keyboard(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = server
    bad, good = tmp_path / "notimage.png", tmp_path / "photo.png"
    bad.write_text("not a picture")
    Image.fromarray(_damaged(6, 96, 128)).save(good)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(url)
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")           # the file chooser, by keyboard
        page.set_input_files("#file", str(bad))
        page.wait_for_function("document.body.dataset.state === 'error'", timeout=60_000)
        after_bad = (page.is_disabled("#restore"), page.inner_text("#status"), page.locator("#editor").is_hidden())
        page.set_input_files("#file", str(good))
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
        _stroke(page, (0.2, 0.3), (0.6, 0.35))
        painted = page.evaluate("maskFraction()")
        page.select_option("#damage", "shape")
        page.wait_for_timeout(500)
        kept, status = page.evaluate("maskFraction()"), page.inner_text("#status")
        icon = page.request.get(url + "favicon.ico").status
        browser.close()
    assert focused == "drop"
    assert after_bad[0] and after_bad[2]                     # Restore disabled, no empty card
    assert "notimage.png" in after_bad[1] and len(after_bad[1].strip().splitlines()) == 1
    assert painted > 0 and kept == painted and "kept" in status
    assert icon == 200
