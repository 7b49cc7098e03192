"""The Snakemake workflow run: the tiny grid end to end (with hostile paths), and incremental reruns
(dry-run job counts after a complete run, a kill, code and config changes)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import SNAKEMAKE, copy_workflow, job_counts, run

from resm_core.grid import arms

# A results and an assets path a shell would misread: spaces, both quotes, `;`, `$( )` and backticks. Every rule
# of the tiny grid runs with them; a value that reached a shell command unquoted would create a PWNED file.
HOSTILE = 'it\'s "odd" ;touch PWNED1;: $(touch PWNED2) `touch PWNED3`'


# One pair: every per-combo rule is one code path for a pair and the triple (the triple's merges, mixtures and
# 3-dimension balance are unit-tested, its DAG in the paper presets' dry runs), and each combo adds about 10 jobs
# to the critical path of `make test`. Only the pair's dims get experts: honesty is evaluated, not trained.
COMBOS = ["harmlessness+helpfulness"]
# The pair's frontier at its two vertices: task arithmetic and ratio mixtures at weights 1-0 and 0-1 (a lattice
# of 2 points per edge, so that test_a_finer_lattice_runs_only_its_new_points can add the centre).
FRONTIER = {"points": 2, "combos": COMBOS[:1], "merges": ["task_arithmetic"]}
N_FRONT = 2
N_MERGES = 3 * len(COMBOS) + N_FRONT  # task arithmetic, TIES and RESM, one setting each; the front's merges
N_MIXTURES = len(COMBOS) + N_FRONT  # a uniform mixture per combo; the front's ratio mixtures
N_ARMS = 1 + 2 + N_MIXTURES + N_MERGES  # the base, the pair's 2 experts


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, assets_root):
    """The tiny grid, run once in a copy of the workflow (so its code can be edited without touching the repo),
    with hostile results and assets paths."""
    work = tmp_path_factory.mktemp("workflow")
    assets = work / f"assets {HOSTILE}"
    assets.symlink_to(Path(assets_root).resolve(), target_is_directory=True)

    def hostile(config):
        config["results"] = f"results/tiny {HOSTILE}"
        config["assets"] = str(assets)
        config["combos"] = COMBOS
        config["frontier"] = FRONTIER

    configfile, config = copy_workflow(work, assets_root, hostile)
    run(SNAKEMAKE + ["--configfile", str(configfile), "--cores", "2", "--quiet"], cwd=work, timeout=1500)
    return work, configfile, config


@pytest.fixture
def own_run(tiny_run, tmp_path):
    """A private copy of the finished tiny run (workflow, code, results, Snakemake's metadata, mtimes kept):
    a test that edits code or deletes outputs changes nothing another test sees, in any order."""
    work, _, config = tiny_run
    copy_dir = tmp_path / "run"
    shutil.copytree(work, copy_dir, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return copy_dir, copy_dir / "tiny.yaml", config


@pytest.mark.workflow
def test_tiny_grid_end_to_end(tiny_run):
    import pandas as pd

    work, _, config = tiny_run
    assert not list(work.rglob("PWNED*")), "a config value ran as a shell command"
    report = work / config["results"] / "report"
    grid = pd.read_csv(report / "grid.csv")
    assert len(grid) == len(arms(config)) == N_ARMS
    assert set(grid["kind"]) == {"base", "expert", "mixture", "merge"}
    assert grid[["helpfulness", "honesty", "harmlessness", "balance"]].notna().all().all()
    assert len(pd.read_csv(report / "merge_vs_mix.csv")) == len(COMBOS)
    compared = pd.read_csv(report / "comparisons.csv")
    head = compared[(compared["comparison"] == "merge_vs_mix") & (compared["metric"] == "balance")]
    assert len(head) == len(COMBOS) and head["mdd_80"].notna().all() and (head["n_items"] > 0).all()
    selected = pd.read_csv(report / "selection.csv")
    assert selected.groupby(["combo", "kind"])["chosen"].sum().eq(1).all()  # one pick per combo and kind
    for plot in ("profile.png", "pareto.png", "conflicts.png", "resm_ranks.png", "forest.png"):
        assert (report / plot).stat().st_size > 1000, plot
    assert not list((work / "results").rglob(".*.tmp-*"))  # nothing half-written left behind
    # the lm-eval task (examples/lm_eval, kind lm_eval) is paired item by item like the embedded benchmarks
    lm = compared[(compared["comparison"] == "merge_vs_mix") & (compared["metric"] == "larger_number")]
    assert len(lm) == len(COMBOS) and (lm["n_items"] > 0).all() and lm["mdd_80"].notna().all()
    fetched = json.loads((work / config["results"] / "hub" / "lm_eval" / "larger_number.json").read_text())
    assert fetched["tasks"] == {"larger_number": {"docs": 48, "fewshot_docs": 0}}
    base = work / config["results"] / "eval" / "base"
    records = [json.loads(line) for line in (base / "larger_number.jsonl").read_text().splitlines()]
    result = json.loads((base / "larger_number.json").read_text())
    assert len(records) == result["n"] + result["val"]["n"] == 48  # run whole: lm-eval's aggregate is the item mean
    assert result["lm_eval"]["aggregate"] == pytest.approx(sum(r["score"] for r in records) / 48, abs=1e-12)
    # the frontier: its points, the hypervolume comparison, the plot, and resm pick on the finished run
    fronts = work / config["results"] / "fronts"
    points = pd.read_csv(fronts / "points.csv")
    assert len(points) == 2 * N_FRONT and set(points["tracer"]) == {"task_arithmetic", "mixture"}
    assert points[["w_harmlessness", "w_helpfulness"]].sum(axis=1).eq(1).all()
    (volume,) = pd.read_csv(fronts / "hypervolume.csv").to_dict("records")
    assert volume["verdict"] in {"merge", "mixture", "equivalent", "inconclusive"} and volume["reference"] == "base"
    assert volume["ci_low"] <= volume["difference"] <= volume["ci_high"] or volume["ci_low"] == volume["ci_high"]
    assert (fronts / f"{COMBOS[0]}.png").stat().st_size > 1000
    picked = subprocess.run(
        [sys.executable, "-m", "resm_core.cli", "pick", "--results", str(work / config["results"]), "--combo",
         COMBOS[0], "--maximize", "helpfulness", "--subject-to", "harmlessness>=0", "--json", str(work / "pick.json")],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    assert picked.returncode == 0, picked.stderr
    answer = json.loads((work / "pick.json").read_text())
    assert answer["merge"]["chosen"].startswith("merge/") and answer["mixture"]["chosen"].startswith("mix/")


@pytest.mark.workflow
def test_a_complete_run_has_nothing_left_to_do(tiny_run):
    work, configfile, _ = tiny_run
    assert job_counts(work, configfile) == {}


@pytest.mark.workflow
def test_changing_one_merge_hyperparameter_reruns_that_merge_its_evaluation_and_the_report(tiny_run, tmp_path):
    work, _, config = tiny_run
    changed = copy.deepcopy(config)
    changed["merges"]["ties"] = [{"density": "0.3"}]
    path = work / "changed_merge.yaml"
    path.write_text(yaml.safe_dump(changed))
    # one cell per combo
    assert job_counts(work, path) == {"merge": len(COMBOS), "evaluate": len(COMBOS), "report": 1, "all": 1}


@pytest.mark.workflow
def test_changing_the_evaluation_retrains_nothing(tiny_run):
    work, _, config = tiny_run
    changed = copy.deepcopy(config)
    changed["evaluation"]["benchmarks"]["abstention"]["n"] = 6
    path = work / "changed_eval.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert job_counts(work, path) == {"evaluate": N_ARMS, "report": 1, "frontier_report": 1, "all": 1}


@pytest.mark.workflow
def test_a_second_seed_trains_only_its_runs_and_the_report_resamples_them(own_run):
    import pandas as pd

    work, _, config = own_run
    seeded = copy.deepcopy(config)
    seeded["training"]["seeds"] = [config["training"].get("seed", 0), 7]
    del seeded["frontier"]
    seeded["merges"] = {"task_arithmetic": config["merges"]["task_arithmetic"]}  # a merge per seed is the point
    n_arms = 1 + 2 + 1 + 1  # the base, the pair's 2 experts (no combo merges honesty), a mixture, a merge
    path = work / "seeded.yaml"
    path.write_text(yaml.safe_dump(seeded))
    trained = 2 + 1  # experts and the mixture; the base is not trained
    assert job_counts(work, path) == {
        "train_expert": 2,
        "extract_taskvec": 2,
        "train_mixture": 1,
        "merge": 1,
        "evaluate": trained + 1,
        "report": 1,
        "all": 1,
    }
    run(SNAKEMAKE + ["--configfile", str(path), "--cores", "2", "--quiet"], cwd=work, timeout=1500)
    report = work / config["results"] / "report"
    grid = pd.read_csv(report / "grid.csv")
    assert len(grid) == 2 * n_arms - 1 and grid["run"].str.startswith("seed7/").sum() == n_arms - 1
    compared = pd.read_csv(report / "comparisons.csv")
    head = compared[(compared["comparison"] == "merge_vs_mix") & (compared["metric"] == "balance")]
    assert (head["a_runs"] == 2).all() and (head["b_runs"] == 2).all()
    assert not head["caveats"].str.contains("one training run").any()
    manifest = work / config["results"] / "models" / "seed7" / "expert" / "harmlessness" / "resm_manifest.json"
    assert json.loads(manifest.read_text())["seed"] == 7


@pytest.mark.workflow
def test_a_finer_lattice_runs_only_its_new_points(tiny_run):
    """points 2 -> 3 adds the centre (0.5-0.5): its merge, its mixture's data and training, their evaluations,
    and the reports; the vertices, the experts and the grid stay as they are."""
    work, _, config = tiny_run
    finer = copy.deepcopy(config)
    finer["frontier"]["points"] = 3
    path = work / "finer_lattice.yaml"
    path.write_text(yaml.safe_dump(finer))
    assert set(arms(finer)) - set(arms(config)) == {
        f"merge/task_arithmetic/{COMBOS[0]}/front-0.5-0.5",
        f"mix/ratio-0.5-0.5/{COMBOS[0]}",
    }
    assert job_counts(work, path) == {
        "merge": 1,
        "mix_data": 1,
        "train_mixture": 1,
        "evaluate": 2,
        "report": 1,
        "frontier_report": 1,
        "all": 1,
    }


@pytest.mark.workflow
def test_changing_merge_code_reruns_merges_not_training(own_run):
    work, configfile, _ = own_run
    with open(work / "resm_core" / "merge" / "averaging.py", "a") as f:
        f.write("\n# a change to the merge code\n")
    assert job_counts(work, configfile) == {
        "merge": N_MERGES,
        "evaluate": N_MERGES,
        "report": 1,
        "frontier_report": 1,
        "all": 1,
    }


@pytest.mark.workflow
def test_changing_the_splits_refits_the_judges(own_run):
    """The judges are fitted on split rows: a change to the splits must reach them, not only the data."""
    work, configfile, _ = own_run
    with open(work / "resm_core" / "data" / "splits.py", "a") as f:
        f.write("\n# a change to the splits\n")
    assert job_counts(work, configfile) == {
        "build_data": 3,  # every dim's evaluation items
        "decontaminate_data": 2,  # the trained dims
        "fit_judges": 1,
        "mix_data": N_MIXTURES,
        "train_expert": 2,
        "train_mixture": N_MIXTURES,
        "extract_taskvec": 2,
        "conflicts": len(COMBOS),
        "merge": N_MERGES,
        "evaluate": N_ARMS,
        "report": 1,
        "frontier_report": 1,
        "all": 1,
    }


@pytest.mark.workflow
def test_a_killed_run_leaves_nothing_finished_and_resumes(own_run):
    import signal
    import time

    work, configfile, config = own_run
    target = work / config["results"] / "eval" / "base"
    wanted = f"{config['results']}/eval/base/summary.json"  # relative, as the rules' output patterns are
    shutil.rmtree(target)
    cmd = SNAKEMAKE + [wanted, "--configfile", str(configfile), "--cores", "1"]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(target.parent.glob(".base.tmp-*")):
        assert proc.poll() is None, "snakemake stopped before the evaluation started"
        time.sleep(0.2)  # wait until the evaluation is writing its staging directory
    assert list(target.parent.glob(".base.tmp-*")), "the evaluation never started writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (target / "summary.json").exists()  # nothing that looks finished
    run(SNAKEMAKE + ["--unlock", "--configfile", str(configfile)], cwd=work)  # a killed Snakemake leaves its lock
    run(SNAKEMAKE + [wanted, "--configfile", str(configfile), "--cores", "2", "--rerun-incomplete"], cwd=work)
    summary = json.loads((target / "summary.json").read_text())
    assert summary["arm"] == "base" and summary["complete"]
    run(SNAKEMAKE + ["--configfile", str(configfile), "--cores", "2", "--quiet"], cwd=work)  # the report catches up
    assert job_counts(work, configfile) == {}


@pytest.mark.workflow
def test_snakemake_report_shows_the_tables_and_plots(tiny_run):
    work, configfile, _ = tiny_run
    html = work / "report.html"
    run(SNAKEMAKE + ["--configfile", str(configfile), "--cores", "1", "--report", str(html)], cwd=work)
    text = html.read_text(errors="replace")
    assert "Pareto front" in text and "merge_vs_mix.csv" in text and "resm_ranks.png" in text
    assert "hypervolume.csv" in text and f"{COMBOS[0]}.png" in text  # the frontier's category


@pytest.mark.workflow
def test_the_report_follows_layered_config_files(own_run):
    """With two --configfile, neither file alone is the config: the report gets the arms from the workflow."""
    import pandas as pd

    work, configfile, config = own_run
    layer = work / "layer.yaml"
    layer.write_text(yaml.safe_dump({"results": config["results"]}))  # valid only on top of the tiny config
    run(
        SNAKEMAKE + ["--configfile", str(configfile), str(layer), "--cores", "1", "--forcerun", "report", "--quiet"],
        cwd=work,
    )
    assert len(pd.read_csv(work / config["results"] / "report" / "grid.csv")) == len(arms(config))
    done = subprocess.run(
        [sys.executable, "-m", "resm_core.cli", "report", "--arms", "base"], cwd=work, capture_output=True, text=True
    )
    assert done.returncode != 0 and "--arms needs --results" in done.stderr
