"""The app's API around one restore: the preset and report in the JSON, both results of a toned
print, tokens and progress lines, the warm-up, the upload limit, the zip and the page's script."""
import base64
import io
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.color import pil_gray
from tests.conftest import colourful

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def _png(a: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


def _image(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",")[1]))).convert("RGB"), np.int16)


def sepia(h=96, w=128, seed=1) -> np.ndarray:
    """A sepia-toned print: one warm tint per gray level."""
    gray = pil_gray(colourful(h, w, seed)).astype(np.float32)
    return np.clip(gray[..., None] * np.array([1.0, 0.84, 0.64]) + np.array([18, 8, 0]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def client(tiny_pipeline):
    from fastapi.testclient import TestClient

    from pipeline.app import create_app
    return TestClient(create_app(tiny_pipeline, max_upload_mb=1))


def _fresh(tiny_pipeline):
    """A Pipeline of the tiny stages, of its own (a test may slow its methods down)."""
    from pipeline import Pipeline
    return Pipeline(mask=tiny_pipeline.mask, inpaint=tiny_pipeline.inpaint, colorize=tiny_pipeline.colorize)


def test_the_preset_is_checked_passed_on_and_reported(client):
    img = {"image": ("a.png", _png(pil_gray(colourful(64, 80, 2))))}
    bad = client.post("/api/restore/full", files=img, data={"preset": "fancy"})
    assert bad.status_code == 400
    assert bad.json()["detail"] == "preset: must be one of auto, competition, photo, got 'fancy'"
    for preset in ("competition", "photo"):
        body = client.post("/api/restore/full", files=img, data={"preset": preset}).json()
        report = body["report"]
        assert report["preset"] == preset and "was asked for" in report["preset_why"]
        assert set(report) >= {"damage", "damage_share", "colour", "reference", "seconds"}
        assert report["reference"] is None and "colourised" not in body  # no references given; a gray photo


def test_a_toned_print_comes_back_in_its_tone_and_colourised_in_one_request(client):
    toned = sepia()
    mask = np.zeros(toned.shape[:2], np.uint8)
    mask[30:50, 40:90] = 255
    files = {"image": ("sepia.png", _png(toned)), "mask": ("m.png", _png(mask))}
    body = client.post("/api/restore/full", files=files, data={"colour": "auto", "preset": "photo"}).json()
    assert "own tone" in body["report"]["colour"] and "colourised" in body
    own, coloured = _image(body["image"]), _image(body["colourised"])
    outside = mask == 0
    assert np.abs(own - toned)[outside].max() <= 2                     # its own tone, untouched outside the damage
    assert np.abs(coloured - toned)[outside].mean() > 3                # ... and a colourised one beside it
    assert body["colourised_report"]["colour"].startswith("colourised")
    for choice in ("keep", "recolour"):                                # a choice made: one result
        assert "colourised" not in client.post("/api/restore/full", files=files, data={"colour": choice}).json()


def test_each_answer_carries_its_requests_token(client):
    img = {"image": ("a.png", _png(pil_gray(colourful(48, 64, 3))))}
    assert client.post("/api/restore/full", files=img, data={"token": "t-1"}).json()["token"] == "t-1"
    assert client.post("/api/restore", files=img, data={"token": "t-2"}).headers["x-token"] == "t-2"
    assert client.post("/api/detect", files=img, data={"token": "t-3"}).headers["x-token"] == "t-3"
    assert client.get("/api/progress/t-3").json()["stage"] == "Done."


def test_progress_says_which_stage_and_that_a_second_photo_waits(tiny_pipeline):
    from fastapi.testclient import TestClient

    from pipeline.app import WAITING, create_app
    pipe, go = _fresh(tiny_pipeline), threading.Event()
    detect = pipe.detect
    pipe.detect = lambda gray, damage=None, **kw: (go.wait(10), detect(gray, damage, **kw))[1]
    client = TestClient(create_app(pipe))
    img = {"image": ("a.png", _png(pil_gray(colourful(48, 64, 3))))}
    codes = []
    threads = [threading.Thread(target=lambda t=t: codes.append(
        client.post("/api/detect", files=img, data={"token": t}).status_code)) for t in ("first", "second")]
    stages = {}
    try:
        threads[0].start()
        stages["first"] = _wait_for(client, "first", lambda s: s and s.startswith("Looking for damage in 64×48"))
        threads[1].start()
        stages["second"] = _wait_for(client, "second", lambda s: s == WAITING)
    finally:
        go.set()
        [t.join(20) for t in threads if t.ident]
    assert stages == {"first": "Looking for damage in 64×48 pixels…", "second": WAITING}
    assert codes == [200, 200] and client.get("/api/progress/second").json()["stage"] == "Done."


def _wait_for(client, token, ok, seconds=10.0):
    end, stage = time.monotonic() + seconds, None
    while time.monotonic() < end:
        stage = client.get(f"/api/progress/{token}").json()["stage"]
        if ok(stage):
            return stage
        time.sleep(0.02)
    return stage


def test_the_warm_up_runs_in_the_background_and_says_so(tiny_pipeline):
    from fastapi.testclient import TestClient

    from pipeline.app import WARMING, create_app
    pipe, go, ran = _fresh(tiny_pipeline), threading.Event(), []
    restore = pipe.restore
    pipe.restore = lambda img, **kw: (ran.append(kw.get("mask") is not None), go.wait(10), restore(img, **kw))[2]
    client = TestClient(create_app(pipe, warm_up=True))
    cold = client.get("/api/info").json()["ready"]
    result = []
    t = threading.Thread(target=lambda: result.append(client.post(
        "/api/detect", files={"image": ("a.png", _png(pil_gray(colourful(48, 64, 3))))}, data={"token": "w"})))
    t.start()
    waiting = _wait_for(client, "w", lambda s: s == WARMING)
    go.set()
    t.join(20)
    end = time.monotonic() + 10
    while not client.get("/api/info").json()["ready"] and time.monotonic() < end:
        time.sleep(0.02)
    assert cold is False and waiting == WARMING and result[0].status_code == 200
    assert ran == [False, True] and client.get("/api/info").json()["ready"] is True  # a photo, then a competition input
    assert create_app(pipe).state.restorer.ready.is_set()  # off (as in tests): nothing to wait for


def test_the_upload_limit_is_200_mb_and_its_refusal_names_the_option(client):
    import inspect

    from pipeline.app import create_app, main
    assert inspect.signature(create_app).parameters["max_upload_mb"].default == 200
    big = np.random.default_rng(0).integers(0, 255, 1_500_000, dtype=np.uint8).tobytes()
    r = client.post("/api/restore", files={"image": ("scan.tif", big)})
    detail = r.json()["detail"]
    assert r.status_code == 413 and "over the 1 MB limit" in detail and "--max-upload-mb 50" in detail
    assert detail.endswith(".") and "choose a smaller file" in detail and "\n" not in detail
    with pytest.raises(SystemExit):
        main(["--max-upload-mb", "x"])


def test_the_zip_keeps_names_in_utf8_and_suffixes_repeats(client):
    names = ["Großmutter 1952_restored.png", "same_restored.png", "same_restored.png", "Same_restored.png"]
    files = [("files", (n, _png(np.full((4, 4), 40 * i, np.uint8)))) for i, n in enumerate(names)]
    r = client.post("/api/zip", files=files)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert z.namelist() == ["Großmutter 1952_restored.png", "same_restored.png", "same_restored-2.png",
                            "Same_restored-3.png"]
    info = z.infolist()
    assert info[0].flag_bits & 0x800 and "Großmutter".encode() in r.content  # UTF-8 flag, UTF-8 bytes
    assert [z.read(n) for n in z.namelist()] == [f[1][1] for f in files]


def test_the_report_names_the_reference_that_matched_and_its_coverage(client):
    from pipeline.data import SAMPLES_DIR
    truth = np.asarray(Image.open(sorted(SAMPLES_DIR.glob("*.jpg"))[2]).convert("RGB"))[:256, 64:320]
    gray, mask = pil_gray(truth).copy(), np.zeros((256, 256), np.uint8)
    mask[60:100, 70:130] = 255
    gray[mask > 0] = 30
    base = [("image", ("x.png", _png(gray))), ("mask", ("m.png", _png(mask)))]
    other = ("references", ("Großeltern.png", _png(colourful(64, 64, 3))))
    ref = client.post("/api/restore/full", files=[*base, ("references", ("same scene.png", _png(truth))), other])
    ref = ref.json()["report"]["reference"]
    assert ref["name"] == "same scene.png" and 0.9 <= ref["coverage"] <= 1.0  # by its uploaded name
    none = client.post("/api/restore/full", files=[*base, other]).json()["report"]["reference"]
    assert none == {"name": None, "coverage": 0.0}


def test_a_photo_the_browser_cannot_show_gets_a_preview(client):
    scan = np.tile(np.arange(3000, dtype=np.uint16) % 256, (200, 1)).astype(np.uint8)
    r = client.post("/api/preview", files={"image": ("scan.tif", _png(scan, "TIFF"))})
    assert r.status_code == 200 and r.headers["x-image-size"] == "3000x200"
    assert Image.open(io.BytesIO(r.content)).size == (2048, 137)


def test_the_page_script_is_its_own_file_served_with_the_page(client):
    from pipeline.app import ASSETS
    page = client.get("/").text
    scripts = ['<script src="assets/app.js"></script>', '<script src="assets/select.js"></script>']
    assert all(s in page for s in scripts) and page.count("<script") == 2
    js, select_js = client.get("/assets/app.js"), client.get("/assets/select.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "function restoreOne" in js.text
    assert select_js.status_code == 200 and "function runSelection" in select_js.text
    assert client.get("/assets/index.html").status_code == 404 and client.get("/assets/..%2Fapp.py").status_code == 404
    assert all(len((ASSETS / f).read_text().splitlines()) <= 600 for f in ("app.js", "select.js"))
