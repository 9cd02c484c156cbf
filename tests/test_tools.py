"""Developer tools in tools/: the photo packer for GPU machines."""
import subprocess
import sys
from pathlib import Path

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
    assert all(max(Image.open(p).size) == 64 for p in packed)
    (src / "broken.jpg").unlink()
    a = PhotoData(src, val_fraction=0.4, seed=3)
    b = PhotoData(tmp_path / "small" / "photos", val_fraction=0.4, seed=3)
    assert [f.name for f in a.val.files] == [f.name for f in b.val.files]   # the same held-out photos


def test_pack_photos_refuses_the_dev_benchmark(tmp_path):
    (tmp_path / "kodak24").mkdir()
    r = subprocess.run([sys.executable, str(TOOLS / "pack_photos.py"), str(tmp_path / "kodak24"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "dev benchmark" in r.stderr
