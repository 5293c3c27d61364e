"""One results envelope for every script's JSON (bench.results), the layer maps built for any layer count
(bench.patterns), and scripts/ as thin mains over sglang_indexcache.bench."""

import ast
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from sglang_indexcache.bench import patterns, results, verdict
from sglang_indexcache.bench.serverinfo import token_capacity
from sglang_indexcache.bench.verification import Options as VerifyOptions
from sglang_indexcache.bench.verification import run as verify
from sglang_indexcache.layer_map import LayerMap

pytestmark = pytest.mark.sglang  # reads what SGLang is installed, or SGLang's names in our sources

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))


def test_envelope_wraps_the_payload_with_what_ran_where(tmp_path):
    doc = results.write(tmp_path / "r.json", "a check", {"out": tmp_path, "runs": 3}, {"rows": [1, 2]})
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk == json.loads(json.dumps(doc, default=str))
    assert set(on_disk) == {"what", "config", "versions", "gpu", "timestamp", "results"}
    assert on_disk["what"] == "a check" and on_disk["results"] == {"rows": [1, 2]}
    assert on_disk["config"] == {"out": str(tmp_path), "runs": 3}
    assert set(on_disk["versions"]) == {"sglang", "torch", "transformers", "triton", "package"}
    assert on_disk["timestamp"][:2] == "20" and "T" in on_disk["timestamp"]
    assert results.read(tmp_path / "r.json") == {"rows": [1, 2]}


def test_versions_are_read_from_what_is_installed(monkeypatch):
    assert results.versions()["torch"] == metadata.version("torch")
    monkeypatch.setattr(results.metadata, "version", lambda dist: f"{dist}-9.9")
    assert results.versions() == {"sglang": "sglang-9.9", "torch": "torch-9.9", "transformers": "transformers-9.9",
                                  "triton": "triton-9.9", "package": "sglang-indexcache-9.9"}

    def missing(dist):
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(results.metadata, "version", missing)
    assert set(results.versions().values()) == {None}


def test_gpu_name_without_torch_imported_is_none(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert results.gpu_name() is None


def test_config_of_a_dataclass_and_a_namespace(tmp_path):
    import argparse

    doc = results.envelope("x", VerifyOptions(model="m", out=tmp_path), [])
    assert doc["config"]["model"] == "m" and doc["config"]["port"] == 31000
    assert results.envelope("x", argparse.Namespace(a=1), [])["config"] == {"a": 1}


def test_committed_results_read_as_they_are():
    """Files written before the envelope come back unchanged; a file that merely has a "results" key is not
    mistaken for an envelope."""
    old = json.loads((ROOT / "results/readme-2026-11-30/partial.json").read_text())
    assert "results" in old and results.read(ROOT / "results/readme-2026-11-30/partial.json") == old


def test_verify_report_reads_old_and_new_raw_files(tmp_path, capsys):
    old = ROOT / "results/verify-2026-11-30-dense/raw.json"
    rows = verify(VerifyOptions(report=old))
    assert rows and any(r["check"] == "1 all-F plugin vs stock" for r in rows)
    wrapped = tmp_path / "raw.json"
    results.write(wrapped, "verify_gpu", {}, json.loads(old.read_text()))
    assert verify(VerifyOptions(report=wrapped)) == rows
    assert "all-F plugin vs stock" in capsys.readouterr().out


@pytest.mark.parametrize("n", [4, 8, 13, 61, 78])
def test_maps_follow_the_layer_count(n):
    quarter, half, irregular = patterns.native_patterns(n)
    assert len(quarter) == len(half) == len(irregular) == n
    assert irregular.startswith("FFSFSSSF"[:n])
    maps = patterns.ratio_maps(n)
    assert maps["stock"] is None and maps["allF"] == "F" * n
    assert LayerMap(maps["1of4"]).full_layers == tuple(range(0, n, 4))
    assert LayerMap(maps["1of2"]).full_layers == tuple(range(0, n, 2))
    assert patterns.switching_maps(n) == {"allF": "F" * n, "1of4": quarter, "irregular": irregular}


def test_ratio_maps_of_v32():
    assert patterns.ratio_maps(61)["1of4"].count("S") == 45  # V3.2 at 1/4: 45 of 61 layers Shared


def test_noise_multiples_shared_by_mean_and_max_verdicts():
    assert verdict.within_noise(0.15, 0.1) and not verdict.within_noise(0.16, 0.1)
    assert verdict.beyond_noise(0.2, 0.1) and not verdict.beyond_noise(0.19, 0.1)
    assert verdict.within_noise(0.0, 0.0) and not verdict.within_noise(1e-9, 0.0) and verdict.beyond_noise(1e-9, 0.0)
    assert not verdict.within_noise(None, 0.1) and not verdict.beyond_noise(0.5, None)


@pytest.mark.parametrize("info, tokens", [
    ({"max_total_num_tokens": 10}, 10),
    ({"internal_states": [{"max_total_num_tokens": 20}]}, 20),
    ({"internal_states": [{"memory_usage": {"token_capacity": 30}}]}, 30),
])
def test_token_capacity_where_each_sglang_puts_it(info, tokens):
    assert token_capacity(info) == tokens


def test_token_capacity_missing_says_where_it_looked():
    with pytest.raises(KeyError, match="internal_states"):
        token_capacity({"internal_states": [{}]})


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_thin_mains(script):
    """A script imports the package, never another script, and does not touch sys.path."""
    stems = {p.stem for p in SCRIPTS}
    imported = _imports(script)
    assert not imported & stems and not any(name.startswith("scripts") for name in imported)
    text = script.read_text()
    assert "sys.path" not in text and "spec_from_file_location" not in text
    assert len(text.splitlines()) < 140


@pytest.mark.parametrize("test", sorted(Path(__file__).parent.glob("test_*.py")), ids=lambda p: p.name)
def test_no_test_loads_a_script(test):
    imported = _imports(test)
    assert not imported & {p.stem for p in SCRIPTS}
    assert "spec_from_file_location" not in test.read_text().replace('"spec_from_file_location"', "")


OPTIONS = {"bench_overlap": "overlap_timing", "bench_prefill_decode": "prefill_decode", "bench_readme": "readme_table",
           "calibrate_gpu": "calibration_gpu", "calibrate_testbed": "calibration_testbed",
           "capture_server_check": "capture_check", "loadtest": "load", "make_random_checkpoint": "random_checkpoint",
           "memory_table": "memory", "metrics_check": "metrics_check", "switch_under_load": "switching_check",
           "verify_gpu": "verification"}


@pytest.mark.parametrize("script", sorted(OPTIONS))
def test_script_flags_are_its_options(script):
    """Every flag of the script is a field of the bench module's Options and every field a flag: the script
    leaves defaults to Options, so the two cannot drift apart."""
    import dataclasses
    import importlib
    import re

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--help"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    options_part = out.stdout[out.stdout.index("options:"):]
    flags = {f[2:].replace("-", "_") for f in re.findall(r"^  (?:-\w, )?(--[a-z][a-z0-9-]*)", options_part, re.M)}
    flags -= {"help"}
    options = importlib.import_module(f"sglang_indexcache.bench.{OPTIONS[script]}").Options
    assert flags == {f.name for f in dataclasses.fields(options)}
