"""The import graph matches the layering the README's Layout section states (read from the source, no imports)."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.sglang  # reads what SGLang is installed, or SGLang's names in our sources

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's source lives in the repository (pyproject.toml's package-dir).
PACKAGES = {"sglang_indexcache": ROOT / "sglang_indexcache", "sglang_indexcache.patches": ROOT / "patches",
            "sglang_indexcache.kernels": ROOT / "kernels"}
ENGINE_FREE = ("layer_map", "schema", "schedule", "calibrate", "analysis", "testbed", "inprocess", "names")


def modules():
    """(dotted module name, file) for every module of the installed package."""
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "sglang_indexcache" and parts[0] in ("patches", "kernels"):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def imports(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {name: imports(name, path) for name, path in modules()}


def importers_of(prefix: str, where=lambda name: True) -> list[str]:
    return sorted(name for name, deps in GRAPH.items() if where(name)
                  and any(d == prefix or d.startswith(prefix + ".") for d in deps))


def test_the_graph_is_read():
    assert "sglang_indexcache.patches.worker.map_switch" in GRAPH
    assert "sglang_indexcache.patches.targets" in GRAPH["sglang_indexcache.patches.worker.map_switch"]
    assert "sglang_indexcache.layer_map" in GRAPH["sglang_indexcache.request"]


def test_only_patches_touch_sglang_and_only_through_targets():
    """No module imports ``sglang`` by an import statement: ``patches/targets.py`` resolves every SGLang name."""
    assert importers_of("sglang") == []
    assert "importlib.import_module(self.module)" in (ROOT / "patches" / "targets.py").read_text()


def test_scripts_import_no_sglang():
    for path in sorted((ROOT / "scripts").glob("*.py")):
        assert not any(d == "sglang" or d.startswith("sglang.") for d in imports(path.stem, path)), path.name


@pytest.mark.parametrize("core", ENGINE_FREE)
def test_engine_free_core_imports_neither_patches_nor_sglang(core):
    name = f"sglang_indexcache.{core}"
    inside = [n for n in GRAPH if n == name or n.startswith(name + ".")]
    assert inside, name
    for module in inside:
        bad = [d for d in GRAPH[module] if d.startswith(("sglang_indexcache.patches", "sglang.")) or d == "sglang"]
        assert bad == [], f"{module} imports {bad}"


def test_main_and_worker_patches_do_not_import_each_other():
    """A main-process patch never pulls in a worker patch (nor the reverse): each runs where its process is."""
    main, worker = "sglang_indexcache.patches.main", "sglang_indexcache.patches.worker"
    assert importers_of(worker, lambda n: n.startswith(main)) == []
    assert importers_of(main, lambda n: n.startswith(worker)) == []


def test_the_core_reaches_the_patches_only_to_serve():
    """The core reaches the SGLang adapters only from the ``serve`` command (which arms them)."""
    outside = lambda n: not n.startswith(("sglang_indexcache.patches", "sglang_indexcache.bench"))  # noqa: E731
    assert importers_of("sglang_indexcache.patches", outside) == ["sglang_indexcache.cli"]
