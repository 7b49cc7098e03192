"""`resm assets` and `resm base`: the commands that set up what every stage reads (the pinned offline
assets, the base model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from resm_core.base_request import ModelRequest, TinyBaseRequest
from resm_core.options import add_arguments, command_line, from_namespace


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("assets", help="fetch the pinned offline assets (model and 3H data from PyPI wheels)")
    a_sub = a.add_subparsers(dest="assets_command", required=True)
    af = a_sub.add_parser("fetch", help="download, verify (SHA-256) and extract; skips what is already there")
    af.add_argument("names", nargs="*", help="assets to fetch (default: all; see `resm assets list`)")
    af.add_argument("--cache", help="cache directory (default: $RESM_CACHE or resources/)")
    af.add_argument(
        "--wheel-dir", help="take the wheels (and source archives) from this directory instead of the package registry"
    )
    af.add_argument("--force", action="store_true", help="fetch again even if present")
    af.set_defaults(run=run_fetch)
    a_sub.add_parser("list", help="the pinned assets, their licences and whether they are fetched").set_defaults(
        run=run_list
    )

    b = sub.add_parser("base", help="prepare a base model directory")
    b_sub = b.add_subparsers(dest="base_command", required=True)
    bp = b_sub.add_parser("prepare", help="dequantise a packaged GGUF into a Hugging Face directory")
    bp.add_argument("name", help="packaged base (smollm2-135m-instruct)")
    bp.add_argument("--out", required=True, type=Path, help="the Hugging Face model directory to write")
    bp.add_argument("--cache", help="asset cache (default: $RESM_CACHE or resources/)")
    bp.add_argument("--dtype", default="bfloat16", help="bfloat16 (default), float32 or float16")
    bp.add_argument("--force", action="store_true", help="replace the output if it exists")
    bp.set_defaults(run=run_prepare)
    bd = b_sub.add_parser("download", help="a Hugging Face hub model into a local directory")
    bd.add_argument("repo_id", help="e.g. meta-llama/Meta-Llama-3-8B-Instruct (gated models need HF_TOKEN)")
    bd.add_argument("--out", required=True, type=Path, help="the directory to download the model into")
    bd.add_argument("--revision", help="a branch, tag or commit (default: main)")
    add_arguments(bd, ModelRequest, skip=("source", "base", "out", "allow_other_base"))
    bd.set_defaults(run=run_download)

    m = sub.add_parser("model", help="take a model made elsewhere (hub id, directory, LoRA adapter) into a grid")
    m_sub = m.add_subparsers(dest="model_command", required=True)
    ma = m_sub.add_parser("adopt", help="a full model or a LoRA adapter as a model directory, checked, with a card")
    add_arguments(ma, ModelRequest)
    ma.set_defaults(run=run_adopt)
    bt = b_sub.add_parser("tiny", help="a tiny random Llama with a locally trained tokenizer (tests, CI)")
    add_arguments(bt, TinyBaseRequest)
    bt.set_defaults(run=run_tiny)


def run_list(args: argparse.Namespace) -> None:
    from resm_core import assets

    for name, a in assets.ASSETS.items():
        state = "fetched" if assets.is_fetched(name) else "missing"
        print(f"{name:11s} {a.package + '==' + a.version:28s} {state:8s} {a.licence:27s} {a.what}")


def run_fetch(args: argparse.Namespace) -> None:
    from resm_core import assets

    done = assets.fetch(args.names or None, root=args.cache, wheel_dir=args.wheel_dir, force=args.force)
    print(f"{len(done)} asset(s) ready in {assets.cache_root(args.cache)}")


def run_prepare(args: argparse.Namespace) -> None:
    from resm_core import base_models

    base_models.prepare_gguf_base(args.name, args.out, root=args.cache, dtype=args.dtype, force=args.force)
    print(f"base model written to {args.out}")


def run_download(args: argparse.Namespace) -> None:
    from resm_core import base_models

    flags = command_line(ModelRequest, args)  # --allow-pickle, --force: absent flags are absent
    base_models.download_base(
        args.repo_id,
        args.out,
        revision=args.revision,
        force=flags.get("force", False),
        allow_pickle=flags.get("allow_pickle", False),
    )
    print(f"base model written to {args.out}")


def run_adopt(args: argparse.Namespace) -> None:
    from resm_core.adopt import adopt

    req = from_namespace(ModelRequest, args)
    manifest = adopt(
        req.source,
        req.base,
        req.out,
        allow_pickle=req.allow_pickle,
        force=req.force,
        allow_other_base=req.allow_other_base,
    )
    print(f"{req.source}: taken as {req.out} ({manifest['kind']} model)")


def run_tiny(args: argparse.Namespace) -> None:
    from resm_core import base_models

    req = from_namespace(TinyBaseRequest, args)
    base_models.build_tiny(req, base_models.tokenizer_corpus(req.corpus, req.cache))
    print(f"base model written to {req.out}")
