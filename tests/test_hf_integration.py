"""Real Hugging Face checkpoints: transformers-saved models, PEFT LoRA adapters, loading the merge."""

from __future__ import annotations

import pytest
import torch
from conftest import load_dir

from resm_core.merge import engine
from resm_core.merge.engine import MergeRequest, merge
from resm_core.taskvec.extract import extract
from resm_core.taskvec.sources import LoraSource, open_expert

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def tiny_llama(seed: int):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        tie_word_embeddings=True,
    )
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    base = tiny_llama(0)
    base.save_pretrained(root / "base")
    experts = []
    for i in range(2):
        model = tiny_llama(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        model.save_pretrained(root / f"expert{i}")
        experts.append(root / f"expert{i}")
    lora_cfg = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = peft.get_peft_model(tiny_llama(0), lora_cfg)
    peft_model.save_pretrained(root / "lora")
    merged = peft_model.merge_and_unload().state_dict()
    return {"root": root, "base": root / "base", "experts": experts, "lora": root / "lora", "peft_merged": merged}


def test_lora_adapter_dense_delta_matches_peft_merge(hf):
    source = open_expert(hf["lora"])
    assert isinstance(source, LoraSource)
    base = load_dir(hf["base"])
    targets = [k for k in base if source.provides(k)]
    assert len(targets) == 2 * 3  # q, v, down in each of 2 layers
    for name in base:
        delta = source.delta(name, base[name].float())
        expected = hf["peft_merged"][name].float() - base[name].float()
        assert torch.allclose(delta, expected, atol=1e-6), name
        assert (name in targets) == bool(delta.abs().sum() > 0)


@pytest.mark.parametrize("block_mb", [64, 0.002])  # whole tensors, and row blocks of a few rows
def test_an_adapter_on_the_tied_embedding_merges_as_peft_merges_it(hf, tmp_path, block_mb):
    """PEFT saves a LoRA'd embedding's layer as `embed_tokens.base_layer.weight` (equal to the base's): the
    adapter is adopted, and task arithmetic at scale 1 gives the weights of PEFT's own merge_and_unload, the
    tied LM head included."""
    lora_cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False)
    adapter = peft.get_peft_model(tiny_llama(0), lora_cfg)
    adapter.save_pretrained(tmp_path / "embed_lora")
    keys = load_dir(tmp_path / "embed_lora").keys()
    assert "base_model.model.model.embed_tokens.base_layer.weight" in keys
    expected = adapter.merge_and_unload().state_dict()
    out = tmp_path / "merged"
    merge(
        MergeRequest(
            base=hf["base"], experts=[tmp_path / "embed_lora"], method="task_arithmetic", params={"scale": 1.0},
            out=out, block_mb=block_mb, progress=False,
        )
    )  # fmt: skip
    written = load_dir(out)
    for name, tensor in written.items():
        assert torch.allclose(tensor.float(), expected[name].float(), atol=1e-6), name
    assert not torch.equal(written["model.embed_tokens.weight"], load_dir(hf["base"])["model.embed_tokens.weight"])
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.lm_head.weight, expected["lm_head.weight"].to(model.dtype))


def test_an_adapter_whose_embedding_layer_changed_replaces_it_then_adds_its_lora(hf, tmp_path):
    """A base layer that differs from the base (rows the adapter's model changed, as a resized vocabulary
    does) replaces it: delta = layer - base + the LoRA product, as merge_and_unload computes it."""
    model = tiny_llama(0)
    with torch.no_grad():
        model.model.embed_tokens.weight[:8] += 0.5
    lora_cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens"], init_lora_weights=False)
    adapter = peft.get_peft_model(model, lora_cfg)
    adapter.save_pretrained(tmp_path / "embed_lora")
    expected = adapter.merge_and_unload().state_dict()["model.embed_tokens.weight"]
    source = open_expert(tmp_path / "embed_lora")
    base = load_dir(hf["base"])
    from resm_core.checkpoint.reader import CheckpointReader

    source.check_against(CheckpointReader(hf["base"]), required=set())
    delta = source.delta("model.embed_tokens.weight", base["model.embed_tokens.weight"].float())
    assert torch.allclose(base["model.embed_tokens.weight"].float() + delta, expected.float(), atol=1e-6)


def test_lora_adapter_is_accepted_as_an_expert_and_extracted(hf, tmp_path):
    merge(
        MergeRequest(
            base=hf["base"], experts=[hf["experts"][0], hf["lora"]], method="ties", out=tmp_path / "m", progress=False
        )
    )
    table = extract(hf["base"], hf["lora"], tmp_path / "tv", progress=False)
    assert (table["frobenius_norm"] > 0).sum() == 6


def test_merged_model_loads_with_transformers(hf, tmp_path):
    out = tmp_path / "merged"
    merge(
        MergeRequest(
            base=hf["base"], experts=hf["experts"], method="resm", out=out, out_dtype="bfloat16", progress=False
        )
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 128) and torch.isfinite(logits).all()
    # merged weights are what the engine wrote
    written = load_dir(out)
    assert torch.equal(model.model.norm.weight.data, written["model.norm.weight"].to(model.dtype))


@pytest.mark.parametrize(
    "method, params",
    [
        ("task_arithmetic", {}),
        ("linear", {}),
        ("tsv_m", {}),
        ("ties", {}),
        ("ties", {"granularity": "model"}),
        ("breadcrumbs", {"density": 0.5, "gamma": 0.1}),
        ("dare_ties", {}),
        ("dare_linear", {}),
        ("della", {}),
        ("model_stock", {}),
        ("consensus", {}),
    ],
)
def test_row_blocks_give_the_whole_tensor_merge_bit_for_bit(hf, tmp_path, monkeypatch, method, params):
    """A merge in row blocks (elementwise methods, given the whole tensor's top-k thresholds, Gram matrix or
    random draws; the vocabulary rule of the SVD family) reads each expert's rows alone, from a full model, a
    task vector and LoRA adapters, and writes them straight into the shard: every tensor equals the
    whole-tensor merge, bit for bit. So does a merge in cache-sized pieces, against the same method on whole
    fp32 tensors: an elementwise rule in pieces that cut across rows and end mid-row, DELLA in pieces of one
    row."""
    extract(hf["base"], hf["experts"][1], tmp_path / "tv", progress=False)
    lora_cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["up_proj", "o_proj"], init_lora_weights=False)
    peft.get_peft_model(tiny_llama(0), lora_cfg).save_pretrained(tmp_path / "lora2")
    experts = [hf["experts"][0], tmp_path / "tv", hf["lora"], tmp_path / "lora2"]
    runs = {"whole, fp32": (1e4, 0), "whole, in pieces": (1e4, engine.PIECE), "blocks, in pieces": (0.002, 37)}
    merged = {}
    for run, (block_mb, piece) in runs.items():  # whole tensors; blocks of a few rows
        with monkeypatch.context() as patch:
            if piece:
                patch.setattr(engine, "PIECE", piece)
            else:
                patch.setattr(engine.MergeJob, "piece_shape", lambda job, name: None)
            merge(MergeRequest(base=hf["base"], experts=experts, method=method, params=params, block_mb=block_mb,
                               out=tmp_path / run, shard_size="20KB", progress=False))  # fmt: skip
        merged[run] = load_dir(tmp_path / run)
    whole = merged["whole, fp32"]
    for run, other in merged.items():
        assert other.keys() == whole.keys() and all(torch.equal(whole[k], other[k]) for k in whole), run
    blocked = merged["blocks, in pieces"]
    assert (tmp_path / "blocks, in pieces" / "model.safetensors.index.json").is_file()  # several streamed shards
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "blocks, in pieces")
    assert torch.equal(loaded.model.embed_tokens.weight, blocked["model.embed_tokens.weight"])
