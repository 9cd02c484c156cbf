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


def test_no_import_circle_in_stages():
    """``stages`` modules import each other one way (the registry and atomic writes sit below
    base and checkpoint), counting imports inside functions too."""
    graph = {}
    for f in (ROOT / "src" / "stages").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
        graph[f.stem] = deps - {f.stem}

    def visit(mod, path):
        assert mod not in path, " -> ".join([*path, mod])
        for dep in graph.get(mod, ()):
            visit(dep, [*path, mod])
    for mod in graph:
        if mod != "__init__":
            visit(mod, [])


def test_the_pipeline_class_is_the_chain_under_200_lines():
    tree = ast.parse((ROOT / "src" / "pipeline" / "pipeline.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Pipeline")
    assert cls.end_lineno - cls.lineno < 200
