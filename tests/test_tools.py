"""Developer tools in tools/: the photo packer for GPU machines, the look set of old prints."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import SAMPLES_DIR, PhotoData

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_pack_photos_keeps_names_order_and_split(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for f in sorted(SAMPLES_DIR.glob("*.jpg"))[:5]:
        (src / f.name).write_bytes(f.read_bytes())
    (src / "broken.jpg").write_bytes(b"not an image")
    r = subprocess.run([sys.executable, str(TOOLS / "pack_photos.py"), str(src), "--out", str(tmp_path / "small"),
                        "--max-side", "64"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "broken.jpg" in r.stderr and "5 photos" in r.stdout  # one line, the rest kept
    packed = sorted((tmp_path / "small" / "photos").glob("*.jpg"))
    assert [p.name for p in packed] == sorted(f.name for f in src.glob("*.jpg") if f.name != "broken.jpg")
    for p in packed:
        with Image.open(p) as im:
            assert max(im.size) == 64
    (src / "broken.jpg").unlink()
    a = PhotoData(src, val_fraction=0.4, seed=3)
    b = PhotoData(tmp_path / "small" / "photos", val_fraction=0.4, seed=3)
    assert [f.name for f in a.val.files] == [f.name for f in b.val.files]   # the same held-out photos


def test_pack_photos_refuses_the_dev_benchmark(tmp_path):
    (tmp_path / "kodak24").mkdir()
    r = subprocess.run([sys.executable, str(TOOLS / "pack_photos.py"), str(tmp_path / "kodak24"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "dev benchmark" in r.stderr


@pytest.mark.slow  # restores and draws a look grid
def test_old_photos_look_marks_and_restores_each_print(tmp_path, tiny_pipeline, monkeypatch, capsys):
    import runpy
    shared = tmp_path / "shared"
    (shared / "old_photos").mkdir(parents=True)
    gray = np.full((48, 40), 150, np.uint8)
    gray[10:20, 5:30] = 40  # a constant-gray shape: damage the shape detector finds
    Image.fromarray(gray).save(shared / "old_photos" / "a.png")
    Image.fromarray(np.full((40, 56, 3), (180, 120, 90), np.uint8)).save(shared / "old_photos" / "b.jpg")
    tiny_pipeline.save(tmp_path / "pipe")
    out = tmp_path / "look.jpg"
    monkeypatch.setattr(sys, "argv", ["old_photos_look.py", "--checkpoint", str(tmp_path / "pipe"),
                                      "--shared", str(shared), "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(TOOLS / "old_photos_look.py"), run_name="__main__")
    assert e.value.code == 0
    printed = capsys.readouterr().out
    assert "a.png: 40x48, marked" in printed and "b.jpg: 56x40" in printed
    with Image.open(out) as im:
        assert im.size[1] == 2 * (320 + 6)  # one row per print
