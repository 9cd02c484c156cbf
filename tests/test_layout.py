"""The code's shape a maintainer relies on: one-way layering, no link out of the repository,
short functions."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_stages_never_imports_pipeline():
    code = "import sys, stages; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipeline'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stage_sources_do_not_name_the_pipeline_package():
    for f in (ROOT / "src" / "stages").glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module.split(".")[0] != "pipeline", f"{f.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "pipeline" for a in node.names), f.name


def _repository_files():
    """Files git tracks (a venv or other ignored folder may link anywhere); a plain walk without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        return [ROOT / f for f in out.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if not any(part.startswith((".venv", ".git")) for part in p.parts)]


def test_no_symlink_points_outside_the_repository():
    for p in _repository_files():
        if p.is_symlink():
            assert ROOT in p.resolve().parents or p.resolve() == ROOT, f"{p} -> {p.resolve()}"


def test_no_function_in_src_is_longer_than_60_lines():
    long = []
    for f in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long
