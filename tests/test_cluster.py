"""``python -m pipeline.restore --engine ray`` (issue 32): a local Ray on this machine's CPUs, the
same outputs as the local engine, the same manifest and resume; one line where Ray is missing."""
import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.color import pil_gray
from pipeline.damage import apply_damage, random_damage
from pipeline.restore import main as restore_main
from tests.conftest import colourful


def test_without_ray_the_engine_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "a.png")
    assert restore_main([str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: --engine ray needs Ray: pip install "restore-pipeline[cluster]"']


@pytest.mark.cluster
def test_ray_engine_equals_the_local_engine(tmp_path, tiny_pipeline):
    pytest.importorskip("ray.data")
    src = tmp_path / "in"
    src.mkdir()
    for i, (h, w) in enumerate([(64, 80), (64, 80), (48, 64)]):
        Image.fromarray(apply_damage(pil_gray(colourful(h, w, i)), random_damage(h, w, np.random.default_rng(i)))
                        ).save(src / f"p{i}.png")
    Image.fromarray(colourful(64, 80, 9)).save(src / "colour.png")  # keeps its colour on both engines
    (src / "broken.png").write_bytes(b"not a png")
    tiny_pipeline.save(tmp_path / "pipe")
    common = [str(src), "--checkpoint", str(tmp_path / "pipe"), "--damage", "shape", "--no-progress"]
    assert restore_main([*common, "--out", str(tmp_path / "local")]) == 1
    # the Ray run in its own process group, so that a Ray that cannot start here (no shared memory,
    # a sandbox) ends in a skip, not a hung suite
    p = subprocess.Popen([sys.executable, "-m", "pipeline.restore", *common, "--out", str(tmp_path / "ray"),
                          "--engine", "ray", "--workers", "2", "--batch-size", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.skip("a local Ray did not finish within 240 s on this machine")
    if p.returncode not in (0, 1) and "ray" in err.lower() and not (tmp_path / "ray" / "manifest.csv").exists():
        pytest.skip(f"Ray cannot start here: {err.strip().splitlines()[-1]}")
    assert p.returncode == 1 and "broken.png: not an image file" in err and "restored 4 image(s)" in err, err
    for name in ("p0", "p1", "p2", "colour"):
        a = np.asarray(Image.open(tmp_path / "local" / f"{name}.png"), np.int16)
        b = np.asarray(Image.open(tmp_path / "ray" / f"{name}.png"), np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, name
    with open(tmp_path / "ray" / "manifest.csv") as f:
        rows = {r["input"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert rows["broken.png"]["status"] == "failed" and rows["p2.png"]["status"] == "restored"
    assert rows["p2.png"]["size"] == "64x48" and float(rows["p0.png"]["damage_share"]) > 0
