"""One click on a crack selects it: ``/api/select`` and ``/api/detect`` with ``points`` and a
``sensitivity`` (FastAPI TestClient), restores that repair the clicked crack, and the page's "Select
a crack" tool in a real headless Chromium. The detector is a stand-in that sees bright pixels, more
surely the brighter they are (``scratch_probabilities`` patched on the tiny pipeline's stage), so
that the tests are fast and a threshold selects a known run of the crack."""
import io
import json
import shutil
import socket
import threading
import time
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
H, W, X, OTHER = 64, 96, 60, 20  # the photo; the clicked crack's column, and another crack's


def crack_photo() -> np.ndarray:
    """A gray photo with two bright vertical cracks: the one at ``X`` brightest at its middle and
    fading towards its ends (so a lower threshold selects more of it), another at ``OTHER``."""
    g = np.full((H, W), 90, np.uint8)
    y = np.arange(4, H - 4)
    g[4:H - 4, X - 1:X + 2] = (90 + 160 * (1 - np.abs(y - H / 2) / (H / 2)))[:, None].astype(np.uint8)
    g[4:H - 4, OTHER - 1:OTHER + 2] = 250
    return g


def sees_bright(gray, tile=None):  # the stand-in detector: probability rises with brightness over the paper's
    return np.clip((gray.astype(np.float32) - 90) / 160, 0, 1)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _mask(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L")) > 127


def _data_url(url: str) -> np.ndarray:
    import base64
    return _mask(base64.b64decode(url.split(",", 1)[1]))


@pytest.fixture(scope="module")
def pipe():
    from pipeline import Pipeline
    from stages import Colorizer, Inpainter, MaskDetector
    from tests.conftest import tiny
    p = Pipeline(mask=tiny(MaskDetector), inpaint=tiny(Inpainter), colorize=tiny(Colorizer))
    p._stages["mask"].scratch_probabilities = sees_bright
    return p


@pytest.fixture(scope="module")
def client(pipe):
    from fastapi.testclient import TestClient

    from pipeline.app import create_app
    return TestClient(create_app(pipe))


def _select(client, points, sensitivity=None, **data):
    data = {"points": json.dumps(points), **data}
    if sensitivity is not None:
        data["sensitivity"] = str(sensitivity)
    return client.post("/api/select", files={"image": ("p.png", _png(crack_photo()))}, data=data)


def test_a_click_on_a_crack_selects_that_crack_and_the_sensitivity_how_much_of_it(client, pipe):
    policy, threshold = pipe.damage_policy, pipe.damage_policy.select_threshold
    runs = {}
    for s in (0.2, 0.6, 1.0):
        r = _select(client, [[X, H // 2]], s)
        assert r.status_code == 200, r.text
        body = r.json()
        m = _data_url(body["mask"])
        runs[s] = m[:, X].sum()
        assert m[H // 2 - 5:H // 2 + 5, X].all()                 # the crack under the click
        assert not m[:, OTHER - 3:OTHER + 4].any()               # not the other crack
        assert not m[:, :X - 4].any() and not m[:, X + 5:].any()  # nothing across
        assert body["rule"] == "points" and body["why"].startswith("1 click(s) selected")
        assert f"{0.5 - 0.45 * s:.2f}" in body["why"] and abs(body["share"] - m.mean()) < 1e-6
    assert runs[0.2] < runs[0.6] < runs[1.0]  # more sensitive: more of the crack
    assert pipe.damage_policy is policy and policy.select_threshold == threshold  # the pipeline's own policy untouched
    both = _data_url(_select(client, [[X, H // 2], [OTHER, 10]], 0.6).json()["mask"])
    assert both[:, OTHER].sum() > H // 2 and both[:, X].sum() == runs[0.6]


def test_detect_adds_the_clicks_to_what_it_finds_and_says_why(client):
    r = client.post("/api/detect", files={"image": ("p.png", _png(crack_photo()))},
                    data={"damage": "shape", "points": json.dumps([[X, H // 2]]), "sensitivity": "0.6"})
    assert r.status_code == 200
    assert _mask(r.content)[H // 2, X]
    why = unquote(r.headers["X-Explain"])
    assert why.startswith("points: 1 click(s) selected") and "≥ 0.23" in why
    plain = client.post("/api/detect", files={"image": ("p.png", _png(crack_photo()))}, data={"damage": "shape"})
    assert unquote(plain.headers["X-Explain"]).startswith("shape: ")


def test_a_restore_repairs_the_clicked_crack_and_reports_it(client):
    img = {"image": ("p.png", _png(crack_photo()))}
    pts = json.dumps([[X, H // 2]])
    at = client.post("/api/restore/full", files=img, data={"damage": "none", "points": pts, "sensitivity": "1"}).json()
    lib = client.post("/api/restore/full", files=img, data={"damage": "none", "points": pts}).json()
    given = np.zeros((H, W), np.uint8)
    given[2:6, 2:6] = 255
    beside = client.post("/api/restore/full", files={**img, "mask": ("m.png", _png(given))},
                         data={"points": pts, "sensitivity": "1"}).json()
    for out in (at, lib, beside):
        m = _data_url(out["mask"])
        assert out["report"]["damage"] == "points" and m[H // 2 - 5:H // 2 + 5, X].all()
        assert not m[:, OTHER].any()
    assert "≥ 0.05" in at["report"]["damage_why"] and "no damage looked for" in at["report"]["damage_why"]
    assert _data_url(beside["mask"])[3, 3] and beside["report"]["damage_why"].endswith("a given mask")
    assert _data_url(at["mask"])[:, X].sum() > _data_url(lib["mask"])[:, X].sum()  # sensitivity 1 > the policy's


@pytest.mark.parametrize("points,sensitivity,msg", [
    ("[[60, 32", None, "points: not JSON (expected [[x, y], ...] in pixels of the image)"),
    ("[[60]]", None, "points: expected [[x, y], ...] in pixels of the image, got '[[60]]'"),
    ('{"x": 60}', None, "points: expected [[x, y], ...] in pixels of the image"),
    ('[["a", 3]]', None, "points: expected [[x, y], ...] in pixels of the image"),
    ("[[960, 3]]", None, "points: (960, 3) is outside the 96×64 image"),
    ("[]", None, "points: needs at least one click"),
    ("[[60, 32]]", "1.5", "sensitivity: must be within 0..1, got 1.5"),
    ("[[60, 32]]", "lots", "sensitivity: "),
])
def test_a_bad_points_or_sensitivity_value_is_one_line(client, pipe, points, sensitivity, msg):
    data = {"points": points, **({"sensitivity": sensitivity} if sensitivity else {})}
    for route in ("/api/select", "/api/restore"):
        if route == "/api/restore" and points == "[]":
            continue  # no clicks is a plain restore
        r = client.post(route, files={"image": ("p.png", _png(crack_photo()))}, data=data)
        detail = r.json()["detail"]
        assert r.status_code == 400 and detail.startswith(msg) and "\n" not in detail, (route, detail)
    assert client.get("/api/info").json()["sensitivity"] == round((0.5 - pipe.damage_policy.select_threshold) / 0.45, 2)


@pytest.fixture(scope="module")
def served(pipe):
    """The app around the stand-in pipeline, served by uvicorn in this process (the patch holds)."""
    uvicorn = pytest.importorskip("uvicorn")
    from pipeline.app import create_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(pipe), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    t.join(10)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_clicking_a_crack_in_the_page_adds_it_to_the_overlay_and_the_slider_says_how_much(served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    src = tmp_path / "cracked.png"
    Image.fromarray(crack_photo()).save(src)
    red = ("(() => { const d = $('overlay').getContext('2d').getImageData(0, 0, state.w, state.h).data; let n = 0;"
           f" for (let y = 0; y < state.h; y++) if (d[4 * (y * state.w + {X}) + 3] > 0) n++; return n; }})()")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(served)
        page.set_input_files("#file", str(src))
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
        page.click("#brush")
        page.click("#clear")  # whatever the detector found: none, so the overlay is the selection's alone
        before = page.evaluate(red)
        page.click("#select-crack")
        page.fill("#sensitivity", "0.6")
        box = page.locator("#overlay").bounding_box()
        with page.expect_response("**/api/select"):
            page.mouse.click(box["x"] + (X + 0.5) / W * box["width"], box["y"] + (H / 2 + 0.5) / H * box["height"])
        page.wait_for_function("sel.why && !document.body.dataset.selecting")
        clicked, why, share = page.evaluate(red), page.inner_text("#why"), page.evaluate("maskFraction()")
        with page.expect_response("**/api/select"):
            page.fill("#sensitivity", "1")  # input and change: the clicks so far, again
        page.wait_for_function("!document.body.dataset.selecting")
        page.wait_for_timeout(200)
        more = page.evaluate(red)
        with page.expect_response("**/api/select"):
            page.fill("#sensitivity", "0.2")
        page.wait_for_function("!document.body.dataset.selecting")
        page.wait_for_timeout(200)
        less = page.evaluate(red)
        page.click("#restore")
        page.wait_for_function("document.body.dataset.state === 'done'", timeout=60_000)
        report = page.inner_text("#report")
        page.click("#undo-click")
        page.wait_for_timeout(300)
        undone, undo_disabled = page.evaluate("maskFraction()"), page.is_disabled("#undo-click")
        with page.expect_response("**/api/select"):  # a click on bare paper: says so, and what to try
            page.mouse.click(box["x"] + 85.5 / W * box["width"], box["y"] + 10.5 / H * box["height"])
        page.wait_for_function("!document.body.dataset.selecting && sel.why")
        bare = page.inner_text("#status")
        browser.close()
    assert before == 0 and clicked > 20, (before, clicked)       # red along the clicked crack
    assert less < clicked < more, (less, clicked, more)           # the slider: more or less of it
    assert "1 click(s) selected" in why and share < 0.05
    assert "Why: points: 1 click(s) selected" in report and "where you clicked" in report, report
    assert undone == 0 and undo_disabled
    assert "found little" in bare and "sensitivity slider" in bare, bare
