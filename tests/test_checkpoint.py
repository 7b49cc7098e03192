"""Checkpoint reading and writing: layouts, sizes, and the errors a user sees."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import ShardedWriter, parse_size
from resm_core.errors import CheckpointError, ConfigError


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1GiB") == 2**30
    assert parse_size(1234) == 1234
    for bad in ("lots", "0", "-1GB", "5XB"):
        with pytest.raises(ConfigError, match="shard_size"):
            parse_size(bad)


def test_writer_shards_and_index_round_trip(tmp_path):
    tensors = {f"t{i}": torch.full((100,), float(i)) for i in range(5)}  # 400 bytes each
    with ShardedWriter(tmp_path / "out", max_shard_bytes=900) as w:
        for k, v in tensors.items():
            w.add(k, v)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert index["metadata"]["total_size"] == 2000
    reader = CheckpointReader(tmp_path / "out")
    assert reader.keys == list(tensors) and all(torch.equal(reader.get(k), v) for k, v in tensors.items())
    assert reader.shape("t1") == (100,) and reader.dtype("t1") == torch.float32


def test_writer_refuses_duplicates_and_empty_output(tmp_path):
    with pytest.raises(CheckpointError, match="written twice"), ShardedWriter(tmp_path / "a", 10**6) as w:
        w.add("x", torch.ones(1))
        w.add("x", torch.ones(1))
    with pytest.raises(CheckpointError, match="no tensors were written"), ShardedWriter(tmp_path / "b", 10**6):
        pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_publishes_only_on_success(tmp_path):
    with AtomicDirectory(tmp_path / "ok") as tmp:
        (tmp / "f.txt").write_text("x")
        assert not (tmp_path / "ok").exists()
    assert (tmp_path / "ok" / "f.txt").read_text() == "x"
    with pytest.raises(KeyboardInterrupt), AtomicDirectory(tmp_path / "interrupted") as tmp:
        (tmp / "f.txt").write_text("x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        CheckpointReader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model weights found"):
        CheckpointReader(tmp_path / "empty")
    two = tmp_path / "two"
    two.mkdir()
    save_file({"a": torch.ones(1)}, str(two / "x.safetensors"))
    save_file({"b": torch.ones(1)}, str(two / "y.safetensors"))
    with pytest.raises(CheckpointError, match="2 .safetensors files but no model.safetensors.index.json"):
        CheckpointReader(two)
    (two / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "x.safetensors", "b": "gone.safetensors"}})
    )
    with pytest.raises(CheckpointError, match="names shard gone.safetensors, which is missing"):
        CheckpointReader(two)
    (two / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="index.json: not valid JSON"):
        CheckpointReader(two)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        CheckpointReader(junk)
    with pytest.raises(CheckpointError, match="has no tensor nope"):
        CheckpointReader(tmp_path / "two" / "x.safetensors").get("nope")


def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    import hashlib
    import os

    from resm_core.checkpoint import digests

    monkeypatch.setenv("RESM_HASH_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert digests.sha256_file(f) == hashlib.sha256(b"abc").hexdigest()
    assert len(list((tmp_path / "cache").iterdir())) == 1
    f.write_bytes(b"abcd")  # new content, new size: a new key, never the stale digest
    os.utime(f, ns=(1, 1))
    assert digests.sha256_file(f) == hashlib.sha256(b"abcd").hexdigest()
    for entry in (tmp_path / "cache").iterdir():
        entry.write_text("garbage")  # damaged entries are recomputed
    assert digests.sha256_file(f) == hashlib.sha256(b"abcd").hexdigest()


def test_a_streaming_writer_writes_rows_into_planned_shards(tmp_path):
    """With a layout the writer writes each shard's header first and the bytes as they come (whole tensors or
    row blocks): the same files a buffered writer would index, and no shard ever held in memory."""
    tensors = {"a": torch.randn(6, 3), "b": torch.randn(5, 4).bfloat16(), "n": torch.arange(3), "s": torch.tensor(2.0)}
    layout = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    with ShardedWriter(tmp_path / "out", max_shard_bytes=80, layout=layout) as w:
        w.add_rows("a", tensors["a"][:4])
        w.add_rows("a", tensors["a"][4:])
        w.add("b", tensors["b"])
        w.add("n", tensors["n"])
        w.add("s", tensors["s"])
    reader = CheckpointReader(tmp_path / "out")
    assert reader.keys == list(tensors) and all(torch.equal(reader.get(k), v) for k, v in tensors.items())
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {
        "a": "model-00001-of-00002.safetensors",
        **dict.fromkeys("bns", "model-00002-of-00002.safetensors"),
    }
    assert index["metadata"]["total_size"] == 72 + 40 + 24 + 4

    def wrong(steps, match):
        with pytest.raises(CheckpointError, match=match), ShardedWriter(tmp_path / "bad", 80, layout=layout) as w:
            for name, value in steps:
                w.add_rows(name, value)
        assert not (tmp_path / "bad").exists()  # nothing published

    wrong([("b", tensors["b"])], "got tensor b, expected a")
    wrong([("a", tensors["a"].double())], r"got torch.float64 \(6, 3\), the layout says torch.float32")
    wrong([("a", tensors["a"]), ("a", tensors["a"][:1])], "got tensor a, expected b")
    wrong([("a", tensors["a"][:2]), ("a", tensors["a"][:5])], "more rows than its 6")
    wrong([("a", tensors["a"])], "tensor b of the layout was never written")


def test_a_full_disk_while_streaming_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    """The shard is written by a background thread: its failure reaches the caller, and nothing is published."""
    import errno

    from resm_core.checkpoint import writer as writer_module

    class FullFile:
        def __init__(self, *args):
            self.writes = 0

        def write(self, data):
            self.writes += 1
            if self.writes > 1:  # the header fits, the first tensor does not
                raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def fileno(self):
            return 0

        def close(self):
            pass

    monkeypatch.setattr(writer_module, "open", FullFile, raising=False)
    layout = [(f"t{i}", (64,), torch.float32) for i in range(8)]
    with pytest.raises(OSError, match="No space left"), ShardedWriter(tmp_path / "out", 10**6, layout=layout) as w:
        for name, _, _ in layout:
            w.add(name, torch.ones(64))
    assert list(tmp_path.iterdir()) == []
