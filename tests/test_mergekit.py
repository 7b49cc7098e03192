"""mergekit-format recipes: translated to resm's and run, the same weights as the equivalent resm recipe; the
reverse (`--to-mergekit`); what resm does not do is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_dir

from resm_core.cli import main
from resm_core.merge.mergekit import from_mergekit


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["-q", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "mergekit_params,model_params,resm",
    [
        (  # electing: normalize (their default) is the disjoint weighted mean; lambda is the scale
            {"lambda": 0.9},
            [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.4}],
            {"method": "ties", "params": {"density": 0.4, "scale": 0.9}, "weights": [1.0, 0.5]},
        ),
        (  # summing with normalize: true divides by the sum of the weights
            {"normalize": True, "lambda": 0.6},
            [{"weight": 2.0}, {"weight": 1.0}],
            {"method": "task_arithmetic", "params": {"scale": 0.6}, "weights": [2 / 3, 1 / 3]},
        ),
        (
            {},
            [{"weight": 0.3, "density": 0.9, "gamma": 0.01}, {"weight": 0.3, "density": 0.9, "gamma": 0.01}],
            {"method": "breadcrumbs", "params": {"density": 0.9, "gamma": 0.01, "scale": 1.0}, "weights": [0.3, 0.3]},
        ),
    ],
)
def test_a_mergekit_recipe_gives_the_weights_of_its_resm_equivalent(
    tiny, tmp_path, capsys, mergekit_params, model_params, resm
):
    method = resm["method"]
    mk = {
        "merge_method": method,
        "base_model": str(tiny["base"]),
        "models": [{"model": str(e), "parameters": p} for e, p in zip(tiny["experts"], model_params)],
        "dtype": "float32",
        **({"parameters": mergekit_params} if mergekit_params else {}),
    }
    code, out, err = run(capsys, "merge", write(tmp_path / "mk.yml", mk), "--out", tmp_path / "from_mergekit")
    assert code == 0, err
    assert "a mergekit recipe, read as this resm recipe" in out and f"method: {method}" in out
    ours = {
        "base": str(tiny["base"]),
        "experts": [{"path": str(e), "weight": w} for e, w in zip(tiny["experts"], resm["weights"])],
        "method": method,
        "params": resm["params"],
        "out_dtype": "float32",
        "out": str(tmp_path / "resm"),
    }
    code, _, err = run(capsys, "merge", write(tmp_path / "resm.yml", ours))
    assert code == 0, err
    a, b = load_dir(tmp_path / "from_mergekit"), load_dir(tmp_path / "resm")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-7) for k in a)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda r: r.update(slices=[{"sources": []}]), "slices are not supported"),
        (lambda r: r.update(merge_method="sce"), "merge_method 'sce' has no resm equivalent"),
        (lambda r: r.update(tokenizer_source="union"), "tokenizer source 'union' is not supported"),
        (lambda r: r["models"][0]["parameters"].update(density=[0.1, 0.5]), "a gradient or tensor-filtered value"),
        (lambda r: r["models"][0]["parameters"].update(density=0.5), "density differs between models"),
        (lambda r: r.update(parameters={"normalize": False}), "normalize: false with ties"),
        (lambda r: r.update(chat_template="chatml"), "'chat_template' is not supported"),
        (lambda r: r.pop("base_model"), "base_model is required"),
        (
            lambda r: r["models"][0].update(model={"model": "a", "lora": "l"}),
            "models.0: expected `model: PATH_OR_HUB_ID`",
        ),
    ],
)
def test_what_resm_does_not_do_is_refused_by_name(tmp_path, capsys, change, message):
    recipe = {
        "merge_method": "ties",
        "base_model": "base",
        "models": [{"model": "a", "parameters": {"density": 0.2}}, {"model": "b", "parameters": {"density": 0.2}}],
    }
    change(recipe)
    code, _, err = run(capsys, "merge", write(tmp_path / "mk.yml", recipe), "--out", tmp_path / "out")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_to_mergekit_writes_the_reverse(tiny, tmp_path, capsys):
    ours = {
        "base": str(tiny["base"]),
        "experts": [{"path": str(e), "weight": w} for e, w in zip(tiny["experts"], (1.0, 0.5, 0.25))],
        "method": "dare_ties",
        "params": {"density": 0.3, "scale": 0.8},
    }
    code, _, err = run(capsys, "merge", write(tmp_path / "resm.yml", ours), "--to-mergekit", tmp_path / "mk.yml")
    assert code == 0, err
    mk = yaml.safe_load((tmp_path / "mk.yml").read_text())
    assert mk["merge_method"] == "dare_ties" and mk["parameters"] == {"lambda": 0.8, "normalize": True}
    assert [m["parameters"] for m in mk["models"]] == [
        {"weight": 1.0, "density": 0.3},
        {"weight": 0.5, "density": 0.3},
        {"weight": 0.25, "density": 0.3},
    ]
    back = from_mergekit(mk)
    assert back["params"] == ours["params"] and back["experts"] == ours["experts"]
    tsv = write(tmp_path / "tsv.yml", {**ours, "method": "tsv_m", "params": {}})
    code, _, err = run(capsys, "merge", tsv, "--to-mergekit", tmp_path / "x.yml")
    assert code == 2 and "tsv_m has no mergekit equivalent" in err


def test_mergekit_model_plus_lora_on_the_base_is_the_adapter_and_on_another_model_is_named():
    """mergekit's `MODEL+LORA`: on the base_model it is the adapter as an expert (resm reads LoRA adapters against
    the base); on any other model it is refused naming the syntax, not 'no such expert directory'."""
    from resm_core.errors import ConfigError
    from resm_core.merge.mergekit import from_mergekit

    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": "org/base",
        "models": [{"model": "org/base+lab/adapter", "parameters": {"weight": 0.5}}, {"model": "org/e1"}],
    }
    assert [e["path"] for e in from_mergekit(recipe, "r.yaml")["experts"]] == ["lab/adapter", "org/e1"]
    recipe["models"][0]["model"] = "org/other+lab/adapter"
    with pytest.raises(ConfigError, match=r"models.0: 'org/other\+lab/adapter' is mergekit's MODEL\+LORA syntax"):
        from_mergekit(recipe, "r.yaml")
