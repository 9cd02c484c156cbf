"""The page in a real headless Chromium (Playwright driving the system's browser), with a tiny
pipeline behind ``python -m pipeline.app``: stale answers ignored, a toned print's two results,
batches, small and big photos, progress, messages and the warm-up line."""
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.app import WAITING, WARMING, Restorer
from tests.test_app import _damaged, server  # noqa: F401  (the fixture: the app as users start it)
from tests.test_app_results import sepia

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")]
STATUS_LOG = """window.statuses = [];
document.addEventListener("DOMContentLoaded", () => new MutationObserver(
  () => window.statuses.push(document.getElementById("status").textContent)).observe(
  document.getElementById("status"), { childList: true, characterData: true, subtree: true }));"""
STATE = "document.body.dataset.state === '{}'"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):  # noqa: F811
    p = browser.new_page(viewport={"width": 1100, "height": 800}, accept_downloads=True)
    p.add_init_script(STATUS_LOG)
    p.goto(server[0])
    yield p
    p.close()


def _photo(path, h, w, seed=0):
    Image.fromarray(_damaged(seed, h, w)).save(path)
    return str(path)


def _hold_first(page, pattern):
    """Route ``pattern``: the first request is held (``held[0].continue_()`` sends it on), the rest go."""
    held = []
    page.route(pattern, lambda route: held.append(route) if not held else route.continue_())
    return held


def _wait(page, state, timeout=60_000):
    """Wait until the page is in ``state``; an error on the way fails with the page's own words."""
    page.wait_for_function(f"['{state}', 'error'].includes(document.body.dataset.state)", timeout=timeout)
    got = page.evaluate("[document.body.dataset.state, $('status').textContent]")
    assert got[0] == state or state == "error", got


def test_a_photo_chosen_while_another_is_busy_never_gets_its_answer(page, tmp_path):
    big, small = _photo(tmp_path / "big scan.png", 1200, 1600, 1), _photo(tmp_path / "small.png", 48, 64, 2)
    held = _hold_first(page, "**/api/detect")
    page.set_input_files("#file", big)
    page.wait_for_function("state.w === 1600 && !$('editor').classList.contains('hidden')")  # preview at once
    page.set_input_files("#file", small)
    _wait(page, "ready")
    with page.expect_response("**/api/detect"):
        held[0].continue_()                                      # the big photo's answer comes last ...
    page.wait_for_timeout(300)
    after_detect = page.evaluate("[state.w, state.h, maskCanvas.width, $('status').textContent]")
    waited = [s for s in page.evaluate("window.statuses") if s.startswith(WAITING)]
    _wait(page, "ready")
    page.set_input_files("#file", big)
    _wait(page, "ready")
    held = _hold_first(page, "**/api/restore/full")
    page.click("#restore")                                       # restore the big one, then choose the small one
    _wait(page, "restoring")
    page.set_input_files("#file", small)
    _wait(page, "ready")
    with page.expect_response("**/api/restore/full"):
        held[0].continue_()
    page.wait_for_timeout(300)
    after_restore = page.evaluate("[document.body.dataset.state, $('output').classList.contains('hidden'),"
                                  " $('download').classList.contains('disabled'), $('status').textContent]")
    page.click("#restore")
    _wait(page, "done")
    result = page.evaluate("[$('after').naturalWidth, $('after').naturalHeight, $('download').download]")
    assert after_detect[:3] == [64, 48, 64] and after_detect[3].startswith(("Damage found", "No damage found"))
    assert waited and "small.png" in waited[0], page.evaluate("window.statuses")
    assert after_restore[:3] == ["ready", True, True] and not after_restore[3].startswith("Restored"), after_restore
    assert result == [64, 48, "small_restored.png"]


def test_a_toned_print_shows_its_tone_and_a_colourised_one_side_by_side(page, tmp_path):
    Image.fromarray(sepia(96, 128)).save(tmp_path / "sepia print.png")
    text = page.inner_text("#colour")
    page.set_input_files("#file", str(tmp_path / "sepia print.png"))
    _wait(page, "ready")
    page.select_option("#preset", "photo")
    page.click("#restore")
    _wait(page, "done")
    tone, coloured = (page.locator(f"#{i} img").bounding_box() for i in ("pick-tone", "pick-colour"))
    report, status = page.inner_text("#report"), page.inner_text("#status")
    own_href = page.get_attribute("#download", "href")
    page.click("button[data-pick=colour]")
    with page.expect_download() as dl:
        page.click("#download")
    picked = np.asarray(Image.open(dl.value.path()).convert("RGB"), np.int16)
    body = page.inner_text("body")
    assert "Keep the photo's own tone" in text and "Colourise" in text and "a colour photo" not in body.lower()
    assert abs(tone["y"] - coloured["y"]) < 2 and coloured["x"] >= tone["x"] + tone["width"]  # side by side
    assert "photo preset" in report and "own tone" in report and "with the photo preset" in status
    assert dl.value.suggested_filename == "sepia print_colourised_restored.png" and own_href.startswith("data:image/png")
    assert np.abs(picked - sepia(96, 128)).mean() > 3  # the colourised one, not the tone


def test_a_batch_shows_thumbnails_a_download_each_and_a_zip_with_true_names(page, tmp_path):
    files = []
    for i, rel in enumerate(("Großmutter 1952.png", "a/same.png", "b/same.png")):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        files.append(_photo(tmp_path / rel, 48, 64, i + 3))
    page.set_input_files("#file", files)
    page.wait_for_function("[...document.querySelectorAll('#chosen img')].filter((i) => i.naturalWidth).length === 3")
    page.click("#restore")
    _wait(page, "done")
    names = page.eval_on_selector_all("#results a[download]", "els => els.map((e) => e.download)")
    with page.expect_download() as one:
        page.locator("#results a[download]").nth(2).click()
    with page.expect_download() as dl:
        page.click("#zip")
    with zipfile.ZipFile(dl.value.path()) as z:
        entries, flags = z.namelist(), [i.flag_bits & 0x800 for i in z.infolist()]
        second = z.read("same_restored-2.png")
    want = ["Großmutter 1952_restored.png", "same_restored.png", "same_restored-2.png"]
    assert names == want and entries == want and flags[0] and not flags[1]
    assert one.value.suggested_filename == "same_restored-2.png" and Path(one.value.path()).read_bytes() == second
    assert Image.open(io.BytesIO(second)).size == (64, 48)


@pytest.mark.parametrize("h,w,enlarged", [(48, 64, True), (700, 1000, False)])
def test_small_photos_are_enlarged_crisply_and_the_slider_sits_under_the_image(page, tmp_path, h, w, enlarged):
    page.set_input_files("#file", _photo(tmp_path / "p.png", h, w, 4))
    _wait(page, "ready")
    shown = page.locator("#photo").bounding_box()
    rendering = page.evaluate("getComputedStyle($('photo')).imageRendering")
    page.click("#restore")
    _wait(page, "done")
    after, split = page.locator("#after").bounding_box(), page.locator("#split").bounding_box()
    assert (shown["width"] >= 3 * w) == enlarged and (rendering == "pixelated") == enlarged
    assert split["y"] >= after["y"] + after["height"] - 1 and split["x"] < after["x"] + after["width"] / 2
    if enlarged:
        assert abs(after["width"] - shown["width"]) <= 1  # the result as large as the photo one paints on


def test_a_big_scan_shows_its_preview_and_progress_at_once_and_messages_say_what_to_do(page, tmp_path):
    big = _photo(tmp_path / "scan.png", 1200, 1600, 5)
    held = _hold_first(page, "**/api/detect")
    line = "Looking for damage in 1600×1200 pixels…"
    page.route("**/api/progress/*", lambda route: route.fulfill(
        content_type="application/json", body=json.dumps({"stage": line, "ready": True})))
    page.set_input_files("#file", big)
    page.wait_for_function(f"$('status').textContent.startsWith({json.dumps(line)})", timeout=10_000)
    pixel = page.evaluate("Array.from($('photo').getContext('2d').getImageData(800, 600, 1, 1).data)")
    held[0].continue_()
    _wait(page, "ready")
    page.unroute("**/api/progress/*")
    tif = tmp_path / "scanner.tif"                                   # a TIFF: the browser cannot show it
    Image.fromarray(np.full((200, 300), 30, np.uint8)).save(tif)
    page.set_input_files("#file", str(tif))
    _wait(page, "ready")
    tif_pixel = page.evaluate("Array.from($('photo').getContext('2d').getImageData(10, 10, 1, 1).data)")
    refusal = str(Restorer(None, 200)._too_big("image", 260 * 2 ** 20))
    page.route("**/api/detect", lambda route: route.fulfill(status=413, content_type="application/json",
                                                            body=json.dumps({"detail": refusal})))
    page.set_input_files("#file", big)
    _wait(page, "error")
    too_big = page.inner_text("#status")
    page.unroute("**/api/detect")
    (tmp_path / "notes.png").write_text("not a photo")
    page.set_input_files("#file", str(tmp_path / "notes.png"))
    _wait(page, "error")
    unreadable = page.inner_text("#status")
    gray = _damaged(5, 1200, 1600)[600, 800]
    assert abs(pixel[0] - int(gray)) <= 2 and pixel[3] == 255       # the photo, before its detection answered
    assert abs(tif_pixel[0] - 30) <= 2                               # the server's preview, not a gray card
    assert too_big.endswith(".") and "--max-upload-mb 300" in too_big and "smaller file" in too_big
    assert unreadable.endswith("Choose another photo.") and "notes.png" in unreadable


def test_until_the_models_are_warm_the_page_says_so(browser, server, tmp_path):  # noqa: F811
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.add_init_script(STATUS_LOG)
    cold = [3]

    def info(route):  # the server answers "not ready" three times, as during a warm-up
        body = route.fetch().json()
        if cold[0] > 0:
            cold[0] -= 1
            body["ready"] = False
        route.fulfill(content_type="application/json", body=json.dumps(body))
    page.route("**/api/info", info)
    page.goto(server[0])
    page.wait_for_function("!$('warm').classList.contains('hidden')")
    warm_text = page.inner_text("#warm")
    page.set_input_files("#file", _photo(tmp_path / "p.png", 48, 64, 6))
    _wait(page, "ready")
    page.wait_for_function("$('warm').classList.contains('hidden')", timeout=10_000)
    statuses = page.evaluate("window.statuses")
    page.close()
    assert warm_text == WARMING and WARMING in statuses


def test_the_result_says_which_reference_matched_and_which_preset_ran(page, tmp_path):
    from pipeline.color import pil_gray
    from pipeline.data import SAMPLES_DIR
    from tests.conftest import colourful
    truth = np.asarray(Image.open(sorted(SAMPLES_DIR.glob("*.jpg"))[2]).convert("RGB"))[:256, 64:320]
    gray = pil_gray(truth).copy()
    gray[60:100, 70:130] = 30
    Image.fromarray(gray).save(tmp_path / "old.png")
    Image.fromarray(truth).save(tmp_path / "same scene.png")
    Image.fromarray(colourful(64, 64, 3)).save(tmp_path / "Großeltern.png")
    reports = []
    for refs, preset in (([tmp_path / "same scene.png", tmp_path / "Großeltern.png"], "photo"),
                         ([tmp_path / "Großeltern.png"], "competition")):
        page.set_input_files("#refs", [str(p) for p in refs])
        page.select_option("#preset", preset)
        page.set_input_files("#file", str(tmp_path / "old.png"))
        _wait(page, "ready")
        _stroke_box(page, (70, 60, 130, 100), 256)
        page.click("#restore")
        _wait(page, "done")
        reports.append((page.inner_text("#report"), page.inner_text("#status")))
    assert "Reference same scene.png matched, covering" in reports[0][0] and "% of the photo" in reports[0][0]
    assert "photo preset" in reports[0][0] and "with the photo preset" in reports[0][1]
    assert "No reference matched" in reports[1][0] and "competition" in reports[1][0]
    assert "with the competition preset" in reports[1][1]


def _stroke_box(page, box, size):
    """Paint the rectangle ``box`` (x0, y0, x1, y1 in pixels of a ``size``-px-wide photo) with the brush."""
    page.fill("#size", "80")
    b = page.locator("#overlay").bounding_box()
    k = b["width"] / size
    for y in range(box[1], box[3] + 1, 8):
        page.mouse.move(b["x"] + box[0] * k, b["y"] + y * k)
        page.mouse.down()
        page.mouse.move(b["x"] + box[2] * k, b["y"] + y * k, steps=4)
        page.mouse.up()
