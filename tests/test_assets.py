"""Pinned assets: verified by SHA-256, extracted selectively, idempotent, clear errors; base models."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
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


@pytest.fixture
def fake_sdist(tmp_path, monkeypatch):
    """A source archive: a top folder, the wanted files, a symlink that must not be followed."""
    archives = tmp_path / "archives"
    archives.mkdir()
    archive = archives / "fake-src-2.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, text in (("tasks/a/task.json", '{"examples": []}'), ("tasks/b/task.json", "{}"), ("setup.py", "")):
            data = text.encode()
            info = tarfile.TarInfo(f"fake-src-2.0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("fake-src-2.0/tasks/c/task.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    asset = assets.Asset("fsrc", "fake-src", "2.0", digest, ("tasks/*/task.json",), "MIT", "test", sdist=True)
    monkeypatch.setitem(assets.ASSETS, "fsrc", asset)
    return {"archives": archives, "root": tmp_path / "cache", "asset": asset}


def test_a_source_archive_gives_its_members_relative_to_its_top_folder_and_no_links(fake_sdist):
    out = assets.fetch(["fsrc"], root=fake_sdist["root"], wheel_dir=fake_sdist["archives"])["fsrc"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() or p.is_symlink())
    assert files == ["asset.json", "tasks/a/task.json", "tasks/b/task.json"]
    member = assets.asset_path("fsrc", "tasks/a/task.json", fake_sdist["root"])
    assert json.loads(member.read_text()) == {"examples": []}


def test_a_source_archive_with_another_hash_is_refused(fake_sdist, monkeypatch):
    monkeypatch.setitem(assets.ASSETS, "fsrc", dataclasses.replace(fake_sdist["asset"], sha256="0" * 64))
    with pytest.raises(AssetError, match="fake-src-2.0.tar.gz: SHA-256 .* refusing"):
        assets.fetch(["fsrc"], root=fake_sdist["root"], wheel_dir=fake_sdist["archives"])
    assert not assets.is_fetched("fsrc", fake_sdist["root"])


def test_a_source_archive_the_index_does_not_list_names_what_was_asked(fake_sdist, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", fake_sdist["archives"].as_uri())  # no PEP 691 index there
    with pytest.raises(AssetError, match="fake-src==2.0: download from .* failed"):
        assets.fetch(["fsrc"], root=fake_sdist["root"])


def test_big_bench_falls_back_to_its_pinned_copies_when_the_index_drops_the_archive(tmp_path, monkeypatch, caplog):
    """PyPI's bigbench page stopped listing 1.0.0 (December 2026): the six files resm reads ship with it,
    each pinned, and are used only then; a copy that differs from its pin is refused by name."""

    def unlisted(asset, dest):
        raise AssetError(
            f"{asset.package}=={asset.version}: https://pypi.org/simple/bigbench/ lists no {asset.filename_prefix}"
        )

    monkeypatch.setattr(assets, "_download_sdist", unlisted)
    out = assets.fetch(["bigbench"], root=tmp_path / "cache")["bigbench"]
    marker = json.loads((out / assets.COMPLETE_MARKER).read_text())
    assert marker["source"] == "vendored" and marker["sha256"] == assets.get_asset("bigbench").sha256
    for member, pinned in assets.get_asset("bigbench").vendored:
        assert hashlib.sha256((out / member).read_bytes()).hexdigest() == pinned
    assert assets.is_fetched("bigbench", tmp_path / "cache") and "ship with resm" in caplog.text
    tampered = tmp_path / "vendored"
    shutil.copytree(assets.VENDORED_DIR, tampered)
    victim = tampered / "bigbench-1.0.0" / "bigbench" / "benchmark_tasks" / "known_unknowns" / "task.json"
    victim.write_text(victim.read_text().replace("Unknown", "Known", 1))
    monkeypatch.setattr(assets, "VENDORED_DIR", tampered)
    with pytest.raises(AssetError, match="known_unknowns/task.json: missing or not the pinned copy"):
        assets.fetch(["bigbench"], root=tmp_path / "other")
    assert not (tmp_path / "other" / "bigbench-1.0.0").exists()


def test_big_bench_is_evaluation_data_only(assets_root, monkeypatch):
    """Its files carry a canary string: every packaged source that reads the asset is eval-only (all its
    rows are test items, and no training row may repeat one)."""
    from resm_core.data import sources

    assert assets.ASSETS["bigbench"].evaluation_only
    read: set[str] = set()

    def recording(name, member, root=None):
        read.add(name)
        return assets.asset_path(name, member, root)

    monkeypatch.setattr(sources, "asset_path", recording)
    readers = []
    for name, source in sources.PACKAGED.items():
        read.clear()
        sources.load(source, assets_root)
        if any(assets.ASSETS[a].evaluation_only for a in read):
            readers.append(name)
            assert source.eval_only, f"{name} reads evaluation-only data but can give training rows"
    assert sorted(readers) == ["hhh_harmless", "hhh_helpful", "hhh_honest", "known_unknowns"]


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
