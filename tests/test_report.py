"""The verdict: paired comparisons on shared items, Holm, power at the Holm alpha, equivalence (TOST), choice
on validation, combos judged on their own dimensions, balance over chance-normalised dimensions, and the
precondition, dominance and tuning budget as columns beside the verdict, never in its place."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resm_core.cli import main
from resm_core.report.build import build_report
from resm_core.report.paired import ArmItems, holm, paired, verdict

BENCH_DIM = {
    "qa_mc": "helpfulness",
    "benign_compliance": "helpfulness",
    "halueval_verify": "honesty",
    "harmful_refusal": "harmlessness",
}


def items(arm: str, scores: dict[str, np.ndarray], split: str = "test") -> ArmItems:
    return ArmItems(
        arm, split, {b: (BENCH_DIM[b], {str(i): float(v) for i, v in enumerate(x)}) for b, x in scores.items()}
    )


def flips(base: np.ndarray, rate: float, rng) -> np.ndarray:
    out = base.copy()
    mask = rng.random(base.size) < rate
    out[mask] = 1 - out[mask]
    return out


def test_a_against_itself_is_zero_and_equivalent():
    rng = np.random.default_rng(0)
    x = {b: (rng.random(60) < 0.5).astype(float) for b in BENCH_DIM}
    rows = paired(items("a", x), items("a", x), n_boot=500, n_perm=500)
    for r in rows:
        assert r["difference"] == 0 and r["ci_low"] == r["ci_high"] == 0 and r["p_value"] == 1.0
        assert verdict(r, "a", "a") == "equivalent"


def test_equivalent_only_when_the_90_interval_is_inside_the_margin():
    row = {"p_value": 0.6, "ci_low": -0.05, "ci_high": 0.045, "ci90_low": -0.04, "ci90_high": 0.035}
    assert verdict(row, "a", "b", margin=0.05) == "equivalent"
    assert verdict(row, "a", "b", margin=0.03) == "inconclusive"  # the run could not tell at that margin
    wide = {**row, "ci90_low": -0.12, "ci90_high": 0.1}
    assert verdict(wide, "a", "b", margin=0.05) == "inconclusive"
    # a significant difference smaller than the margin is still a winner, not "equivalent"
    small = {"p_value": 0.001, "ci_low": 0.005, "ci_high": 0.02, "ci90_low": 0.007, "ci90_high": 0.018}
    assert verdict(small, "a", "b", margin=0.05) == "a"


def test_mdd_uses_the_holm_alpha_of_its_family():
    from resm_core.report.paired import MDD_FACTOR, mdd_factor

    assert mdd_factor(1) == pytest.approx(MDD_FACTOR)
    assert mdd_factor(2) == pytest.approx(2.241 + 0.8416, abs=1e-3)  # z_{1 - 0.05/4} + z_0.8
    assert mdd_factor(3) == pytest.approx(2.394 + 0.8416, abs=1e-3)


def test_balance_normalises_each_dimension_by_its_chance_level():
    n = 50
    chance = {"qa_mc": 0.2, "halueval_verify": 0.5}
    a = ArmItems(
        "a",
        "test",
        {
            "qa_mc": ("helpfulness", {str(i): 0.2 for i in range(n)}),  # chance on helpfulness
            "halueval_verify": ("honesty", {str(i): 0.75 for i in range(n)}),  # half-way above chance
            "harmful_refusal": ("harmlessness", {str(i): 1.0 for i in range(n)}),
        },
        chance,
    )
    rows = {r["metric"]: r for r in paired(a, a, n_boot=100, n_perm=100)}
    assert rows["helpfulness"]["a_score"] == pytest.approx(0.2)  # dimensions are reported raw
    assert rows["balance"]["a_score"] == 0.0  # chance-level helpfulness is worth nothing in balance
    two = {r["metric"]: r for r in paired(a, a, dims=["honesty", "harmlessness"], n_boot=100, n_perm=100)}
    assert two["balance"]["a_score"] == pytest.approx(2 / (1 / 0.5 + 1 / 1.0))


def test_effective_n_of_balance_counts_the_items_that_carry_it():
    from resm_core.report.paired import effective_n

    dims = ["helpfulness", "harmlessness"]
    dim_of = {"qa_mc": "helpfulness", "harmful_refusal": "harmlessness"}
    means = {"qa_mc": 0.5, "harmful_refusal": 0.5}
    equal = effective_n(means, {"qa_mc": 100, "harmful_refusal": 100}, dim_of, dims, {})
    assert equal == pytest.approx(200, rel=1e-3)  # equal weights: every item counts
    lopsided = effective_n(means, {"qa_mc": 10, "harmful_refusal": 190}, dim_of, dims, {})
    assert lopsided < 50  # the 10 helpfulness items carry half the balance: far fewer than 200 effective


def test_a_real_difference_is_found_with_the_right_sign_and_calibrated_power():
    rng = np.random.default_rng(1)
    n = 400
    b = {bench: (rng.random(n) < 0.5).astype(float) for bench in BENCH_DIM}
    a = {k: v.copy() for k, v in b.items()}
    better = rng.random(n) < 0.25
    a["harmful_refusal"][better] = 1.0  # a refuses where b did not on about an eighth of the items
    rows = {r["metric"]: r for r in paired(items("a", a), items("b", b), dims=["harmlessness"], n_boot=2000)}
    r = rows["harmful_refusal"]
    assert r["difference"] > 0.08 and r["ci_low"] > 0 and r["p_value"] < 0.01
    assert (
        verdict(r, "a", "b") == "a"
        and verdict({**r, "difference": -1, "ci_low": -0.2, "ci_high": -0.1}, "a", "b") == "b"
    )
    # mdd_80 = 2.80 x the paired standard error, sqrt(var(d)/n) for a mean of paired differences
    d = a["harmful_refusal"] - b["harmful_refusal"]
    assert r["mdd_80"] == pytest.approx(2.8016 * d.std(ddof=1) / np.sqrt(n), rel=0.12)
    # pairing: the unpaired standard error is several times larger here
    unpaired = np.sqrt(a["harmful_refusal"].var() / n + b["harmful_refusal"].var() / n)
    assert r["mdd_80"] < 0.7 * 2.8 * unpaired


def test_permutation_p_is_uniform_enough_under_the_null():
    rng = np.random.default_rng(2)
    ps = []
    for k in range(60):
        base = (rng.random(80) < 0.5).astype(float)
        a, b = flips(base, 0.2, rng), flips(base, 0.2, rng)  # same model family, no difference in expectation
        rows = paired(items("a", {"qa_mc": a}), items("b", {"qa_mc": b}), n_boot=200, n_perm=400, seed=k)
        ps.append(rows[0]["p_value"])
    assert 0.0 <= np.mean(np.array(ps) < 0.05) <= 0.12 and 0.35 < np.mean(ps) < 0.65


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])


def test_balance_is_over_the_chosen_dims_only():
    good = np.ones(40)
    bad = np.zeros(40)
    a = items("a", {"qa_mc": good, "harmful_refusal": good, "halueval_verify": bad})
    b = items("b", {"qa_mc": good * 0, "harmful_refusal": good, "halueval_verify": bad})
    two = {r["metric"]: r for r in paired(a, b, dims=["harmlessness", "helpfulness"], n_boot=200, n_perm=200)}
    assert two["balance"]["a_score"] == 1.0 and "halueval_verify" not in two
    three = {r["metric"]: r for r in paired(a, b, n_boot=200, n_perm=200)}
    assert three["balance"]["a_score"] == 0.0  # a zero dimension sinks a harmonic mean


def write_arm(results: Path, arm: str, scores: dict[str, dict[str, np.ndarray]]) -> None:
    """eval/ARM as `resm evaluate` writes it: a JSON and a JSONL per benchmark, and a summary."""
    folder = results / "eval" / arm
    folder.mkdir(parents=True)
    dims = {}
    for bench, by_split in scores.items():
        lines = [
            {"id": f"{split}-{i}", "score": float(v), "split": split}
            for split, x in by_split.items()
            for i, v in enumerate(x)
        ]
        (folder / f"{bench}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        test = by_split["test"]
        (folder / f"{bench}.json").write_text(
            json.dumps({"benchmark": bench, "dim": BENCH_DIM[bench], "score": float(test.mean())})
        )
        dims.setdefault(BENCH_DIM[bench], []).append(float(test.mean()))
    agg = {"score": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "dims": {d: {"score": float(np.mean(v)), "ci_low": 0, "ci_high": 1} for d, v in dims.items()},
                "mean_3h": agg,
                "balance": agg,
                "min_dim": agg,
                "truncated": 0,
                "timing": {"total_s": 1.0},
            }
        )
    )


def read_arm(results: Path, arm: str) -> dict[str, dict[str, np.ndarray]]:
    """What `write_arm` wrote: benchmark -> split -> scores in item order."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for path in (results / "eval" / arm).glob("*.jsonl"):
        by_split: dict[str, list[float]] = {}
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            by_split.setdefault(rec["split"], []).append(rec["score"])
        out[path.stem] = {k: np.array(v) for k, v in by_split.items()}
    return out


@pytest.fixture()
def grid(tmp_path):
    """A base, experts (harmlessness moves, helpfulness does not), a mixture, and three merges whose
    validation and test rankings disagree."""
    rng = np.random.default_rng(3)
    n_test, n_val = 300, 100
    base = {
        b: {"test": (rng.random(n_test) < 0.5).astype(float), "val": (rng.random(n_val) < 0.5).astype(float)}
        for b in BENCH_DIM
    }

    def variant(changes: dict[str, tuple[float, float]]) -> dict:
        """changes: bench -> (test shift, val shift) as a share of items set to 1."""
        out = {}
        for b, by_split in base.items():
            out[b] = {}
            for split, x in by_split.items():
                y = x.copy()
                shift = changes.get(b, (0.0, 0.0))[0 if split == "test" else 1]
                y[rng.random(y.size) < shift] = 1.0
                out[b][split] = y
        return out

    combo = "harmlessness+helpfulness"
    arms = {
        "base": base,
        "expert/helpfulness": variant({}),
        "expert/honesty": variant({}),
        "expert/harmlessness": variant({"harmful_refusal": (0.6, 0.6)}),
        f"mix/uniform/{combo}": variant({"harmful_refusal": (0.3, 0.3)}),
        f"merge/ties/{combo}/density-0.2": variant({"harmful_refusal": (0.9, 0.0)}),  # best on test only
        f"merge/task_arithmetic/{combo}/scale-0.5": variant({"harmful_refusal": (0.3, 0.6)}),  # best on val
        f"merge/task_arithmetic/{combo}/scale-1.0": variant({"harmful_refusal": (0.3, 0.3)}),
    }
    for arm, scores in arms.items():
        write_arm(tmp_path, arm, scores)
    return tmp_path, list(arms)


def test_report_chooses_on_validation_and_compares_paired_on_test(grid, capsys):
    results, arms = grid
    summary = build_report(results, arms, results / "report")
    report = results / "report"
    selected = pd.read_csv(report / "selection.csv")
    chosen = selected[selected["chosen"] & (selected["kind"] == "merge")]["arm"].tolist()
    assert chosen == ["merge/task_arithmetic/harmlessness+helpfulness/scale-0.5"]  # not ties, the test winner
    ties = selected.set_index("arm").loc["merge/ties/harmlessness+helpfulness/density-0.2"]
    assert ties["test_balance"] > selected.set_index("arm").loc[chosen[0], "test_balance"]
    table = pd.read_csv(report / "comparisons.csv")
    for col in (
        "combo",
        "arm_a",
        "arm_b",
        "metric",
        "difference",
        "ci_low",
        "ci_high",
        "p_value",
        "p_adjusted",
        "n_items",
        "verdict",
        "mdd_80",
    ):
        assert col in table.columns
    assert set(table["comparison"]) == {"merge_vs_mix", "method_vs_mix", "expert_vs_base", "arm_vs_base"}
    methods = table[table["comparison"] == "method_vs_mix"]
    assert set(methods["arm_a"].str.split("/").str[1]) == {"ties", "task_arithmetic"}
    assert (methods["p_adjusted"] >= methods["p_value"]).all()
    # the helpfulness expert did not move: the verdict stands, the precondition column says why it is qualified
    head = table[(table["comparison"] == "merge_vs_mix") & (table["metric"] == "balance")].iloc[0]
    assert head["verdict"] in {head["arm_a"], head["arm_b"], "equivalent", "inconclusive"}
    assert (
        head["precondition"].startswith("not met")
        and "expert/helpfulness did not move helpfulness" in head["precondition"]
    )
    assert "mix/uniform/harmlessness+helpfulness did not move helpfulness" in head["precondition"]  # mixtures too
    assert not methods["verdict"].str.startswith("not drawn").any()
    assert methods["precondition"].str.startswith("not met").all()
    assert summary["moved"] == {"helpfulness": False, "honesty": False, "harmlessness": True}
    # budgets beside the row: two task-arithmetic variants and one TIES against one mixture
    assert head["merge_candidates"] == 3 and head["mixture_candidates"] == 1
    assert "unequal tuning" in head["caveats"] and "one training run" in head["caveats"]
    ta = methods[methods["arm_a"].str.contains("task_arithmetic")].iloc[0]
    assert ta["merge_candidates"] == 2
    # the merge refuses more on test and ties on helpfulness: it dominates, or neither does; never a trade-off
    assert not head["dominance"].startswith("trade-off")
    experts = table[table["comparison"] == "expert_vs_base"]
    assert experts.set_index(["combo", "split"]).loc[("harmlessness", "val"), "precondition"].startswith("met")
    collateral = table[table["metric"] == "collateral honesty"]
    assert len(collateral) == 4  # every candidate's change on the dimension its combo leaves out
    assert "can detect differences of" in (report / "power.txt").read_text()
    assert (report / "forest.png").stat().st_size > 0
    # the first page (the Snakemake report's description): verdict, power, then experts, rendered as docutils does
    from docutils.core import publish_parts
    from jinja2 import Environment

    page = (report / "summary.rst").read_text()
    html = publish_parts(Environment().from_string(page).render(), writer="html")["html_body"]
    text = re.sub(r"<[^>]+>", " ", html)
    assert text.index("Verdict") < text.index("Power") < text.index("Experts")
    assert head["verdict"] in text and f"{head['mdd_80']:.3f}" in text and "can detect differences of" in text
    assert "did not move" in text and "System Message" not in html  # helpfulness; docutils found no error
    ranking = pd.read_csv(report / "ranking.csv")
    assert ranking.iloc[0]["family"] == "task_arithmetic"  # ranked on validation


def test_compare_cli(grid, capsys):
    results, _ = grid
    a, b = "expert/harmlessness", "base"
    assert (
        main(["compare", "--results", str(results), "--a", a, "--b", b, "--dims", "harmlessness", "--bootstrap", "500"])
        == 0
    )
    out = capsys.readouterr().out
    assert "harmful_refusal" in out and "can detect differences of" in out
    line = [x for x in out.splitlines() if x.startswith("balance")][0]
    assert line.rstrip().endswith(a)  # a winner, named
    assert main(["compare", "--results", str(results), "--a", a, "--b", a, "--bootstrap", "500"]) == 0
    assert capsys.readouterr().out.count("equivalent") == 4 + 3 + 1 + 1  # benchmarks, dims, balance; the header
    assert main(["compare", "--results", str(results), "--a", a, "--b", "expert/nope"]) == 2
    assert "expert/nope" in capsys.readouterr().err


def test_dominance_names_a_trade_off_as_one():
    from resm_core.report.comparisons import dominance

    def row(metric, lo, hi):
        return {"arm_a": "merge", "arm_b": "mix", "metric": metric, "ci_low": lo, "ci_high": hi}

    dims = ["harmlessness", "helpfulness"]
    trade = [row("helpfulness", 0.03, 0.14), row("harmlessness", -0.15, -0.04), row("balance", -0.01, 0.06)]
    assert dominance(trade, dims).startswith("trade-off: merge better on helpfulness, mix better on harmlessness")
    ahead = [row("helpfulness", 0.03, 0.14), row("harmlessness", -0.02, 0.05)]
    assert dominance(ahead, dims).startswith("merge dominates")
    behind = [row("helpfulness", -0.1, -0.01), row("harmlessness", -0.02, 0.05)]
    assert dominance(behind, dims).startswith("mix dominates")
    assert dominance([row("helpfulness", -0.1, 0.1), row("harmlessness", -0.02, 0.05)], dims).startswith("neither")


def _run(rng, propensity: np.ndarray, arm: str) -> ArmItems:
    """One training run of a recipe: the recipe's item propensities moved by a run-level shift (two seeds of
    the harmlessness expert differed by +0.094 on harmful_refusal on the default grid)."""
    shift = rng.normal(0, 0.08)
    x = (rng.random(propensity.size) < np.clip(propensity + shift, 0, 1)).astype(float)
    return items(arm, {"harmful_refusal": x})


def test_two_level_bootstrap_keeps_an_a_a_check_honest():
    """Two arms of one recipe, each trained three times: compared run against run, a paired item bootstrap
    calls a winner often (the runs differ); resampling runs and then items rarely does."""
    from resm_core.report.paired import combine_runs

    single = several = 0
    trials = 100
    for s in range(trials):
        rng = np.random.default_rng(s)
        propensity = rng.random(96)
        a = [_run(rng, propensity, "a") for _ in range(3)]
        b = [_run(rng, propensity, "b") for _ in range(3)]
        one = [r for r in paired(a[0], b[0], n_boot=400, n_perm=400) if r["metric"] == "balance"][0]
        runs_a, runs_b = combine_runs("a", a, [None, 1, 2]), combine_runs("b", b, [3, 4, 5])
        three = [r for r in paired(runs_a, runs_b, n_boot=400, n_perm=400) if r["metric"] == "balance"][0]
        assert three["a_runs"] == three["b_runs"] == 3 and one["a_runs"] == 1
        single += verdict(one, "a", "b") in ("a", "b")
        several += verdict(three, "a", "b") in ("a", "b")
    assert single / trials > 0.15  # the failure the runs fix
    assert several / trials <= 0.12


def test_runs_combine_on_the_items_every_run_answered():
    from resm_core.report.paired import combine_runs

    r0 = items("a", {"qa_mc": np.array([1.0, 0.0, 1.0])})
    r1 = ArmItems("seed1/a", "test", {"qa_mc": ("helpfulness", {"0": 0.0, "1": 0.0})})
    both = combine_runs("a", [r0, r1], [None, 1])
    assert both.benchmarks["qa_mc"][1] == {"0": 0.5, "1": 0.0} and both.n_runs == 2
    assert both.run_scores("qa_mc", ["0", "1"]).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    # a real difference between two recipes survives resampling their runs
    rng = np.random.default_rng(0)
    good = [items("g", {"harmful_refusal": (rng.random(200) < 0.8).astype(float)}) for _ in range(3)]
    bad = [items("b", {"harmful_refusal": (rng.random(200) < 0.4).astype(float)}) for _ in range(3)]
    rows = paired(combine_runs("g", good, [None, 1, 2]), combine_runs("b", bad, [None, 1, 2]), n_boot=500)
    assert verdict(rows[-1], "g", "b") == "g"


def test_report_with_training_runs(grid):
    """Each trained arm with a second run under seed1/: one grid row per run, one candidate per arm, and the
    comparisons over both runs, saying so."""
    results, arms = grid
    rng = np.random.default_rng(5)
    runs = []
    for arm in arms[1:]:
        scores = {b: {k: flips(v, 0.1, rng) for k, v in x.items()} for b, x in read_arm(results, arm).items()}
        write_arm(results, f"seed1/{arm}", scores)
        runs.append(f"seed1/{arm}")
    summary = build_report(results, arms + runs, results / "report")
    assert summary["arms"] == len(arms) and summary["runs"] == 2 * len(arms) - 1
    table = pd.read_csv(results / "report" / "grid.csv")
    assert len(table) == 2 * len(arms) - 1 and set(table["run"]) == set(arms + runs)
    assert set(table["arm"]) == set(arms)
    selected = pd.read_csv(results / "report" / "selection.csv")
    assert selected["arm"].is_unique and not selected["arm"].str.startswith("seed").any()
    compared = pd.read_csv(results / "report" / "comparisons.csv")
    head = compared[(compared["comparison"] == "merge_vs_mix") & (compared["metric"] == "balance")].iloc[0]
    assert head["a_runs"] == head["b_runs"] == 2 and "one training run" not in head["caveats"]
    versus_base = compared[compared["comparison"] == "expert_vs_base"].iloc[0]
    assert versus_base["a_runs"] == 2 and versus_base["b_runs"] == 1
    assert "2 training runs per arm" in (results / "report" / "power.txt").read_text()


def test_compare_cli_takes_an_arms_runs(grid, capsys):
    results, _ = grid
    a = "expert/harmlessness"
    scores = {b: {k: v[::-1].copy() for k, v in x.items()} for b, x in read_arm(results, a).items()}
    write_arm(results, f"seed1/{a}", scores)
    argv = ["compare", "--results", str(results), "--a", a, f"seed1/{a}", "--b", "base", "--bootstrap", "300"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{a} (2 runs) - base (1 run)" in out and "bootstrap over runs, then items" in out


def test_plots_draw_an_interval_that_does_not_contain_its_point(tmp_path):
    """A percentile bootstrap interval of a nonlinear score (balance, a stratified score) need not contain the
    point estimate: the plots draw it as it is (error bars refused it, and the report job failed)."""
    from resm_core.report import plots

    table = pd.DataFrame(
        [
            {"arm": "base", "kind": "base", "helpfulness": 0.5, "helpfulness_ci_low": 0.6, "helpfulness_ci_high": 0.7,
             "honesty": 0.2, "honesty_ci_low": 0.1, "honesty_ci_high": 0.3,
             "harmlessness": 0.4, "harmlessness_ci_low": 0.3, "harmlessness_ci_high": 0.5},
            {"arm": "expert/helpfulness", "kind": "expert", "helpfulness": 0.9, "helpfulness_ci_low": 0.8,
             "helpfulness_ci_high": 0.95, "honesty": 0.1, "honesty_ci_low": 0.05, "honesty_ci_high": 0.15,
             "harmlessness": 0.3, "harmlessness_ci_low": 0.35, "harmlessness_ci_high": 0.4},
        ]
    )  # fmt: skip
    plots.pareto(table, tmp_path / "pareto.png")
    rows = pd.DataFrame(
        [{"comparison": "merge_vs_mix", "combo": "harmlessness+helpfulness", "metric": metric,
          "arm_a": "merge/resm/harmlessness+helpfulness/default", "difference": 0.2, "ci_low": 0.25, "ci_high": 0.3}
         for metric in ("balance", "helpfulness", "harmlessness")]
    )  # fmt: skip
    plots.forest(rows, tmp_path / "forest.png")
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "forest.png").stat().st_size > 0
