"""The streaming engine: equals the in-memory merge, shards, routes vocab tensors, writes atomically,
and refuses bad input before doing any work."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from conftest import load_dir
from safetensors.torch import save_file

from resm_core.checkpoint.manifest import MANIFEST_NAME
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import ShardedWriter
from resm_core.errors import CheckpointError, CompatibilityError, ConfigError, NumericError
from resm_core.merge import engine as engine_module
from resm_core.merge.catalogue import all_methods
from resm_core.merge.engine import MergeRequest, merge, merge_state_dicts
from resm_core.synthetic import SHAPES, write_base

VOCAB = 256  # the tiny shape's vocabulary

CASES = [(name, {}) for name in sorted(all_methods())] + [
    ("ties", {"granularity": "model"}),
    ("breadcrumbs_ties", {"granularity": "model"}),
    ("resm", {"rank_rule": "energy"}),
    ("resm", {"rank_rule": "fixed", "svd": "lowrank"}),
]


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{'-'.join(map(str, p.values()))}" for m, p in CASES])
def test_streamed_merge_equals_in_memory_merge(tiny, tiny_state, tmp_path, method, params):
    out = tmp_path / "merged"
    merge(
        MergeRequest(
            base=tiny["base"], experts=tiny["experts"], method=method, params=params, out=out, seed=3, progress=False
        )
    )
    streamed = load_dir(out)
    reference = merge_state_dicts(tiny_state["base"], tiny_state["experts"], method, params, seed=3, vocab_size=VOCAB)
    assert set(streamed) == set(reference)
    for name in reference:
        assert torch.allclose(streamed[name], reference[name], atol=1e-6), name


def test_sharded_input_equals_single_file_input(tiny, tmp_path):
    sharded = []
    for src in [tiny["base"], *tiny["experts"]]:
        dst = tmp_path / f"sharded-{src.name}"
        reader = CheckpointReader(src)
        with ShardedWriter(dst, max_shard_bytes=60_000) as w:
            for k in reader.keys:
                w.add(k, reader.get(k))
            w.copy_aux_files(src)
        assert (dst / "model.safetensors.index.json").exists()
        sharded.append(dst)
    merge(MergeRequest(base=tiny["base"], experts=tiny["experts"], method="ties", out=tmp_path / "a", progress=False))
    merge(
        MergeRequest(
            base=sharded[0], experts=sharded[1:], method="ties", out=tmp_path / "b", progress=False, shard_size="50KB"
        )
    )
    a, b = load_dir(tmp_path / "a"), load_dir(tmp_path / "b")
    assert len(list((tmp_path / "b").glob("model-*-of-*.safetensors"))) > 1
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_svd_methods_default_to_task_arithmetic_on_vocabulary_tensors(tiny, tiny_state, tmp_path):
    merge(MergeRequest(base=tiny["base"], experts=tiny["experts"], method="tsv_m", out=tmp_path / "m", progress=False))
    merged = load_dir(tmp_path / "m")
    name = "model.embed_tokens.weight"
    base = tiny_state["base"][name]
    expected = base + sum(e[name] - base for e in tiny_state["experts"])
    assert torch.allclose(merged[name], expected, atol=1e-6)
    diag = (tmp_path / "m" / "merge_diagnostics.csv").read_text()
    assert f"{name},task_arithmetic" in diag


def test_an_exception_mid_write_leaves_no_output(tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = engine_module.merged_delta

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "merged_delta", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        merge(
            MergeRequest(
                base=tiny["base"],
                experts=tiny["experts"],
                method="ties",
                out=tmp_path / "out",
                shard_size="10KB",
                progress=False,
            )
        )
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temp directory


def test_a_method_that_returns_nan_is_stopped_before_anything_is_published(tiny, tmp_path, monkeypatch):
    """The old RESM produced NaN in one matrix of a real LoRA merge (two threads, 260 arbitrary
    components per task in a Gram-route polar factor) and wrote it: outputs are checked too."""
    real = engine_module.merged_delta

    def nan_in_one(method, params, rule, base, deltas, ctx):
        out = real(method, params, rule, base, deltas, ctx)
        return out * float("nan") if ctx.name == "model.layers.1.mlp.up_proj.weight" else out

    monkeypatch.setattr(engine_module, "merged_delta", nan_in_one)
    with pytest.raises(NumericError, match=r"ties: the merged tensor model\.layers\.1\.mlp\.up_proj\.weight holds NaN"):
        merge(
            MergeRequest(
                base=tiny["base"], experts=tiny["experts"], method="ties", out=tmp_path / "out", progress=False
            )
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(  # whole fp32 tensors; in pieces (of 7 entries), checked only when the output is not
    "method,value,weights",  # finite: an Inf with weight 0 still makes a NaN there
    [
        ("ties", "nan", None),
        ("task_arithmetic", "nan", None),
        ("linear", "nan", None),
        ("dare_linear", "nan", None),
        ("task_arithmetic", "inf", [1, 0]),
    ],
)
def test_nan_in_an_expert_is_named_and_leaves_no_output(tiny, tmp_path, monkeypatch, method, value, weights):
    monkeypatch.setattr(engine_module, "PIECE", 7)
    bad = tmp_path / "bad"
    shutil.copytree(tiny["experts"][1], bad)
    state = load_dir(bad)
    state["model.layers.1.mlp.up_proj.weight"][3, 4] = float(value)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(NumericError, match=r"bad: the delta of tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        merge(
            MergeRequest(
                base=tiny["base"],
                experts=[tiny["experts"][0], bad],
                method=method,
                weights=weights,
                out=tmp_path / "out",
                progress=False,
            )
        )
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]


def _copy_with(tmp_path, src, name, edit_state=None, edit_config=None, extra_files=None):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    if edit_state:
        state = load_dir(dst)
        edit_state(state)
        save_file(state, str(dst / "model.safetensors"))
    if edit_config:
        cfg = json.loads((dst / "config.json").read_text())
        edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    for fname, text in (extra_files or {}).items():
        (dst / fname).write_text(text)
    return dst


def test_mismatches_are_refused_before_any_work(tiny, tmp_path):
    base, good = tiny["base"], tiny["experts"][0]
    cases = [
        (
            _copy_with(tmp_path, good, "shape", edit_state=lambda s: s.update({"model.norm.weight": torch.ones(65)})),
            "tensor model.norm.weight has shape \\(65,\\)",
        ),
        (
            _copy_with(tmp_path, good, "missing", edit_state=lambda s: s.pop("model.norm.weight")),
            "tensor model.norm.weight of the base is missing",
        ),
        (
            _copy_with(tmp_path, good, "extra", edit_state=lambda s: s.update({"extra.weight": torch.ones(2)})),
            "tensor extra.weight is not in the base",
        ),
        (
            _copy_with(tmp_path, good, "arch", edit_config=lambda c: c.update({"model_type": "mistral"})),
            "arch/config.json: model_type = 'mistral'",
        ),
        (_copy_with(tmp_path, good, "vocab", edit_config=lambda c: c.update({"vocab_size": 300})), "vocab_size = 300"),
    ]
    for expert, message in cases:
        with pytest.raises(CompatibilityError, match=message):
            merge(
                MergeRequest(base=base, experts=[good, expert], method="linear", out=tmp_path / "out", progress=False)
            )
        assert not (tmp_path / "out").exists()


def test_tokenizer_mismatch_is_refused(tiny, tmp_path):
    base = _copy_with(tmp_path, tiny["base"], "base", extra_files={"tokenizer.json": '{"v": 1}'})
    other = _copy_with(tmp_path, tiny["experts"][0], "exp", extra_files={"tokenizer.json": '{"v": 2}'})
    with pytest.raises(CompatibilityError, match="exp/tokenizer.json: differs from the base"):
        merge(MergeRequest(base=base, experts=[other], method="linear", out=tmp_path / "out", progress=False))


def test_pickle_weights_need_allow_pickle(tiny, tmp_path):
    expert = tmp_path / "pickled"
    expert.mkdir()
    shutil.copy(tiny["experts"][0] / "config.json", expert)
    torch.save(load_dir(tiny["experts"][0]), expert / "pytorch_model.bin")
    request = dict(base=tiny["base"], experts=[expert], method="linear", progress=False)
    with pytest.raises(CheckpointError, match="pytorch_model.bin: pickle weights are refused.*--allow-pickle"):
        merge(MergeRequest(out=tmp_path / "a", **request))
    merge(MergeRequest(out=tmp_path / "b", allow_pickle=True, **request))
    expected = load_dir(tiny["experts"][0])
    assert all(torch.equal(v, expected[k]) for k, v in load_dir(tmp_path / "b").items())


def test_existing_output_needs_force_and_bad_options_are_named(tiny, tmp_path):
    (tmp_path / "out").mkdir()
    base = dict(base=tiny["base"], experts=tiny["experts"], progress=False)
    with pytest.raises(CheckpointError, match="output already exists; pass --force"):
        merge(MergeRequest(method="ties", out=tmp_path / "out", **base))
    merge(MergeRequest(method="ties", out=tmp_path / "out", force=True, **base))
    assert (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="out_dtype: 'int8'"):
        merge(MergeRequest(method="ties", out=tmp_path / "x", out_dtype="int8", **base))
    with pytest.raises(ConfigError, match="device: 'tpu'"):
        merge(MergeRequest(method="ties", out=tmp_path / "x", device="tpu", **base))
    with pytest.raises(CheckpointError, match="nowhere: no such expert directory"):
        merge(
            MergeRequest(
                base=tiny["base"], experts=[tmp_path / "nowhere"], method="ties", out=tmp_path / "x", progress=False
            )
        )
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            merge(MergeRequest(method="ties", out=tmp_path / "x", device="cuda", **base))
    assert not (tmp_path / "x").exists()


def test_out_dtype_and_manifest(tiny, tmp_path):
    out = tmp_path / "m"
    merge(
        MergeRequest(
            base=tiny["base"],
            experts=tiny["experts"],
            method="dare_ties",
            out=out,
            seed=9,
            out_dtype="bfloat16",
            progress=False,
        )
    )
    reader = CheckpointReader(out)
    assert all(reader.dtype(k) == torch.bfloat16 for k in reader.keys)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["method"] == "dare_ties" and manifest["seed"] == 9
    assert manifest["params"]["density"] == 0.1
    expert_files = manifest["inputs"]["experts"][2]["files"]
    weights = tiny["experts"][2] / "model.safetensors"
    assert expert_files["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest["versions"]["torch"] and manifest["peak_rss_mb"] > 0 and manifest["wall_time_s"] >= 0
    assert (out / "config.json").exists()


def _experts_of_dtype(base_dir, out_root, dtype, n=2, size=1e-4):
    """Experts = base + a small delta (the size of a LoRA update after a few steps), stored in `dtype`."""
    reader = CheckpointReader(base_dir)
    dirs = []
    for t in range(n):
        g = torch.Generator().manual_seed(40 + t)
        with ShardedWriter(out_root / f"e{t}-{str(dtype)[6:]}", 10**9) as w:
            for k in reader.keys:
                b = reader.get(k).float()
                w.add(k, (b + size * torch.randn(b.shape, generator=g)).to(dtype))
            w.copy_aux_files(base_dir)
        dirs.append(out_root / f"e{t}-{str(dtype)[6:]}")
    return dirs


def test_a_merge_is_never_stored_below_its_experts_precision(tmp_path):
    """bf16 base, fp32 experts with 1e-4 deltas: a bf16 merge rounds most of the merged delta away
    (weights near 0.02 have a bf16 spacing of 1.2e-4), so the default is the experts' fp32, and
    config.json says so; bf16 experts give a bf16 merge; an explicit out_dtype wins."""
    from resm_core.taskvec.extract import extract

    base = write_base(tmp_path / "base", SHAPES["tiny"], seed=2, dtype=torch.bfloat16)
    fp32_experts = _experts_of_dtype(base, tmp_path, torch.float32)
    merge(
        MergeRequest(
            base=base,
            experts=fp32_experts,
            method="task_arithmetic",
            params={"scale": 1.0},
            out=tmp_path / "m32",
            progress=False,
        )
    )
    merged, b = CheckpointReader(tmp_path / "m32"), CheckpointReader(base)
    assert json.loads((tmp_path / "m32" / "config.json").read_text())["dtype"] == "float32"
    name = "model.layers.0.mlp.up_proj.weight"
    assert merged.dtype(name) == torch.float32
    want = sum(CheckpointReader(e).get(name) - b.get(name).float() for e in fp32_experts)
    assert torch.allclose(merged.get(name) - b.get(name).float(), want, atol=1e-6)
    rounded = (b.get(name).float() + want).to(torch.bfloat16).float() - b.get(name).float()
    assert float((rounded - want).norm() / want.norm()) > 0.15  # what the old bf16 default stored (23% lost)

    bf16_experts = _experts_of_dtype(base, tmp_path, torch.bfloat16)
    merge(MergeRequest(base=base, experts=bf16_experts, method="ties", out=tmp_path / "m16", progress=False))
    assert CheckpointReader(tmp_path / "m16").dtype(name) == torch.bfloat16
    assert json.loads((tmp_path / "m16" / "config.json").read_text())["dtype"] == "bfloat16"
    # a task vector of a bf16 expert is stored in fp32, but remembers its expert's precision
    tvs = [tmp_path / f"tv{i}" for i in range(2)]
    for e, tv in zip(bf16_experts, tvs):
        extract(base, e, tv, progress=False)
    merge(MergeRequest(base=base, experts=tvs, method="tsv_m", out=tmp_path / "mtv", progress=False))
    assert CheckpointReader(tmp_path / "mtv").dtype(name) == torch.bfloat16
    merge(
        MergeRequest(
            base=base, experts=fp32_experts, method="linear", out=tmp_path / "mexp", out_dtype="bf16", progress=False
        )
    )
    assert CheckpointReader(tmp_path / "mexp").dtype(name) == torch.bfloat16


def test_tied_lm_head_is_not_duplicated(tiny, tmp_path):
    tied = _copy_with(
        tmp_path,
        tiny["base"],
        "tied",
        edit_state=lambda s: s.update({"lm_head.weight": s["model.embed_tokens.weight"].clone()}),
    )
    merge(MergeRequest(base=tied, experts=tiny["experts"][:1], method="linear", out=tmp_path / "m", progress=False))
    assert "lm_head.weight" not in CheckpointReader(tmp_path / "m").keys
