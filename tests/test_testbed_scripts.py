"""The testbed scripts refuse bad input with one line and exit 2, before any model loads."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_eval_rejects_a_bad_pattern():
    out = run("testbed_eval.py", "--pattern", "half=FFX")
    assert out.returncode == 2
    assert "--pattern" in out.stderr and "30 F/S characters" in out.stderr and "Converting" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_eval_reads_a_yaml_map_for_the_model(write_map):
    from sglang_indexcache.testbed.cli import parse_patterns

    path = write_map(
        "model:\n  architectures: [LlamaForCausalLM]\nmap:\n  freq: 2\n  offset: 1\nprovenance:\n  method: uniform\n"
    )
    assert list(parse_patterns(["x=FSSS"], [str(path)], 4).values()) == ["FSSS", "FSFS"]


@pytest.mark.parametrize("args", [["--splits", "nowhere"], ["--indexers", "missing.safetensors"]])
def test_train_and_eval_name_a_missing_input(tmp_path, args):
    script = "testbed_train.py" if args[0] == "--splits" else "testbed_eval.py"
    extra = ["--out", str(tmp_path / "x.safetensors")] if script == "testbed_train.py" else []
    out = run(script, *args, *extra)
    assert out.returncode == 2 and args[1] in out.stderr and "Fix:" in out.stderr
