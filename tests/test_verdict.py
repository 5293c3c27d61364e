"""Equal-or-different verdicts against the noise floor (sglang_indexcache.bench.verdict) and verify_gpu's report
(bench.verification)."""

import math

from sglang_indexcache.bench import verdict
from sglang_indexcache.names import ENV_MAP


def run(lp, ids):
    return {"ids": ids, "prompt_lp": lp}


def test_mean_over_every_position_not_the_max():
    a = {"p": run([-1.0] * 100, [1, 2, 3]), "q": run([-2.0] * 100, [4, 5])}
    b = {"p": run([-1.0] * 99 + [-1.5], [1, 2, 9]), "q": run([-2.0] * 100, [4, 5])}
    c = verdict.compare(a, b)
    assert c.positions == 200 and math.isclose(c.mean_lp_diff, 0.5 / 200) and c.max_lp_diff == 0.5
    assert (c.tokens_agree, c.tokens, c.generations_equal, c.generations) == (4, 5, 1, 2)
    assert math.isclose(c.token_agreement, 0.8)
    assert not c.identical and verdict.compare(a, a).identical


def test_judged_against_the_floor():
    floor_pair = verdict.compare({"p": run([0.0] * 10, [1])}, {"p": run([0.01] * 10, [2])})
    repeat = verdict.compare({"p": run([0.0] * 10, [1])}, {"p": run([0.02] * 10, [1])})
    floor = verdict.noise_floor([floor_pair, repeat])
    assert math.isclose(floor, 0.02)  # the larger of two launches and one server's repeat
    near = verdict.compare({"p": run([0.0] * 10, [1])}, {"p": run([0.028] * 10, [2])})
    far = verdict.compare({"p": run([0.0] * 10, [1])}, {"p": run([0.05] * 10, [2])})
    assert math.isclose(verdict.multiple(near, floor), 1.4)
    assert verdict.judge_equal(near, floor) == "within noise" and verdict.judge_equal(far, floor) == "DIFFERS"
    assert verdict.judge_different(far, floor) == "sensitive" and verdict.judge_different(near, floor) == "INSENSITIVE"
    assert verdict.judge_equal(near, None) == "no floor"


def test_non_finite_logprobs_differ():
    c = verdict.compare({"p": run([0.0, 0.0], [1])}, {"p": run([0.0, float("nan")], [1])})
    assert c.nonfinite == 1 and c.mean_lp_diff == 0.0
    assert verdict.judge_equal(c, 0.01) == "DIFFERS" and verdict.judge_different(c, 0.01) == "sensitive"


def _suite(lp, ids):
    solo = {f"p{i}-len{n}-new24": run(list(lp), list(ids)) for i, n in enumerate([97, 1500, 9000, 17000])}
    return {
        "solo": solo,
        "repeats": {k: run(list(lp), list(ids)) for k in solo},
        "prefix_hit": run(lp, ids),
        "prefix_cold": run(lp, ids),
        "burst_solo": [[1]] * 16,
        "burst_concurrent": [[1]] * 16,
    }


def test_verify_report_uses_each_groups_floor():
    from sglang_indexcache.bench import verification as verify

    base = [-1.0] * 50
    results = {
        "stock": {k: v for k, v in _suite(base, [1, 2]).items() if not k.startswith("burst")},  # --quick
        "stock-again": _suite([-1.01] * 50, [1, 2]),
        "ours-allF": _suite([-1.005] * 50, [1, 2]),
        "ours-1of4": _suite([-1.2] * 50, [1, 3]),
        "sched-explicit": _suite(base, [1, 2]),
        "sched-explicit-again": _suite([-1.001] * 50, [1, 2]),
        "sched-auto": _suite([-1.0005] * 50, [1, 2]),
        "sched-stock": _suite([-1.5] * 50, [7, 7]),
    }
    raw = {"results": results, "timings": {}, "patterns": {"quarter": ""}, "prefill_len": 0}
    rows = {r["check"]: r for r in verify.report(raw)}
    assert rows["1 all-F plugin vs stock"]["verdict"] == "within noise"
    assert rows["5 sensitivity: all-F vs 1/4 must differ"]["verdict"] == "sensitive"
    sched = rows["6 checkpoint schedule: no request vs requested explicitly"]
    assert sched["verdict"] == "within noise" and math.isclose(sched["floor"], 0.001, rel_tol=1e-6)
    assert rows["6 checkpoint schedule vs stock SGLang's reading (must differ)"]["verdict"] == "sensitive"
    verify.print_table(list(rows.values()))


def test_two_batch_overlap_servers_only_for_moe_models():
    from sglang_indexcache.bench import verification as verify

    dense = {"num_hidden_layers": 8, "first_k_dense_replace": 8, "n_routed_experts": 16}
    assert verify.two_batch_overlap_specs(dense, "q.yaml", "f.yaml", "FFSSSFSS", {}) == []
    assert verify.two_batch_overlap_specs({"num_hidden_layers": 8}, "q.yaml", "f.yaml", "FFSSSFSS", {}) == []
    moe = {"num_hidden_layers": 8, "first_k_dense_replace": 1, "n_routed_experts": 16}
    specs = {s.name: s for s in verify.two_batch_overlap_specs(moe, "q.yaml", "f.yaml", "FFSSSFSS", {"off": "1"})}
    assert all(s.gpus == 2 and "--enable-dp-attention" in s.args for s in specs.values())
    assert "--enable-two-batch-overlap" not in specs["ours-1of4-dp2"].args
    assert all("--enable-two-batch-overlap" in specs[n].args
               for n in ("ours-1of4-dp2-tbo", "ours-allF-dp2-tbo", "native-1of4-dp2-tbo"))
    assert specs["native-1of4-dp2-tbo"].env == {"off": "1"}
    assert specs["ours-1of4-dp2-tbo"].overrides == {"indexcache_map": "q.yaml"}
    assert specs["ours-allF-dp2-tbo"].env == {ENV_MAP: "f.yaml"}


def test_two_batch_overlap_rows_are_judged():
    from sglang_indexcache.bench import verification as verify

    results = {
        "stock": _suite([-1.0] * 50, [1, 2]),
        "stock-again": _suite([-1.01] * 50, [1, 2]),
        "ours-1of4": _suite([-1.2] * 50, [1, 3]),
        "ours-1of4-dp2": _suite([-1.205] * 50, [1, 3]),
        "ours-1of4-dp2-tbo": _suite([-1.9] * 50, [4, 4]),  # a hand-off that lost the indices
        "ours-allF-dp2-tbo": _suite([-1.0] * 50, [1, 2]),
    }
    rows = {r["check"]: r for r in verify.report({"results": results, "timings": {}, "patterns": {"quarter": ""},
                                                   "prefill_len": 0})}
    assert rows["4 DP attention, 2 GPUs vs 1 GPU (1/4)"]["verdict"] == "within noise"
    assert rows["4 two-batch overlap vs without (1/4, DP attention, 2 GPUs)"]["verdict"] != "within noise"
    assert rows["5 sensitivity with two-batch overlap: all-F vs 1/4 must differ"]["verdict"] == "sensitive"
