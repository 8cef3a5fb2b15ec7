"""The design card: cemr/ is the library and never imports ray (it runs and tests without Ray)."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_of_cemr_imports_ray():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "cemr").rglob("*.py") if "ray" in _imports(p)]
    assert offenders == []


def test_cemr_and_cluster_do_not_import_each_other_upwards():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "cemr").rglob("*.py")
        if {"cluster", "jobs"} & _imports(p)
    ]
    assert offenders == []


def test_importing_every_cemr_module_leaves_ray_unloaded():
    code = (
        "import importlib, pkgutil, sys, cemr\n"
        "for m in pkgutil.walk_packages(cemr.__path__, 'cemr.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
