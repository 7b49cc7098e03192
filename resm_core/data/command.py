"""`resm data build`, `resm data decontaminate`, `resm data mix` (flags from their requests), `resm data sources`
and `resm data fetch`."""

from __future__ import annotations

import argparse
from pathlib import Path

from resm_core.data.request import BuildRequest, DecontaminateRequest, MixRequest, source_spec
from resm_core.options import add_arguments, from_namespace


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dt = sub.add_parser("data", help="build per-dimension 3H datasets and data mixtures")
    d_sub = dt.add_subparsers(dest="data_command", required=True)
    db = d_sub.add_parser("build", help="one dimension: sources -> de-duplicated, hashed train/val/test JSONL")
    add_arguments(db, BuildRequest)
    db.set_defaults(run=run_build)
    dc = d_sub.add_parser(
        "decontaminate",
        help="one dimension's training rows without any that repeat or paraphrase an evaluation item of the run",
    )
    add_arguments(dc, DecontaminateRequest)
    dc.set_defaults(run=run_decontaminate)
    dm = d_sub.add_parser("mix", help="a data mixture for a combo of 2 or 3 dimensions")
    add_arguments(dm, MixRequest)
    dm.set_defaults(run=run_mix)
    d_sub.add_parser("sources", help="list packaged sources and hub presets").set_defaults(run=run_sources)
    df = d_sub.add_parser(
        "fetch", help="download a hub source's files into a directory, for a build on an offline node"
    )
    df.add_argument("source", type=source_spec, help="hub:PRESET or a YAML mapping with kind: hub")
    df.add_argument("--out", type=Path, required=True, help="output directory")
    df.add_argument("--force", action="store_true", help="replace the output if it exists")
    df.set_defaults(run=run_fetch)


def run_fetch(args: argparse.Namespace) -> None:
    from resm_core import hub
    from resm_core.data import sources as src
    from resm_core.errors import DataError

    download = src.hub_download(args.source)
    if download is None:
        raise DataError(f"source {args.source!r}: not a hub source; only hub sources are fetched")
    hub_id = hub.HubId(download["repo"], download["revision"])
    hub.fetch(hub_id, args.out, force=args.force, repo_type="dataset", patterns=download["patterns"])
    print(f"{download['name']}: {hub_id} fetched into {args.out}")


def run_sources(args: argparse.Namespace) -> None:
    from resm_core.data import sources as src

    for name, s in src.PACKAGED.items():
        flags = ", ".join(f for f, on in (("eval only", s.eval_only), ("base answers", s.needs_base_responses)) if on)
        print(f"{name:30s} {s.dim:13s} packaged  {s.licence}{'  [' + flags + ']' if flags else ''}")
    for name, p in src.HUB_PRESETS.items():
        print(
            f"{'hub:' + name:30s} {p.dim:13s} hub       {p.path}"
            + (f" ({p.data_dir or p.name})" if p.data_dir or p.name else "")
        )


def run_build(args: argparse.Namespace) -> None:
    from resm_core.data.build import build

    req = from_namespace(BuildRequest, args, progress=not args.quiet)
    comp = build(req)
    print(
        f"{req.dim}: {comp['sizes']} written to {req.out}"
        + (f" (dropped: {comp['dropped']})" if comp["dropped"] else "")
    )


def run_decontaminate(args: argparse.Namespace) -> None:
    from resm_core.data.decontaminate import decontaminate

    req = from_namespace(DecontaminateRequest, args)
    report = decontaminate(req)
    print(f"{req.data}: dropped {report['dropped']} against {report['pool_items']} evaluation items; {req.out}")


def run_mix(args: argparse.Namespace) -> None:
    from resm_core.data.mixtures import mix_request
    from resm_core.judges import make_judge

    req = from_namespace(MixRequest, args)
    comp = mix_request(req, make_judge(req.judge) if req.judge else None)
    print(f"{req.strategy} mixture {comp['combo']}: {comp['sizes']} ({comp['repeated_rows']} repeated) in {req.out}")
