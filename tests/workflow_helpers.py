"""Running the workflow from tests: a private copy of it, Snakemake as a subprocess, dry-run job counts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run(cmd, cwd=REPO, timeout=900):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def copy_workflow(work: Path, assets_root: Path, edit=None) -> tuple[Path, dict]:
    """The workflow and its code copied to `work` (so tests can edit the code), with the tiny config
    (changed by `edit`, if given) written to `work/tiny.yaml`."""
    for item in ("Snakefile", "rules", "captions", "envs", "profiles", "config.yaml", "examples"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    shutil.copytree(REPO / "resm_core", work / "resm_core", ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["results"] = "results/tiny"
    config["assets"] = str(Path(assets_root).resolve())
    if edit:
        edit(config)
    configfile = work / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return configfile, config


def job_counts(workdir: Path, configfile: Path) -> dict[str, int]:
    """Jobs a dry run would execute, by rule."""
    out = run(SNAKEMAKE + ["-n", "--quiet", "rules", "--configfile", str(configfile), "--cores", "2"], cwd=workdir)
    counts = {}
    for line in out.splitlines():
        m = re.fullmatch(r"\s*([a-z_]+)\s+(\d+)\s*", line)
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts
