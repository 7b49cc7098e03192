"""`resm train`: its flags come from TrainRequest."""

from __future__ import annotations

import argparse

from resm_core.options import add_arguments, from_namespace
from resm_core.train.request import TrainRequest


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="fine-tune with SFT or DPO, full or LoRA (TRL + PEFT); resumable")
    add_arguments(p, TrainRequest)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from resm_core.train.launch import launch, launched
    from resm_core.train.trainer import train

    req = from_namespace(TrainRequest, args, progress=not args.quiet)
    if req.processes > 1 and not launched():
        launch(req.processes, args.argv)  # rank 0 prints the summary
        return
    m = train(req)
    if not m:  # not the main process of a distributed run: rank 0 wrote the output and reports
        return
    print(
        f"{req.objective}/{req.adapter}: {m['steps']} steps in {m['wall_time_s']:.0f} s, final loss "
        f"{m['final_loss']:.4g}, into {req.out}"
    )
