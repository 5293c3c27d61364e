"""``sglang_indexcache.names`` imports nothing, and every name the package shares lives there."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ROOT / "sglang_indexcache" / "names.py"


def test_names_module_has_no_import_statement():
    tree = ast.parse(NAMES.read_text())
    assert [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] == []


def test_importing_names_loads_nothing_but_it():
    code = ("import sys, sglang_indexcache; before = set(sys.modules); import sglang_indexcache.names; "
            "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['sglang_indexcache.names']"


def test_environment_variables_are_named_once():
    """No other module of the package spells an SGLANG_INDEXCACHE_ variable out."""
    folders = [ROOT / "sglang_indexcache", ROOT / "patches", ROOT / "kernels"]
    spelled = [str(p.relative_to(ROOT)) for f in folders for p in f.rglob("*.py")
               if p != NAMES and "bench" not in p.parts and '"SGLANG_INDEXCACHE_' in p.read_text()]
    assert spelled == []
