"""The frontier in the grid: its lattice and arm names, its config checks, the report's points, fronts and
hypervolume comparison on stand-in results, `resm pick` and the validation choice of a front's other
hyperparameters."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_report import write_arm

from resm_core.cli import main
from resm_core.errors import ConfigError
from resm_core.grid import arms, front_point_of, frontier_points, lattice, mixture_ratios, point_name
from resm_core.report.fronts import build_fronts
from resm_core.report.pick import choose_front, pick
from resm_core.workflow_config import check_config, load_config

REPO = Path(__file__).resolve().parents[1]
COMBO = "harmlessness+helpfulness"


def test_the_lattice_covers_the_simplex_and_names_round_trip():
    assert [point_name(w) for w in lattice(2, 5)] == ["1-0", "0-1", "0.75-0.25", "0.25-0.75", "0.5-0.5"]
    three = lattice(3, 4)
    assert len(three) == 4 * 5 // 2 and all(sum(w) == pytest.approx(1.0) for w in three)
    assert len(set(three)) == len(three)
    assert set(lattice(2, 3)) <= set(lattice(2, 5))  # a finer lattice keeps the coarser one's points (and arms)
    point = front_point_of(f"merge/ties/{COMBO}/front-0.25-0.75")
    assert point.tracer == "ties" and point.weights == (0.25, 0.75)
    assert point.merge_weights == [0.5, 1.5]  # k * w: the centre is the grid's unit-weight merge
    mixture = front_point_of(f"mix/ratio-0.25-0.75/{COMBO}")
    assert mixture.tracer == "mixture" and mixture_ratios("ratio-0.25-0.75", COMBO) == {
        "harmlessness": 0.25,
        "helpfulness": 0.75,
    }
    assert front_point_of(f"mix/uniform/{COMBO}") is None and front_point_of("base") is None


def _tiny(frontier: dict) -> dict:
    config = copy.deepcopy(load_config(REPO / "configs" / "tiny.yaml"))
    config["frontier"] = frontier
    return config


def test_the_frontier_adds_its_points_as_arms():
    config = _tiny({"points": 3, "combos": [COMBO], "merges": ["task_arithmetic"]})
    check_config(config)
    new = set(arms(config)) - set(arms(_tiny({"points": 3, "combos": [COMBO], "merges": []}) | {"frontier": None}))
    assert new == {f"merge/task_arithmetic/{COMBO}/front-{w}" for w in ("1-0", "0-1", "0.5-0.5")} | {
        f"mix/ratio-{w}/{COMBO}" for w in ("1-0", "0-1", "0.5-0.5")
    }
    assert len(frontier_points(_tiny({"points": 3, "merges": ["ties"], "mixtures": False}))) == 3 * 3 + 6


@pytest.mark.parametrize(
    "frontier,needle",
    [
        ({"combos": ["helpfulness+harmlessness"]}, "frontier.combos: 'helpfulness+harmlessness' is not one of combos"),
        ({"merges": ["dare_ties"]}, "frontier.merges: 'dare_ties' is not in merges"),
        ({"merges": [], "mixtures": False}, "frontier: neither merges nor mixtures trace it"),
        ({"points": 1}, "frontier.points"),
        ({"pionts": 5}, "pionts"),
    ],
)
def test_a_bad_frontier_is_a_config_error_naming_its_key(frontier, needle):
    with pytest.raises(ConfigError, match=needle.replace("+", r"\+").replace(".", r"\.").replace("'", "'")):
        check_config(_tiny(frontier))


def test_a_method_without_per_expert_weights_cannot_trace_a_front():
    config = _tiny({"merges": ["model_stock"]})
    config["merges"]["model_stock"] = [{}]
    with pytest.raises(ConfigError, match="model_stock takes no per-expert weights"):
        check_config(config)


@pytest.fixture()
def front_results(tmp_path):
    """A base, two experts, three merge points and three mixture points of known scores: on both splits the
    mixtures reach further (their centre beats the merges' centre on both dims)."""
    n = 200

    def arm(help_rate: float, harm_rate: float, val_shift: float = 0.0) -> dict:
        def split(rate: float, size: int, seed: int) -> np.ndarray:
            out = np.zeros(size)
            out[: int(round(rate * size))] = 1.0
            return np.random.default_rng(seed).permutation(out)

        return {
            "qa_mc": {"test": split(help_rate, n, 1), "val": split(min(help_rate + val_shift, 1), n, 2)},
            "harmful_refusal": {"test": split(harm_rate, n, 3), "val": split(harm_rate, n, 4)},
        }

    table = {
        "base": arm(0.2, 0.2),
        "expert/helpfulness": arm(0.8, 0.1),
        "expert/harmlessness": arm(0.1, 0.9),
        f"merge/task_arithmetic/{COMBO}/front-1-0": arm(0.1, 0.85),
        f"merge/task_arithmetic/{COMBO}/front-0.5-0.5": arm(0.35, 0.4),
        f"merge/task_arithmetic/{COMBO}/front-0-1": arm(0.75, 0.15),
        f"mix/ratio-1-0/{COMBO}": arm(0.15, 0.9),
        f"mix/ratio-0.5-0.5/{COMBO}": arm(0.6, 0.75),
        f"mix/ratio-0-1/{COMBO}": arm(0.8, 0.2),
        f"merge/task_arithmetic/{COMBO}/scale-0.5": arm(0.4, 0.5),
        f"merge/task_arithmetic/{COMBO}/scale-1.0": arm(0.5, 0.4, val_shift=0.3),  # best on validation only
    }
    for name, scores in table.items():
        write_arm(tmp_path, name, scores)
    return tmp_path, list(table)


def test_the_report_draws_each_front_and_names_the_front_ahead(front_results, tmp_path):
    results, names = front_results
    volumes = build_fronts(results, [a for a in names if "scale-" not in a], tmp_path / "fronts", n_boot=400)
    points = pd.read_csv(tmp_path / "fronts" / "points.csv")
    assert len(points) == 6 and set(points["tracer"]) == {"task_arithmetic", "mixture"}
    row = points.set_index("arm").loc[f"mix/ratio-0.5-0.5/{COMBO}"]
    assert (row["w_harmlessness"], row["w_helpfulness"]) == (0.5, 0.5)
    assert row["test_helpfulness"] == pytest.approx(0.6) and row["test_harmlessness"] == pytest.approx(0.75)
    assert row["vs_base_helpfulness"] == pytest.approx(0.4) and row["vs_base_helpfulness_ci_low"] > 0
    merges = points[points["tracer"] == "task_arithmetic"].set_index("arm")
    assert merges["val_front"].all()  # a staircase: no merge point dominates another
    (comparison,) = volumes.to_dict("records")
    # by hand, above the base (0.2, 0.2): mixtures 0.55 * 0.7 + 0.05 * 0.55 = 0.4125 ... computed exactly below
    mix = np.array([[0.9, 0.15], [0.75, 0.6], [0.2, 0.8]])  # (harmlessness, helpfulness)
    merge = np.array([[0.85, 0.1], [0.4, 0.35], [0.15, 0.75]])
    from resm_core.report.frontier import hypervolume

    assert comparison["mixture_hv"] == pytest.approx(hypervolume(mix, np.array([0.2, 0.2])))
    assert comparison["merge_hv"] == pytest.approx(hypervolume(merge, np.array([0.2, 0.2])))
    assert comparison["verdict"] == "mixture" and comparison["ci_high"] < 0
    assert (tmp_path / "fronts" / f"{COMBO}.png").stat().st_size > 10_000


def test_pick_chooses_on_validation_under_constraints(front_results, capsys):
    results, _ = front_results
    answer = pick(results, COMBO, maximize="helpfulness", constraints=["harmlessness>=0.7"])
    assert answer["mixture"]["chosen"] == f"mix/ratio-0.5-0.5/{COMBO}"
    assert answer["merge"]["chosen"] == f"merge/task_arithmetic/{COMBO}/front-1-0"  # the only merge at 0.85
    assert answer["mixture"]["test"]["helpfulness"]["score"] == pytest.approx(0.6)
    assert answer["mixture"]["vs_base"]["harmlessness"]["ci_low"] > 0
    none = pick(results, COMBO, maximize="balance", constraints=["harmlessness>=0.95"])
    assert none["merge"]["chosen"] is None and none["mixture"]["chosen"] is None
    main(["pick", "--results", str(results), "--combo", COMBO, "--maximize", "helpfulness", "--subject-to",
          "harmlessness>=0.7", "--json", str(results / "pick.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert f"mixture: mix/ratio-0.5-0.5/{COMBO}" in out and "vs base, helpfulness" in out
    assert json.loads((results / "pick.json").read_text())["mixture"]["chosen"] == f"mix/ratio-0.5-0.5/{COMBO}"
    for bad, needle in (("harmlessness=>0.7", "expected METRIC>=NUMBER"), ("honesty>=0.1", "not one of the combo")):
        with pytest.raises(ConfigError, match=needle):
            pick(results, COMBO, constraints=[bad])


def test_a_fronts_other_hyperparameters_are_chosen_on_validation(front_results, tmp_path):
    results, _ = front_results
    candidates = {
        f"merge/task_arithmetic/{COMBO}/scale-0.5": {"scale": "0.5"},
        f"merge/task_arithmetic/{COMBO}/scale-1.0": {"scale": "1.0"},  # better on validation, worse on test
    }
    out = tmp_path / "recipe.yaml"
    main(["frontier", "choose", "--results", str(results), "--method", "task_arithmetic", "--combo", COMBO,
          "--candidates", json.dumps(candidates), "--out", str(out)])  # fmt: skip
    recipe = yaml.safe_load(out.read_text())
    assert recipe == {"method": "task_arithmetic", "params": {"scale": "1.0"}}
    assert "chosen on validation" in out.read_text()
    assert choose_front(results, "task_arithmetic", COMBO, candidates)["params"] == {"scale": "1.0"}
