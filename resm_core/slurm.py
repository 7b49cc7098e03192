"""One place for a job's resources: the config's `resources:` section. A profile supplies only site settings.

Why: inside the SLURM executor plugin a profile's `cpus_per_task` beats a rule's `threads`, and its
`set-resources` replace the rule's values, so a profile that repeats resources silently changes what sbatch
is asked for (a GPU merge running 8 threads on 4 CPUs; the config's memory replaced). The workflow refuses
such a profile before any job, and `resm plan` prints the sbatch flags each rule gets from the plugin's own
functions.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from resm_core.errors import ConfigError

# What the config's `resources.{default,train,merge,evaluate}` decide, per rule: a profile's `set-resources`
# may not name them (they would replace the config's values), nor `set-threads`.
CONFIG_OWNED = (
    "mem_mb",
    "mem_mb_per_cpu",
    "runtime",
    "gpu",
    "gpu_model",
    "gres",
    "cpus_per_task",
    "cpus_per_gpu",
    "disk_mb",
    "tasks",
    "tasks_per_gpu",
)
# Of those, what a profile's `default-resources` may not set either: no rule sets them, so a default would
# reach every job and win over its threads or GPU count. (Every rule sets mem_mb and runtime itself, so a
# default of those is never used.)
NOT_DEFAULTS = tuple(k for k in CONFIG_OWNED if k not in ("mem_mb", "runtime", "disk_mb"))
SITE_SETTINGS = "slurm_partition, slurm_account, slurm_extra, constraint, qos, clusters"


def check_profile(
    default_resources: Mapping[str, Any] | None,
    set_resources: Mapping[str, Any] | None,
    set_threads: Mapping[str, Any] | None,
) -> None:
    """Refuse a profile (or command line) that sets what the config owns, naming the key and the rule."""
    problems = [f"default-resources: {key}" for key in default_resources or {} if key in NOT_DEFAULTS]
    for rule, resources in (set_resources or {}).items():
        problems += [f"set-resources: {rule}: {key}" for key in resources or {} if key in CONFIG_OWNED]
    problems += [f"set-threads: {rule}" for rule in (set_threads or {})]
    if problems:
        raise ConfigError(
            f"the profile (or command line) sets {', '.join(problems)}: a job's threads, memory, runtime and GPUs "
            f"come from the config's `resources:` section (train, merge, evaluate, default), where SLURM gets "
            f"them as written; a profile supplies only site settings ({SITE_SETTINGS})"
        )


def sbatch_flags(job: Any) -> str:
    """The resource flags the SLURM executor plugin gives this job's sbatch call (account and partition as
    it writes them when they are set; the job name, log file and comment left out)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    account = job.resources.get("slurm_account")
    partition = job.resources.get("slurm_partition")
    params = {
        "run_uuid": "-",
        "slurm_logfile": "-",
        "comment_str": "-",
        "account": f"-A {shlex.quote(str(account))}" if account else "",
        "partition": f"-p {shlex.quote(str(partition))}" if partition else "",
        "workdir": None,
    }
    call = get_submit_command(job, params) + set_gres_string(job)
    prefix = "sbatch --parsable --job-name - --output - --export=ALL --comment -"
    if not call.startswith(prefix):  # the plugin changed how it builds the call: say so, do not guess
        raise RuntimeError(f"the SLURM plugin's sbatch call has a new shape: {call}")
    return " ".join(call[len(prefix) :].split())
