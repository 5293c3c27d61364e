"""bench.calibration_testbed (scripts/calibrate_testbed.py) end to end on a tiny random testbed and random token
splits."""

import json

import numpy as np
import torch


def test_searched_and_uniform_maps_on_both_domains(tmp_path, capsys):
    from sglang_indexcache.bench import calibration_testbed
    from sglang_indexcache.testbed import tiny_model
    from sglang_indexcache.testbed.load import save_indexers

    model = tiny_model(num_layers=4, index_topk=4)
    model.lm.save_pretrained(tmp_path / "base")
    indexers = tmp_path / "indexers.safetensors"
    save_indexers(model, indexers, {"base": str(tmp_path / "base")}, dtype=torch.float32)
    rng = np.random.default_rng(0)
    splits = tmp_path / "splits"
    splits.mkdir()
    for name in ("prose-calibration", "prose-heldout", "code-calibration", "code-heldout"):
        np.save(splits / f"{name}.npy", rng.integers(0, 128, size=64).astype(np.uint16))
    assert calibration_testbed.run(calibration_testbed.Options(
        out=tmp_path / "out", model=f"testbed:{indexers}", splits=splits, calibration_tokens=32, seq_len=16,
        heldout_windows=2, ratios=[0.5, 0.25])) == 0
    report = json.loads((tmp_path / "out" / "calibrate_testbed.json").read_text())["results"]
    rows = report["heldout"]
    assert {"all-F", "uniform 1/2", "uniform 1/4", "greedy-1of2 (prose)", "greedy-1of4 (code)"} <= set(rows)
    assert rows["uniform 1/2"]["pattern"] == "FSFS" and rows["uniform 1/4"]["pattern"] == "FSSS"
    assert rows["greedy-1of4 (prose)"]["pattern"].count("F") == 1
    # The searched map's held-out loss is a fresh forward of that map, not the calibration number.
    assert rows["all-F"]["prose"] != report["searches"]["prose"]["base_loss"]
    assert "held-out prose" in capsys.readouterr().out
