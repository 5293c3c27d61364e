"""CI runs only the tests marked ``sglang`` against the other SGLang releases (``.ci/run``), so a test that
touches SGLang without the mark would go untested there."""

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# an import of SGLang itself, SGLang named in a string (a subprocess's code, a module to run, importorskip), or
# the CPU harness's builders
USES_SGLANG = re.compile(
    r"^\s*(import sglang\b|from sglang(\.| import))"
    r"|[\"']sglang[.\"' ]"
    r"|\b(build_model|build_decoder_layers|sglang_dist_env)\(",
    re.MULTILINE,
)


def _marked(decorators) -> bool:
    return any("mark.sglang" in ast.unparse(d) for d in decorators)


def unmarked_sglang_tests(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    module_marked = any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
        and "mark.sglang" in ast.unparse(node.value)
        for node in tree.body
    )
    if module_marked:
        return []
    module_level = "".join(ast.get_source_segment(source, node) + "\n" for node in tree.body
                           if isinstance(node, (ast.Import, ast.ImportFrom)))
    helpers = {node.name: ast.get_source_segment(source, node) for node in tree.body
               if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_")}
    out = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")) or _marked(node.decorator_list):
            continue
        body = ast.get_source_segment(source, node)
        called = "".join(text for name, text in helpers.items() if re.search(rf"\b{name}\b", body))
        if USES_SGLANG.search(module_level + body + called):
            out.append(f"{path.name}::{node.name}")
    return out


def test_every_test_that_touches_sglang_is_marked():
    offenders = [name for path in sorted(TESTS.glob("test_*.py")) for name in unmarked_sglang_tests(path)]
    assert offenders == [], f"mark these @pytest.mark.sglang (or the module's pytestmark): {offenders}"


def test_the_check_sees_an_unmarked_import(tmp_path):
    unmarked = tmp_path / "test_unmarked.py"
    unmarked.write_text("def test_a():\n    import sglang.srt.server_args\n\ndef test_b():\n    pass\n")
    assert unmarked_sglang_tests(unmarked) == ["test_unmarked.py::test_a"]
    marked = tmp_path / "test_marked.py"
    marked.write_text("import pytest\n\n@pytest.mark.sglang\ndef test_a():\n    import sglang.srt.server_args\n")
    assert unmarked_sglang_tests(marked) == []
