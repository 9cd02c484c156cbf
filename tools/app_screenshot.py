"""Screenshots of the app restoring a real old print, as a person does it (docs/app.jpg).

    python tools/app_screenshot.py [--photo ../shared/data/old_photos/scratched_b.png] [--out docs/app.jpg]

Starts ``python -m pipeline.app`` (the demo checkpoint) on a free port, opens it in headless
Chromium (Playwright driving the system's browser), drops the photo, paints the visible cracks
with the brush (the strokes below trace those of ``scratched_b``; the shipped detector does not
find real cracks yet, issue 29), restores, and writes ``OUT_before.jpg`` (the painted damage) and
``OUT_after.jpg`` (the result under the before/after slider) beside ``--out`` (as JPEGs), which gets the pair
side by side as a JPEG.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# the cracks of scratched_b (256x256), as polylines in fractions of the photo
CRACKS = [[(0.0, 0.45), (0.23, 0.39), (0.43, 0.38), (0.66, 0.30), (0.83, 0.27), (1.0, 0.22)],
          [(0.16, 0.40), (0.17, 0.70), (0.18, 1.0)],
          [(0.72, 0.0), (0.80, 0.10), (0.90, 0.20), (1.0, 0.31)],
          [(0.0, 0.18), (0.08, 0.12), (0.16, 0.04)],
          [(0.31, 0.0), (0.32, 0.10), (0.33, 0.17)]]


def _serve(port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "pipeline.app", "--port", str(port)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p.stdout.readline()
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the app did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photo", default=str(ROOT.parent / "shared" / "data" / "old_photos" / "scratched_b.png"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "app.jpg"))
    ap.add_argument("--brush", type=int, default=9, help="brush size in screen px")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _serve(port)
    out = Path(args.out)
    before, after = out.with_name(out.stem + "_before.png"), out.with_name(out.stem + "_after.png")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#file", args.photo)
            page.wait_for_function("document.body.dataset.state === 'ready'", timeout=120_000)
            page.fill("#size", str(args.brush))
            page.dispatch_event("#size", "input")
            box = page.locator("#overlay").bounding_box()
            for line in CRACKS:
                page.mouse.move(box["x"] + line[0][0] * box["width"], box["y"] + line[0][1] * box["height"])
                page.mouse.down()
                for x, y in line[1:]:
                    page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=12)
                page.mouse.up()
            page.screenshot(path=str(before))
            page.click("#restore")
            page.wait_for_function("document.body.dataset.state === 'done'", timeout=120_000)
            page.fill("#split", "50")
            page.dispatch_event("#split", "input")
            page.screenshot(path=str(after), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    a, b = Image.open(before).convert("RGB"), Image.open(after).convert("RGB")
    b = b.crop((0, 0, b.width, min(b.height, 1400)))
    h = max(a.height, b.height)
    pair = Image.new("RGB", (a.width + b.width, h), "white")
    pair.paste(a, (0, 0))
    pair.paste(b, (a.width, 0))
    pair.resize((pair.width // 2, pair.height // 2), Image.LANCZOS).save(out, quality=85)
    for shot in (before, after):  # JPEG beside the docs: a third of the PNG's size
        Image.open(shot).convert("RGB").save(shot.with_suffix(".jpg"), quality=85)
        shot.unlink()
    print(f"wrote {out}, {before.with_suffix('.jpg').name}, {after.with_suffix('.jpg').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
