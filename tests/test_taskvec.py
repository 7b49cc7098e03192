"""Task vectors: extraction, statistics, conflicts, and their use as merge inputs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from conftest import load_dir

from resm_core.checkpoint.reader import CheckpointReader
from resm_core.errors import CheckpointError, ConfigError
from resm_core.merge.engine import MergeRequest, merge
from resm_core.synthetic import SHAPES, write_base, write_experts
from resm_core.taskvec.conflicts import conflicts
from resm_core.taskvec.extract import STATS_NAME, extract
from resm_core.taskvec.stats import tensor_stats


def test_tensor_stats_on_a_hand_made_delta():
    d = torch.zeros(10, 10)
    d[0, 0] = 10.0
    d[1, 1] = 1.0
    row = tensor_stats(
        "model.layers.3.mlp.up_proj.weight",
        d,
        torch.ones(10, 10),
        tol=1e-8,
        outlier_m=5.0,
        energy_top=0.1,
        spectrum=True,
    )
    assert row["layer"] == "layer.003"
    assert row["sparsity"] == pytest.approx(0.98)
    assert row["frobenius_norm"] == pytest.approx(math.sqrt(101))
    assert row["relative_norm"] == pytest.approx(math.sqrt(101) / 10)
    assert row["outlier_ratio"] == pytest.approx(0.02)  # mean |d| = 0.11: both 10 and 1 exceed 5 x 0.11
    assert row["spectral_energy_top"] == pytest.approx(100 / 101)


def test_extract_writes_a_task_vector_usable_as_an_expert(tiny, tmp_path):
    tvs = []
    for i, expert in enumerate(tiny["experts"]):
        out = tmp_path / f"tv{i}"
        table = extract(tiny["base"], expert, out, progress=False)
        assert set(table.columns) >= {
            "tensor",
            "frobenius_norm",
            "relative_norm",
            "sparsity",
            "outlier_ratio",
            "spectral_energy_top",
        }
        assert (out / STATS_NAME).exists() and (out / "resm_taskvec.json").exists()
        tvs.append(out)
    base, expert = load_dir(tiny["base"]), load_dir(tiny["experts"][0])
    tv = load_dir(tvs[0])
    assert all(torch.allclose(tv[k], expert[k] - base[k]) for k in tv)
    merge(MergeRequest(base=tiny["base"], experts=tiny["experts"], method="ties", out=tmp_path / "a", progress=False))
    merge(MergeRequest(base=tiny["base"], experts=tvs, method="ties", out=tmp_path / "b", progress=False))
    a, b = load_dir(tmp_path / "a"), load_dir(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_conflicts_cosine_and_sign_conflict_rates(tiny, tmp_path):
    tv = tmp_path / "tv"
    extract(tiny["base"], tiny["experts"][0], tv, spectrum=False, progress=False)
    neg = tmp_path / "neg"
    neg_state = {k: -v for k, v in load_dir(tv).items()}
    from resm_core.checkpoint.writer import ShardedWriter

    with ShardedWriter(neg, 10**9) as w:
        for k, v in neg_state.items():
            w.add(k, v)
        w.write_json("resm_taskvec.json", {"kind": "task_vector"})
    tables = conflicts([tv, tv, neg], tmp_path / "c", names=["a", "a2", "neg"], progress=False)
    s = tables["summary"].set_index(["task_a", "task_b"])
    assert s.loc[("a", "a2"), "cosine"] == pytest.approx(1.0)
    assert s.loc[("a", "a2"), "sign_conflict_rate"] == 0.0
    assert s.loc[("a", "neg"), "cosine"] == pytest.approx(-1.0)
    assert s.loc[("a", "neg"), "sign_conflict_rate"] == 1.0
    layer = pd.read_csv(tmp_path / "c" / "conflicts_layer.csv")
    assert set(layer["layer"]) >= {"layer.000", "layer.001", "embed"}
    assert json.loads((tmp_path / "c" / "resm_manifest.json").read_text())["action"] == "conflicts"


def test_conflicts_between_real_experts_are_partial(tiny, tmp_path):
    tvs = [tmp_path / f"tv{i}" for i in range(3)]
    for tv, expert in zip(tvs, tiny["experts"]):
        extract(tiny["base"], expert, tv, spectrum=False, progress=False)
    summary = conflicts(tvs, tmp_path / "c", progress=False)["summary"]
    assert len(summary) == 3
    assert summary["cosine"].between(0.05, 0.95).all()  # shared low-rank part: partly aligned
    assert summary["sign_conflict_rate"].between(0.05, 0.5).all()


def test_conflicts_refuses_models_and_single_inputs(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="is not a task vector"):
        conflicts(tiny["experts"][:2], tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="at least two"):
        conflicts(tiny["experts"][:1], tmp_path / "c", progress=False)


def bf16_step(x: torch.Tensor) -> torch.Tensor:
    """The gap between x and the next bf16 number away from zero (8 significant bits)."""
    return torch.exp2(torch.floor(torch.log2(x.float().abs().clamp_min(2.0**-126))) - 7)


def test_bf16_experts_give_bf16_task_vectors_whose_rounding_is_recorded(tmp_path):
    """auto: base and expert in bf16 -> the task vector is stored in bf16 (half the disk). Fine-tuning deltas
    are exact there wherever an entry keeps its exponent; the manifest records what did round, and merging
    the bf16 task vectors gives the merge of the experts themselves."""
    base = write_base(tmp_path / "base", SHAPES["tiny"], seed=3, dtype=torch.bfloat16)
    experts = write_experts(base, [tmp_path / "e0", tmp_path / "e1"], seed=3)
    assert CheckpointReader(experts[0]).dtype("model.embed_tokens.weight") == torch.bfloat16
    tvs = [tmp_path / "tv0", tmp_path / "tv1"]
    for expert, tv in zip(experts, tvs, strict=True):
        extract(base, expert, tv, progress=False)
    stored = CheckpointReader(tvs[0])
    assert stored.dtype("model.embed_tokens.weight") == torch.bfloat16
    rounding = json.loads((tvs[0] / "resm_manifest.json").read_text())["rounding"]
    # these synthetic deltas are 10% of the weights, so 6% of entries change exponent and round; the error is
    # below bf16's unit roundoff (2^-9) relative to the task vector
    assert 0 < rounding["inexact_fraction"] < 0.1 and rounding["relative_error"] < 2**-9
    b, e, tv = load_dir(base), load_dir(experts[0]), load_dir(tvs[0])
    exact = {k: e[k].float() - b[k].float() for k in tv}
    inexact = sum(int((tv[k].float() != exact[k]).sum()) for k in tv) / sum(v.numel() for v in tv.values())
    assert inexact == pytest.approx(rounding["inexact_fraction"], abs=1e-9)  # the record is the truth

    extract(base, experts[0], tmp_path / "tv32", dtype="float32", progress=False)  # asked for: kept exact
    assert CheckpointReader(tmp_path / "tv32").dtype("model.embed_tokens.weight") == torch.float32
    for name, inputs in (("a", experts), ("b", tvs)):
        merge(MergeRequest(base=base, experts=inputs, method="task_arithmetic", out=tmp_path / name, progress=False))
    a, m = load_dir(tmp_path / "a"), load_dir(tmp_path / "b")
    assert a.keys() == m.keys() and all(a[k].dtype == m[k].dtype == torch.bfloat16 for k in a)
    # the deltas' rounding adds at most their recorded largest error each (scale <= 1) to the result's own
    errors = [json.loads((tv / "resm_manifest.json").read_text())["rounding"]["max_abs_error"] for tv in tvs]
    assert all(((a[k].float() - m[k].float()).abs() <= bf16_step(a[k]) + sum(errors)).all() for k in a)
    differ = sum(int((a[k] != m[k]).sum()) for k in a) / sum(v.numel() for v in a.values())
    assert differ < 0.05
