"""Output names of the restore command: only inputs of the same stem collide (the second becomes
``stem-2.png``), ``--zip`` keeps UTF-8 names, and ``--skip-existing`` follows the manifest."""
import csv
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.restore import main as restore_main
from pipeline.album import output_stems, unique_names
from tests.conftest import colourful


def test_unique_names_suffix_only_repeats():
    assert unique_names(["a.png", "b.png", "a.png", "A.png", "a-2.png"]) == ["a.png", "b.png", "a-2.png", "A-3.png",
                                                                             "a-2-2.png"]
    comp = [f"TEST_{i:03d}.png" for i in range(5)]
    assert unique_names(comp) == comp  # competition names are unique and stay as they are


def test_output_stems_keep_an_earlier_runs_names(tmp_path):
    a, b = tmp_path / "a" / "same.png", tmp_path / "b" / "same.png"
    assert output_stems([a, b]) == {a: "same", b: "same-2"}
    assert output_stems([a, b], {str(b): "out/same.png"}) == {a: "same-2", b: "same"}


def _manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return {r["input"]: r for r in csv.DictReader(f)}


def test_same_stems_from_two_folders_and_a_utf8_name_round_trip(tmp_path, tiny_pipeline):
    tiny_pipeline.save(tmp_path / "pipe")
    inputs = [tmp_path / "a" / "same.png", tmp_path / "b" / "same.png", tmp_path / "c" / "Großmutter 1952.png"]
    for i, p in enumerate(inputs):
        p.parent.mkdir()
        Image.fromarray(np.asarray(Image.fromarray(colourful(48, 64, i)).convert("L"))).save(p)
    out, zpath = tmp_path / "out", tmp_path / "all.zip"
    args = ["--checkpoint", str(tmp_path / "pipe"), "--no-progress", "--out", str(out)]
    assert restore_main([*map(str, inputs), *args, "--zip", str(zpath)]) == 0
    rows = _manifest(out)
    assert [rows[str(p)]["output"] for p in inputs] == [str(out / n) for n in ("same.png", "same-2.png",
                                                                                 "Großmutter 1952.png")]
    with zipfile.ZipFile(zpath) as z:
        assert sorted(z.namelist()) == sorted(["same.png", "same-2.png", "Großmutter 1952.png"])
        assert all(i.flag_bits & 0x800 for i in z.infolist() if not i.filename.isascii())
        assert z.read("same-2.png") == (out / "same-2.png").read_bytes()
    assert (out / "same.png").read_bytes() != (out / "same-2.png").read_bytes()  # two photos, two outputs


def test_skip_existing_follows_the_manifest_not_the_stem(tmp_path, tiny_pipeline):
    tiny_pipeline.save(tmp_path / "pipe")
    a, b = tmp_path / "a" / "same.png", tmp_path / "b" / "same.png"
    for i, p in enumerate((a, b)):
        p.parent.mkdir()
        Image.fromarray(np.asarray(Image.fromarray(colourful(48, 64, i)).convert("L"))).save(p)
    out = tmp_path / "out"
    args = ["--checkpoint", str(tmp_path / "pipe"), "--no-progress", "--out", str(out)]
    assert restore_main([str(b), *args]) == 0                         # an earlier run: b only, as same.png
    first = (out / "same.png").read_bytes()
    assert restore_main([str(a), str(b), *args, "--skip-existing"]) == 0
    rows = _manifest(out)
    assert rows[str(b)]["status"] == "skipped" and rows[str(b)]["output"] == str(out / "same.png")
    assert rows[str(a)]["status"] == "restored" and rows[str(a)]["output"] == str(out / "same-2.png")
    assert (out / "same.png").read_bytes() == first                   # b's output untouched, a's not skipped
    assert restore_main([str(a), str(b), *args, "--skip-existing"]) == 0  # and again: both done
    assert {r["status"] for r in _manifest(out).values()} == {"skipped"}


@pytest.mark.slow
@pytest.mark.cluster
def test_the_ray_engine_names_same_stems_as_the_local_one(tmp_path, tiny_pipeline):
    pytest.importorskip("ray.data")
    tiny_pipeline.save(tmp_path / "pipe")
    inputs = [tmp_path / "a" / "same.png", tmp_path / "b" / "same.png"]
    for i, p in enumerate(inputs):
        p.parent.mkdir()
        Image.fromarray(np.asarray(Image.fromarray(colourful(48, 64, i)).convert("L"))).save(p)
    out = tmp_path / "ray"
    p = subprocess.Popen([sys.executable, "-m", "pipeline.restore", *map(str, inputs), "--checkpoint",
                          str(tmp_path / "pipe"), "--no-progress", "--out", str(out), "--engine", "ray", "--workers", "1",
                          "--zip", str(tmp_path / "ray.zip")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.skip("a local Ray did not finish within 240 s on this machine")
    if p.returncode != 0 and "ray" in err.lower() and not (out / "manifest.csv").exists():
        pytest.skip(f"Ray cannot start here: {err.strip().splitlines()[-1]}")
    assert p.returncode == 0, err
    rows = _manifest(out)
    assert [rows[str(p)]["output"] for p in inputs] == [str(out / "same.png"), str(out / "same-2.png")]
    with zipfile.ZipFile(tmp_path / "ray.zip") as z:
        assert sorted(z.namelist()) == ["same-2.png", "same.png"]
