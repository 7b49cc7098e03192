"""The workflow on a real (single-node) SLURM cluster through the executor plugin and profiles/slurm-ci.

Every job goes through sbatch. The grid is the tiny one cut to one combo and one merge method
(29 jobs, every rule of the workflow), so CI on 2 cores stays well under 15 minutes; the full tiny
grid runs locally in test_workflow.py. Needs root and apt-get: skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import slurm_cluster
from workflow_helpers import SNAKEMAKE, copy_workflow, job_counts

from resm_core.grid import arms

pytestmark = pytest.mark.slurm


def one_combo(config: dict) -> None:
    config["combos"] = ["harmlessness+helpfulness"]
    config["merges"] = {"resm": [{}]}  # one merge: the rule is the same for every method
    # requests a one-node test cluster can grant (the rules' defaults are sized for the 135M model)
    config["resources"] = {kind: {"mem_mb": 1000, "runtime": 15} for kind in ("default", "train", "merge", "evaluate")}
    # the fewest items that still fill every dimension: a SLURM job's time is mostly starting Python, but
    # each item saved is saved in six evaluations on a contended machine
    config["evaluation"]["benchmarks"] = {
        name: {"n": 2, "n_val": 2} for name in ("instruction_following", "abstention", "harmful_refusal")
    }


@pytest.fixture(scope="module")
def slurm_partition():
    reason = slurm_cluster.why_not()
    if reason:
        pytest.skip(f"no throwaway SLURM cluster: {reason}")
    with slurm_cluster.cluster() as partition:
        yield partition


def test_tiny_grid_runs_through_sbatch(slurm_partition, tmp_path, assets_root):
    import pandas as pd

    configfile, config = copy_workflow(tmp_path, assets_root, edit=one_combo)
    cmd = [
        "timeout",
        "-k",
        "10",
        # a guard against a hang, not a speed test: 25 jobs through sbatch took 7 minutes beside two other
        # test workers on a 2-core machine, and over 15 on CI's
        "1800",
        *SNAKEMAKE,
        "--workflow-profile",
        "profiles/slurm-ci",
        "--configfile",
        str(configfile),
        "--quiet",
        "rules",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    if done.returncode != 0:
        logs = sorted((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
        tail = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in logs[-3:])
        pytest.fail(f"snakemake on SLURM exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}{tail}")

    # every rule ran as a SLURM job, and the grid is complete
    slurm_logs = tmp_path / ".snakemake" / "slurm_logs"
    ran = {p.name.removeprefix("rule_") for p in slurm_logs.iterdir() if p.is_dir()}
    assert {
        "prepare_base",
        "fit_judges",
        "build_data",
        "decontaminate_data",
        "train_expert",
        "mix_data",
        "train_mixture",
        "extract_taskvec",
        "conflicts",
        "merge",
        "evaluate",
        "report",
    } <= ran, ran
    report = tmp_path / "results" / "tiny" / "report"
    grid = pd.read_csv(report / "grid.csv")
    assert sorted(grid["arm"]) == sorted(arms(config)) and len(grid) == 5  # base, 2 experts, a mixture, a merge
    assert grid[["helpfulness", "honesty", "harmlessness", "balance"]].notna().all().all()
    assert json.loads(
        (
            tmp_path
            / "results"
            / "tiny"
            / "eval"
            / "merge"
            / "resm"
            / "harmlessness+helpfulness"
            / "default"
            / "summary.json"
        ).read_text()
    )["complete"]
    for plot in ("profile.png", "pareto.png", "conflicts.png", "resm_ranks.png"):
        assert (report / plot).stat().st_size > 1000, plot
    # slurmctld saw the jobs finish, and a rerun (under the local profile) finds nothing to do
    squeue = subprocess.run(["squeue", "--states=all", "-h", "-o", "%j %T"], capture_output=True, text=True)
    assert squeue.returncode == 0 and "COMPLETED" in squeue.stdout, squeue.stdout + squeue.stderr
    assert job_counts(tmp_path, configfile) == {}
