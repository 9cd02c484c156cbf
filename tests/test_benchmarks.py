"""benchmarks/: the maintained scripts only, each answers --help and runs on a tiny input."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py"))
DEV = SHARED / "photos" / "kodak24"

# a tiny run of each (the arguments), and what it needs on disk
TINY = {
    "album_speed": (["--n", "2", "--repeats", "1"], None),
    "demo_weights": (["--only", "min_agree", "--check"], None),
    "dev_benchmark": (["--max-images", "1", "--variants", "gray,telea"], DEV),
    "hints": (["--max-images", "1", "--points", "0,1"], DEV),
    "photo_colour": (["--max-images", "1"], DEV),
    "real_damage": (["--max-images", "1", "--only", "dev"], DEV),
    "references": (["--queries", "1", "--distractors", "2"], SHARED / "photos" / "bsds500"),
    "restore_speed": (["--repeats", "1", "--score-images", "1", "--skip-reference"], DEV),
}


def _run(name, *args, timeout=600):
    return subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=BENCH.parent)


def test_benchmarks_are_few_and_import_nothing_through_sys_path():
    assert len(SCRIPTS) <= 8, SCRIPTS
    for name in SCRIPTS:
        assert "sys.path" not in (BENCH / f"{name}.py").read_text(), name
        assert name in TINY, f"{name}: add its smoke test here"


def test_each_benchmark_answers_help():
    """``--help`` of every script, run side by side (each starts its own Python)."""
    runs = {name: subprocess.Popen([sys.executable, str(BENCH / f"{name}.py"), "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=BENCH.parent) for name in SCRIPTS}
    for name, p in runs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "usage:" in out, (name, err[-2000:])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SCRIPTS if TINY.get(n)])
def test_each_benchmark_runs_on_a_tiny_input(name):
    args, needs = TINY[name]
    if needs is not None and not needs.exists():
        pytest.skip(f"{needs} is not here")
    r = _run(name, *args)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert r.stdout.strip(), "printed nothing"
