"""Every job of a run, as Snakemake's own API builds them (with a profile's settings parsed by Snakemake's own
command-line parser), so `resm plan` reads resources from the jobs rather than from the dry run's text, which
a Snakemake upgrade may reword."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resm_core.errors import ConfigError


@dataclass(frozen=True)
class PlannedJob:
    rule: str
    local: bool  # a localrule: runs where snakemake runs (downloads on the login node)
    resources: dict[str, Any]
    sbatch: str  # the resource flags of its sbatch call under the SLURM plugin ("" for a local rule)


def planned_jobs(configfile: Path, snakefile: Path, profile: Path | None = None) -> list[PlannedJob]:
    """The whole run's jobs (as if nothing were done yet), each with the resources it asks for."""
    from snakemake.api import SnakemakeApi
    from snakemake.cli import parse_args
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
    )

    from resm_core.slurm import sbatch_flags

    argv = ["--dry-run", "--snakefile", str(snakefile), "--configfile", str(configfile)]
    argv += ["--workflow-profile", str(profile) if profile else "none"]
    _, args = parse_args(argv)
    resources = ResourceSettings(
        default_resources=args.default_resources,
        overwrite_resources=args.set_resources,
        overwrite_threads=args.set_threads,
    )
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(
                snakefile=Path(snakefile),
                workdir=Path.cwd(),
                config_settings=ConfigSettings(configfiles=args.configfile),
                resource_settings=resources,
                storage_settings=StorageSettings(),
            )
            # Snakemake's API builds the DAG only to run or print it: its workflow object is the one way to
            # the jobs themselves (a renamed method fails loudly here, never silently)
            workflow = workflow_api.dag(DAGSettings(forceall=True)).workflow_api._workflow
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            local = workflow._localrules
            jobs = []
            for job in workflow.dag.jobs:
                if job.rule.name == "all" or job.rule.norun:
                    continue
                is_local = job.rule.name in local
                jobs.append(
                    PlannedJob(
                        rule=job.rule.name,
                        local=is_local,
                        resources={k: v for k, v in job.resources.items() if not k.startswith("_")},
                        sbatch="" if is_local else sbatch_flags(job),
                    )
                )
    except ConfigError:
        raise
    except Exception as exc:  # a Snakefile or config error: Snakemake's own message, one line
        raise ConfigError(f"{configfile}: the workflow could not be planned: {exc}") from None
    if not jobs:
        raise ConfigError(f"{configfile}: the workflow has no jobs")
    return jobs
