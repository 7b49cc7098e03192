"""The `resm` command line: argument parsing only; the work happens in resm_core's modules."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from resm_core.data.near_duplicates import DEFAULT_COSINE
from resm_core.data.schema import DIMS
from resm_core.errors import ConfigError, ResmError

log = logging.getLogger("resm")


def _param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights expects comma-separated numbers, got {text!r}") from None


def _source(text: str):
    """A source name, or an inline YAML mapping such as '{kind: local, path: x.jsonl}'."""
    value = yaml.safe_load(text)
    return value if isinstance(value, dict) else text


def _keyed_path(text: str) -> tuple[str, Path]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected DIM=DIR, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), Path(value)


def _ratios(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (item.split("=", 1) for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratios expects dim=number,..., got {text!r}") from None


def _common_io(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--force", action="store_true", help="replace the output if it exists")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also read pytorch_model.bin (loaded with torch.load(weights_only=True))")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resm", description="Mix the data or merge the models? Build 3H "
                                     "data, train experts and mixtures, merge them (RESM and baselines).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("merge", help="merge experts into the base with one method")
    m.add_argument("recipe", nargs="?", type=Path, help="YAML recipe (flags override its values)")
    m.add_argument("--method", help="merge method (see `resm methods`)")
    m.add_argument("--base", help="base model directory")
    m.add_argument("--experts", nargs="+", help="expert model, task-vector or LoRA adapter directories")
    m.add_argument("--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="method hyperparameter, repeatable (e.g. --param density=0.2)")
    m.add_argument("--weights", type=_weights, help="per-expert weights, comma-separated")
    m.add_argument("--out", help="output directory")
    m.add_argument("--out-dtype", help="float32, bfloat16 or float16 (default: the base's dtype, or the experts' when wider)")
    m.add_argument("--seed", type=int, help="seed for random methods (default 0)")
    m.add_argument("--shard-size", help="maximum output shard size (default 2GB)")
    m.add_argument("--vocab-rule", choices=("method", "task_arithmetic", "mean", "base"),
                   help="how embedding and LM-head matrices are merged (default: task_arithmetic for "
                        "the SVD family, the method itself otherwise)")
    _common_io(m)

    e = sub.add_parser("extract", help="write expert - base as a task vector, with statistics")
    e.add_argument("--base", required=True, type=Path)
    e.add_argument("--expert", required=True, type=Path, help="fine-tuned model or PEFT LoRA adapter directory")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    e.add_argument("--tol", type=float, default=1e-8, help="|delta| <= tol counts as zero for sparsity")
    e.add_argument("--outlier-m", type=float, default=5.0, help="outlier when |delta| > M * mean |delta|")
    e.add_argument("--energy-top", type=float, default=0.1,
                   help="report the energy share of the top fraction of singular values")
    e.add_argument("--no-spectrum", action="store_true", help="skip the SVD statistics (faster)")
    e.add_argument("--shard-size", default="2GB")
    _common_io(e)

    c = sub.add_parser("conflicts", help="pairwise cosine and sign conflicts between task vectors")
    c.add_argument("task_vectors", nargs="+", type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--names", nargs="+", help="labels for the task vectors (default: directory names)")
    c.add_argument("--device", default="auto")
    c.add_argument("--force", action="store_true")

    ls = sub.add_parser("methods", help="list merge methods and their parameters")
    ls.add_argument("name", nargs="?", help="show one method in detail")

    a = sub.add_parser("assets", help="fetch the pinned offline assets (model and 3H data from PyPI wheels)")
    a_sub = a.add_subparsers(dest="assets_command", required=True)
    af = a_sub.add_parser("fetch", help="download, verify (SHA-256) and extract; skips what is already there")
    af.add_argument("names", nargs="*", help="assets to fetch (default: all; see `resm assets list`)")
    af.add_argument("--cache", help="cache directory (default: $RESM_CACHE or resources/)")
    af.add_argument("--wheel-dir", help="take the wheels from this directory instead of the package registry")
    af.add_argument("--force", action="store_true", help="fetch again even if present")
    a_sub.add_parser("list", help="the pinned assets, their licences and whether they are fetched")

    b = sub.add_parser("base", help="prepare a base model directory")
    b_sub = b.add_subparsers(dest="base_command", required=True)
    bp = b_sub.add_parser("prepare", help="dequantise a packaged GGUF into a Hugging Face directory")
    bp.add_argument("name", help="packaged base (smollm2-135m-instruct)")
    bp.add_argument("--out", required=True, type=Path)
    bp.add_argument("--cache", help="asset cache (default: $RESM_CACHE or resources/)")
    bp.add_argument("--dtype", default="bfloat16", help="bfloat16 (default), float32 or float16")
    bp.add_argument("--force", action="store_true")
    bd = b_sub.add_parser("download", help="a Hugging Face hub model into a local directory")
    bd.add_argument("repo_id", help="e.g. meta-llama/Meta-Llama-3-8B-Instruct (gated models need HF_TOKEN)")
    bd.add_argument("--out", required=True, type=Path)
    bd.add_argument("--revision")
    bd.add_argument("--force", action="store_true")
    bt = b_sub.add_parser("tiny", help="a tiny random Llama with a locally trained tokenizer (tests, CI)")
    bt.add_argument("--out", required=True, type=Path)
    bt.add_argument("--seed", type=int, default=0)
    bt.add_argument("--corpus", nargs="+", type=Path,
                    help="JSONL rows or text files to train the tokenizer on (default: the embedded 3H sources)")
    bt.add_argument("--cache", help="asset cache for the default corpus")
    bt.add_argument("--vocab-size", type=int, default=512)
    bt.add_argument("--hidden", type=int, default=64)
    bt.add_argument("--layers", type=int, default=2)
    bt.add_argument("--heads", type=int, default=4)
    bt.add_argument("--intermediate", type=int, default=128)
    bt.add_argument("--dtype", default="bfloat16")
    bt.add_argument("--force", action="store_true")

    dt = sub.add_parser("data", help="build per-dimension 3H datasets and data mixtures")
    d_sub = dt.add_subparsers(dest="data_command", required=True)
    db = d_sub.add_parser("build", help="one dimension: sources -> de-duplicated, hashed train/val/test JSONL")
    db.add_argument("--dim", required=True, help="helpfulness, honesty or harmlessness")
    db.add_argument("--source", dest="sources", action="append", type=_source,
                    help="a source name (`resm data sources`), hub:PRESET, or an inline YAML mapping; repeatable "
                         "(default: the embedded sources of the dimension)")
    db.add_argument("--out", required=True, type=Path)
    db.add_argument("--base", type=Path, help="base model whose own answers become `rejected` for harmful prompts")
    db.add_argument("--no-base-answers", action="store_true",
                    help="keep harmful prompts SFT-only (no `rejected`): no base model needed, DPO skips them")
    db.add_argument("--cache", help="asset cache (default: $RESM_CACHE or resources/)")
    db.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    db.add_argument("--test", type=float, default=0.1, help="test fraction, the held-out benchmark (default 0.1)")
    db.add_argument("--max-train", type=int, help="cap on training rows (a deterministic hash-ordered sample)")
    db.add_argument("--max-val", type=int)
    db.add_argument("--max-test", type=int)
    db.add_argument("--salt", default="resm-3h-split-v1", help="split salt; changing it reshuffles every split")
    db.add_argument("--max-new-tokens", type=int, default=96, help="length of the base model's answers")
    db.add_argument("--near-duplicate-cosine", type=float, default=DEFAULT_COSINE,
                    help="drop training and validation rows whose MiniLM cosine to any test prompt reaches this "
                         f"(default {DEFAULT_COSINE}; 1 turns the check off)")
    db.add_argument("--batch-size", type=int, default=8)
    db.add_argument("--device", default="auto")
    db.add_argument("--force", action="store_true")
    dm = d_sub.add_parser("mix", help="a data mixture for a combo of 2 or 3 dimensions")
    dm.add_argument("--strategy", required=True, help="uniform, ratio, reward_weighted or conflict_filtered")
    dm.add_argument("--inputs", nargs="+", required=True, metavar="DIM=DIR", type=_keyed_path,
                    help="built dataset directories, e.g. helpfulness=data/helpfulness")
    dm.add_argument("--out", required=True, type=Path)
    dm.add_argument("--budget", type=int, help="total examples (default: the inputs' training rows combined)")
    dm.add_argument("--ratios", type=_ratios, help="per-dimension ratios, e.g. helpfulness=2,harmlessness=1")
    dm.add_argument("--judge", help="keywords, table:PATH.jsonl or reward:MODEL_DIR[:dim=head,...]")
    dm.add_argument("--temperature", type=float, default=0.25, help="reward_weighted: softmax temperature")
    dm.add_argument("--margin", type=float, default=0.5, help="conflict_filtered: contradiction threshold")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--force", action="store_true")
    d_sub.add_parser("sources", help="list packaged sources and hub presets")

    t = sub.add_parser("train", help="fine-tune with SFT or DPO, full or LoRA (TRL + PEFT); resumable")
    t.add_argument("--base", required=True, type=Path)
    t.add_argument("--data", required=True, type=Path, help="dataset or mixture directory (train.jsonl)")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--objective", default="sft", help="sft or dpo")
    t.add_argument("--adapter", default="full", help="full or lora")
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--lr", type=float, default=1e-5)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--max-length", type=int, default=256, help="tokens per sequence; longer ones are truncated "
                                                                "and counted")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    t.add_argument("--lora-r", type=int, default=16)
    t.add_argument("--lora-alpha", type=int, default=32)
    t.add_argument("--lora-dropout", type=float, default=0.0)
    t.add_argument("--lora-targets", default="all-linear", help="all-linear or comma-separated module names")
    t.add_argument("--warmup", type=float, default=0.0, help="warmup: a fraction of steps (<1) or a step count")
    t.add_argument("--scheduler", default="linear")
    t.add_argument("--save-steps", type=int, default=50, help="checkpoint interval (resume point)")
    t.add_argument("--max-examples", type=int)
    t.add_argument("--arch", help="refuse a base whose config.model_type differs (e.g. llama)")
    t.add_argument("--device", default="auto")
    t.add_argument("--model-dtype", default="auto", help="auto: float32 on CPU, bfloat16 on CUDA")
    t.add_argument("--save-dtype", default="auto", help="auto: the training dtype")
    t.add_argument("--trainer-arg", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="any other transformers TrainingArguments field, repeatable (e.g. gradient_checkpointing=true)")
    t.add_argument("--force", action="store_true", help="replace the output and discard foreign checkpoints")

    j = sub.add_parser("judge", help="fit the offline judges used by evaluation")
    j_sub = j.add_subparsers(dest="judge_command", required=True)
    jf = j_sub.add_parser("fit", help="refusal classifier (pyrit labels) and TruthfulQA similarity threshold")
    jf.add_argument("--out", required=True, type=Path)
    jf.add_argument("--cache", help="asset cache (default: $RESM_CACHE or resources/)")

    ev = sub.add_parser("evaluate", help="score one arm on the 3H benchmarks (JSON per benchmark, JSONL answers)")
    ev.add_argument("--model", required=True, type=Path)
    ev.add_argument("--arm", help="name of the arm in the outputs (default: the model directory's name)")
    ev.add_argument("--data", required=True, type=Path, help="root of the built datasets ({dim}/test.jsonl)")
    ev.add_argument("--judges", type=Path, help="directory written by `resm judge fit`")
    ev.add_argument("--out", required=True, type=Path)
    ev.add_argument("--config", type=Path, help="YAML: benchmarks (name -> options such as n), backend, "
                                                "max_new_tokens, batch_size, n_bootstrap, seed")
    ev.add_argument("--benchmarks", nargs="+", help="benchmark names (default: every embedded benchmark)")
    ev.add_argument("--n", action="append", type=_param, default=[], metavar="BENCH=N", help="items per benchmark")
    ev.add_argument("--options", type=json.loads, help='JSON: benchmark -> options, e.g. '
                    '\'{"qa_mc": {"n": 40}, "reward_helpfulness": {"reward_model": "rm/"}}\' (replaces the defaults)')
    ev.add_argument("--backend", help="transformers (default) or vllm")
    ev.add_argument("--max-new-tokens", type=int)
    ev.add_argument("--batch-size", type=int)
    ev.add_argument("--bootstrap", type=int, help="bootstrap replicates (default 1000)")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--cache", help="asset cache (default: $RESM_CACHE or resources/)")
    ev.add_argument("--force", action="store_true")

    rp = sub.add_parser("report", help="grid table, merge vs mix, method ranking and plots from evaluated arms")
    rp_arms = rp.add_mutually_exclusive_group(required=True)
    rp_arms.add_argument("--config", type=Path, help="the workflow config that defined the grid")
    rp_arms.add_argument("--arms", nargs="+", help="the arms to report, e.g. base expert/honesty (needs --results)")
    rp.add_argument("--results", type=Path, help="results directory (default: the config's `results`)")
    rp.add_argument("--out", type=Path, help="default: RESULTS/report")

    cp = sub.add_parser("compare", help="paired comparison of two evaluated arms on their shared items "
                                        "(difference, 95%% paired-bootstrap interval, permutation p, mdd_80)")
    cp.add_argument("--results", required=True, type=Path, help="results directory (holds eval/ARM/)")
    cp.add_argument("--a", required=True, help="arm A, e.g. merge/ties/harmlessness+helpfulness/density-0.2")
    cp.add_argument("--b", required=True, help="arm B, e.g. mix/uniform/harmlessness+helpfulness")
    cp.add_argument("--dims", nargs="+", choices=DIMS, help="dimensions of balance (default: every dim both arms have)")
    cp.add_argument("--split", default="test", choices=["test", "val"])
    cp.add_argument("--bootstrap", type=int, default=2000, help="bootstrap and permutation draws")
    cp.add_argument("--seed", type=int, default=0)

    d = sub.add_parser("demo", help="merge generated Llama-shaped checkpoints with every method")
    d.add_argument("--out", type=Path, default=Path("results/demo"))
    d.add_argument("--shape", default="small", help="tiny, small, smollm2-135m or llama-1.1b")
    d.add_argument("--methods", nargs="+", help="subset of methods (default: all)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    return parser


def cmd_merge(args) -> None:
    from resm_core.merge.recipe import read_recipe, request_from

    recipe = read_recipe(args.recipe) if args.recipe else {}
    overrides = {
        "method": args.method, "base": args.base, "experts": args.experts, "out": args.out,
        "weights": args.weights, "out_dtype": args.out_dtype, "seed": args.seed,
        "shard_size": args.shard_size, "vocab_rule": args.vocab_rule,
        "device": args.device if args.device != "auto" else None,
        "allow_pickle": True if args.allow_pickle else None, "force": True if args.force else None,
        "progress": False if args.quiet else None, "params": dict(args.param),
    }
    from resm_core.merge.engine import merge

    request = request_from(recipe, overrides, source=str(args.recipe or "command line"))
    manifest = merge(request)
    print(f"merged {len(request.experts)} experts with {manifest['method']} into {request.out} "
          f"in {manifest['wall_time_s']:.1f} s (peak RSS {manifest['peak_rss_mb']:.0f} MB, {manifest['device']})")


def cmd_extract(args) -> None:
    from resm_core.taskvec.extract import extract

    table = extract(args.base, args.expert, args.out, dtype=args.dtype, tol=args.tol, outlier_m=args.outlier_m,
                    energy_top=args.energy_top, spectrum=not args.no_spectrum, device=args.device,
                    shard_size=args.shard_size, allow_pickle=args.allow_pickle, force=args.force,
                    progress=not args.quiet)
    print(f"task vector of {len(table)} tensors written to {args.out} "
          f"(mean relative norm {table['relative_norm'].mean():.3g})")


def cmd_conflicts(args) -> None:
    from resm_core.taskvec.conflicts import conflicts

    tables = conflicts(args.task_vectors, args.out, names=args.names, device=args.device, force=args.force,
                       progress=not args.quiet)
    print(tables["summary"][["task_a", "task_b", "cosine", "sign_conflict_rate"]].to_string(index=False))


def cmd_methods(args) -> None:
    from resm_core.merge.registry import all_methods, get_method

    if args.name:
        m = get_method(args.name)
        print(f"{m.name}: {m.summary}\n  reference: {m.reference}\n  random: {m.random}, "
              f"per-model weights: {m.uses_weights}, vocab rule default: {m.default_vocab_rule}")
        for p in m.params:
            print(f"  {p.name} = {p.default!r}  {p.range_text()}  {p.doc}")
        return
    for m in all_methods().values():
        params = ", ".join(f"{p.name}={p.default}" for p in m.params) or "-"
        print(f"{m.name:18s} {m.summary}\n{'':18s} {params}")


def cmd_demo(args) -> None:
    from resm_core.demo import run_demo, shape_summary

    print(f"demo on generated checkpoints ({shape_summary(args.shape)}), 3 experts", flush=True)
    table = run_demo(args.out, shape=args.shape, methods=args.methods, seed=args.seed, device=args.device)
    print(table.to_string(index=False))
    print(f"\nkept_<task>: share of each expert's task vector kept by the merge; table in {args.out / args.shape}/demo_table.csv")


def cmd_assets(args) -> None:
    from resm_core import assets

    if args.assets_command == "list":
        for name, a in assets.ASSETS.items():
            state = "fetched" if assets.is_fetched(name) else "missing"
            print(f"{name:11s} {a.package + '==' + a.version:28s} {state:8s} {a.licence:27s} {a.what}")
        return
    done = assets.fetch(args.names or None, root=args.cache, wheel_dir=args.wheel_dir, force=args.force)
    print(f"{len(done)} asset(s) ready in {assets.cache_root(args.cache)}")


def _corpus(args) -> list[str]:
    from resm_core.data import sources as src
    from resm_core.data.schema import read_jsonl

    texts: list[str] = []
    if args.corpus:
        for path in args.corpus:
            if path.suffix == ".jsonl":
                texts += [" ".join(str(r.get(k) or "") for k in ("prompt", "chosen", "rejected", "response"))
                          for r in read_jsonl(path)]
            else:
                texts += path.read_text(encoding="utf-8").splitlines()
        return [t for t in texts if t.strip()]
    for name, source in src.PACKAGED.items():
        texts += [f"{r['prompt']} {r['chosen']}" for r in src.load(source, args.cache)]
    return texts


def cmd_base(args) -> None:
    from resm_core import base_models

    if args.base_command == "prepare":
        base_models.prepare_gguf_base(args.name, args.out, root=args.cache, dtype=args.dtype, force=args.force)
    elif args.base_command == "download":
        base_models.download_base(args.repo_id, args.out, revision=args.revision, force=args.force)
    else:
        base_models.tiny_base(args.out, _corpus(args), seed=args.seed, vocab_size=args.vocab_size, hidden=args.hidden,
                              layers=args.layers, heads=args.heads, intermediate=args.intermediate, dtype=args.dtype,
                              force=args.force)
    print(f"base model written to {args.out}")


def cmd_data(args) -> None:
    from resm_core.data import sources as src

    if args.data_command == "sources":
        for name, s in src.PACKAGED.items():
            flags = ", ".join(f for f, on in (("eval only", s.eval_only), ("base answers", s.needs_base_responses)) if on)
            print(f"{name:30s} {s.dim:13s} packaged  {s.licence}{'  [' + flags + ']' if flags else ''}")
        for name, p in src.HUB_PRESETS.items():
            print(f"{'hub:' + name:30s} {p.dim:13s} hub       {p.path}" + (f" ({p.data_dir or p.name})" if p.data_dir or p.name else ""))
        return
    if args.data_command == "build":
        from resm_core.data.build import build_dim

        comp = build_dim(args.dim, args.sources or src.EMBEDDED.get(args.dim, []), args.out, root=args.cache,
                         base=args.base, val=args.val, test=args.test, max_train=args.max_train,
                         max_val=args.max_val, max_test=args.max_test, salt=args.salt,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=args.device,
                         base_answers=not args.no_base_answers, near_duplicate_cosine=args.near_duplicate_cosine,
                         force=args.force, progress=not args.quiet)
        print(f"{args.dim}: {comp['sizes']} written to {args.out}" +
              (f" (dropped: {comp['dropped']})" if comp["dropped"] else ""))
        return
    from resm_core.data.mixtures import mix
    from resm_core.judges import make_judge

    inputs = dict(args.inputs)
    if len(inputs) != len(args.inputs):
        raise ConfigError("--inputs: a dimension is given twice")
    comp = mix(args.strategy, inputs, args.out, budget=args.budget, ratios=args.ratios,
               judge=make_judge(args.judge) if args.judge else None, temperature=args.temperature,
               margin=args.margin, seed=args.seed, force=args.force)
    print(f"{args.strategy} mixture {comp['combo']}: {comp['sizes']} ({comp['repeated_rows']} repeated) in {args.out}")


def cmd_train(args) -> None:
    from resm_core.train.trainer import TrainRequest, train

    targets = args.lora_targets if args.lora_targets == "all-linear" else args.lora_targets.split(",")
    req = TrainRequest(base=args.base, data=args.data, out=args.out, objective=args.objective, adapter=args.adapter,
                       steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
                       max_length=args.max_length, seed=args.seed, beta=args.beta, lora_r=args.lora_r,
                       lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, lora_targets=targets,
                       warmup_ratio=args.warmup, scheduler=args.scheduler, save_steps=args.save_steps,
                       max_examples=args.max_examples, architecture=args.arch, device=args.device,
                       model_dtype=args.model_dtype, save_dtype=args.save_dtype, force=args.force,
                       progress=not args.quiet, extra=dict(args.trainer_arg))
    m = train(req)
    print(f"{args.objective}/{args.adapter}: {m['steps']} steps in {m['wall_time_s']:.0f} s, final loss "
          f"{m['final_loss']:.4g}, into {args.out}")


def cmd_judge(args) -> None:
    from resm_core.judges import refusal, similarity

    for kind, r in refusal.fit(args.out, args.cache).items():
        print(f"{kind} judge: held-out accuracy {r['heldout_accuracy']:.3f} (keywords "
              f"{r['heldout_keyword_accuracy']:.3f}, {r['n_heldout']} rows, C {r['C']})")
    s = similarity.fit(args.out, args.cache)
    print(f"similarity threshold {s['threshold']:.3f} (balanced accuracy "
          f"{s['balanced_accuracy']:.3f}); written to {args.out}")


EVAL_KEYS = {"benchmarks", "backend", "max_new_tokens", "batch_size", "n_bootstrap", "seed", "temperature"}


def cmd_evaluate(args) -> None:
    from resm_core.evaluate.benchmarks import DEFAULT
    from resm_core.evaluate.run import EvalRequest, evaluate

    config = {}
    if args.config:
        if not args.config.is_file():
            raise ConfigError(f"{args.config}: no such file")
        config = yaml.safe_load(args.config.read_text()) or {}
        unknown = set(config) - EVAL_KEYS
        if unknown:
            raise ConfigError(f"{args.config}: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(EVAL_KEYS))}")
    benchmarks = config.get("benchmarks") or {name: {} for name in DEFAULT}
    if isinstance(benchmarks, list):
        benchmarks = {name: {} for name in benchmarks}
    if args.options is not None:
        if not isinstance(args.options, dict):
            raise ConfigError("--options: expected a JSON object of benchmark -> options")
        benchmarks = {name: dict(opts or {}) for name, opts in args.options.items()}
    if args.benchmarks:
        benchmarks = {name: benchmarks.get(name, {}) for name in args.benchmarks}
    for name, n in args.n:
        if name not in benchmarks:
            raise ConfigError(f"--n {name}={n}: {name} is not among the benchmarks being run")
        benchmarks[name] = {**(benchmarks[name] or {}), "n": n}
    pick = lambda flag, key, default: flag if flag is not None else config.get(key, default)  # noqa: E731
    req = EvalRequest(model=args.model, out=args.out, arm=args.arm or args.model.name, data_root=args.data,
                      judges=args.judges, benchmarks=benchmarks, backend=pick(args.backend, "backend", "transformers"),
                      max_new_tokens=pick(args.max_new_tokens, "max_new_tokens", 48),
                      batch_size=pick(args.batch_size, "batch_size", 8), temperature=config.get("temperature", 0.0),
                      n_bootstrap=pick(args.bootstrap, "n_bootstrap", 1000), seed=pick(args.seed, "seed", 0),
                      device=args.device, asset_root=args.cache, force=args.force, progress=not args.quiet)
    s = evaluate(req)
    dims = "  ".join(f"{d} {v['score']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for d, v in s["dims"].items())
    print(f"{req.arm}: {dims}  |  3H mean {s['mean_3h']['score']:.3f}  balance {s['balance']['score']:.3f}  "
          f"({s['timing']['total_s']:.0f} s, {s['truncated']} of {s['generations']} answers at the token limit)")


def cmd_report(args) -> None:
    from resm_core.grid import arms as grid_arms
    from resm_core.grid import load_config
    from resm_core.report.build import build_report

    if args.arms:
        if args.results is None:
            raise ConfigError("report: --arms needs --results (the directory holding eval/ARM/summary.json)")
        arms = args.arms
        results = args.results
    else:
        config = load_config(args.config)
        arms = grid_arms(config)
        results = args.results or Path(config["results"])
    summary = build_report(results, arms, args.out or results / "report")
    for row in summary["merge_vs_mix"]:
        print(f"{row['combo']}: {row['merge']} - {row['mixture']} = {row['difference']:+.3f} "
              f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], p_adj {row['p_adjusted']:.3f}, "
              f"mdd_80 {row['mdd_80']:.3f}: {row['verdict']}")
    for dim, ok in summary["moved"].items():
        if not ok:
            print(f"expert/{dim} did not move {dim} against the base on validation items")
    print(summary["power"])
    print(f"report of {summary['arms']} arms written to {args.out or results / 'report'}")


def cmd_compare(args) -> None:
    from resm_core.report.paired import load_items, paired, verdict

    if args.bootstrap < 100:
        raise ConfigError(f"--bootstrap: at least 100 draws, got {args.bootstrap}")
    a, b = load_items(args.results, args.a, args.split), load_items(args.results, args.b, args.split)
    rows = paired(a, b, args.dims, n_boot=args.bootstrap, n_perm=args.bootstrap, seed=args.seed)
    print(f"{args.a} - {args.b} on {args.split} items (95% paired bootstrap; p: paired permutation, unadjusted)")
    print(f"{'metric':24s} {'a':>7s} {'b':>7s} {'a - b':>8s} {'95% interval':>19s} {'p':>6s} {'n':>5s} "
          f"{'mdd_80':>7s}  verdict")
    for r in rows:
        print(f"{r['metric']:24s} {r['a_score']:7.3f} {r['b_score']:7.3f} {r['difference']:+8.3f} "
              f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] {r['p_value']:6.3f} {r['n_items']:5d} {r['mdd_80']:7.3f}  "
              f"{verdict(r, args.a, args.b)}")
    print(f"this comparison can detect differences of {rows[-1]['mdd_80']:.3f} on balance (80% power, paired)")


COMMANDS = {"merge": cmd_merge, "extract": cmd_extract, "conflicts": cmd_conflicts,
            "methods": cmd_methods, "demo": cmd_demo, "assets": cmd_assets, "base": cmd_base, "data": cmd_data,
            "train": cmd_train, "judge": cmd_judge, "evaluate": cmd_evaluate,
            "report": cmd_report, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not hasattr(args, "quiet"):
        args.quiet = False
    try:
        COMMANDS[args.command](args)
    except ResmError as exc:
        print(f"resm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resm {args.command}: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

