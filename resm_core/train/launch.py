"""Data-parallel training: `resm train --processes N` starts N copies of itself through torch's elastic
launcher (what `torchrun` and `accelerate launch --multi_gpu` run), one per GPU, or per CPU with gloo.

A run already started by a launcher (torchrun, `accelerate launch`, or srun with the variables set) is
not launched again: the environment's WORLD_SIZE/RANK decide, so multi-node runs work as the site
starts them. FSDP and DeepSpeed ZeRO-3 are the Trainer's own arguments (`training.extra`).
"""

from __future__ import annotations

import os
import sys
import uuid

from resm_core.errors import TrainingError

# `python -m` of the package's CLI, spelled so the train stage's code fingerprint (stage_code) follows the
# trainer, not every command the CLI can run
CLI_MODULE = f"{__name__.split('.')[0]}.cli"


def launched() -> bool:
    """True inside a process a distributed launcher started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank in a launched run (0 for a lone process)."""
    return int(os.environ.get("RANK", "0"))


def launch(processes: int, argv: list[str]) -> None:
    """Run `python -m CLI_MODULE ARGV` in `processes` local processes and wait for all of them. A rank
    that fails ends the run with one line naming it (its own error is above, in the same log)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    threads = max(1, (os.cpu_count() or 1) // processes)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # N processes must not each take every core
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port: two runs on one node do not meet
        max_restarts=0,
        monitor_interval=0.5,
    )
    try:
        elastic_launch(config, sys.executable)("-m", CLI_MODULE, *argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise TrainingError(
            f"training process {rank} of {processes} failed (exit code {failure.exitcode}); its error is above"
        ) from None
