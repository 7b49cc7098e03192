"""The Snakemake workflow without running it: lint and format, config validation and its errors, the paper
DAGs (dry runs), the SLURM site template, environments, containers and presets."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO, SNAKEMAKE, copy_workflow, job_counts, run

from resm_core.data.schema import DIMS
from resm_core.errors import ConfigError
from resm_core.grid import arms, hp_name
from resm_core.stage_code import code_fingerprint
from resm_core.workflow_config import check_config, load_config


@pytest.mark.workflow
def test_lint_and_format():
    out = run(SNAKEMAKE + ["--lint", "--configfile", "configs/tiny.yaml"])
    assert "Congratulations" in out
    run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"])


def merged(a: dict, b: dict) -> dict:
    """Config b layered on a, as Snakemake deep-merges the config files it is given."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


LAYERS = {"decisive.yaml"}  # presets layered on config.yaml, not whole configs


def test_every_config_validates_and_the_default_grid_has_every_arm():
    for path in [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        if path.name in LAYERS:
            config = merged(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load(path.read_text()))
            check_config(config)
        else:
            config = load_config(path)
        assert len(arms(config)) >= 12, path
    default = load_config(REPO / "config.yaml")
    assert len(arms(default)) == 1 + 3 + 2 * (1 + 3)  # base, experts; per combo a uniform mixture and 3 merges
    for bench in default["evaluation"]["benchmarks"].values():
        assert bench["n_val"] >= 1  # the choice is made on validation items
    assert hp_name({"scale": "0.3", "density": "0.2"}) == "density-0.2_scale-0.3" and hp_name({}) == "default"


TWIN = {"kind": "hub", "preset": "hh_rlhf_harmless", "name": "hh_rlhf_helpful"}  # another source, the same name


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["training"].update(steps=0), r"training\.steps: 0 is less than the minimum of 1"),
        (lambda c: c.update(results=""), r"results: '' should be non-empty"),
        (lambda c: c["training"].update(learning_rate=float("nan")), r"training\.learning_rate: nan is not a finite"),
        (lambda c: c["training"].update(learning_rate="1e999"), r"training\.learning_rate: '1e999' is not a finite"),
        (lambda c: c["merges"].update(ties=[{"density": "0." + "1" * 300}]), r"'density-0\.1111.* is 310 bytes"),
        (lambda c: c["training"].pop("objective"), r"training: 'objective' is a required property"),
        (lambda c: c.update(combos=["helpfulness+honesty+kindness"]), "combos: 'helpfulness\\+honesty\\+kindness'"),
        (lambda c: c.update(combos=["honesty+helpfulness"]), "must be 2 or 3 distinct dims, sorted"),
        (lambda c: c["mixtures"].update(strategies=["best"]), r"mixtures\.strategies\.0: 'best' is not one of"),
        (lambda c: c.update(trainer={}), "Additional properties are not allowed \\('trainer' was unexpected\\)"),
        (
            lambda c: c["evaluation"]["benchmarks"].update(reward_helpfulness={"reward_model": "rm"}),
            r"evaluation\.benchmarks\.reward_helpfulness\.reward_model: 'rm' is not a name in evaluation\.models",
        ),
        (
            lambda c: c.update(
                mixtures={"strategies": ["reward_weighted"], "judge": "reward:rm"},
                evaluation={"models": {"rm": "org/rm"}, "benchmarks": {"reward_helpfulness": {"reward_model": "rm"}}},
            ),
            r"mixtures\.judge: 'reward:rm' is the model that scores evaluation\.benchmarks\.reward_helpfulness",
        ),
        (
            lambda c: c.update(
                mixtures={"strategies": ["reward_weighted"], "judge": "reward:a"},  # one model, two names
                evaluation={
                    "models": {"a": "org/rm", "b": "org/rm"},
                    "benchmarks": {"reward_helpfulness": {"reward_model": "b"}},
                },
            ),
            r"mixtures\.judge: 'reward:a' is the model that scores",
        ),
        (lambda c: c.update(merges={"tiez": [{}]}), r"merges\.tiez: method: unknown merge method 'tiez'"),
        (lambda c: c["merges"].update(ties=[{"density": "1.5"}]), r"merges\.ties: ties: parameter density: 1\.5 is"),
        (lambda c: c["merges"].update(ties=[{"densty": "0.5"}]), r"merges\.ties: ties: unknown parameter 'densty'"),
        (lambda c: c["merges"].update(ties=[{"density": "0.3;touch x"}]), r"merges\.ties: density: '0\.3;touch x'"),
        (lambda c: c["evaluation"]["benchmarks"].update(qa_mcq={}), r"unknown benchmark 'qa_mcq'"),
        (
            lambda c: c["evaluation"]["benchmarks"]["abstention"].update(note="'$(touch PWNED)'"),
            r"evaluation\.benchmarks\.abstention: Additional properties are not allowed \('note' was unexpected\)",
        ),
        (
            lambda c: c["evaluation"]["benchmarks"]["harmful_refusal"].update(field="prompt"),
            r"evaluation\.benchmarks\.harmful_refusal\.field: not an option of harmful_refusal",
        ),
        (lambda c: c["mixtures"].update(judge="keyword"), r"mixtures\.judge: judge: cannot read 'keyword'"),
        (lambda c: c.update(dims={"helpfulness": {"sources": ["nq_opn"]}}), r"dims\.helpfulness\.sources\.0: unknown"),
        (
            lambda c: c.update(
                dims={"honesty": {"sources": [{"kind": "local", "path": "q.jsonl", "eval_onyl": True}]}}
            ),
            r"dims\.honesty\.sources\.0: .*'eval_onyl' is not a key of a local source",
        ),
        (
            lambda c: c["mixtures"].update(strategies=["uniform", "ratio"]),
            r"mixtures\.ratios: the ratio strategy needs a ratio for harmlessness, helpfulness, honesty",
        ),
        (
            lambda c: c["mixtures"].update(strategies=["ratio"], ratios={d: float("inf") for d in DIMS}),
            r"mixtures\.ratios\.\w+: inf is not a finite number",
        ),
        (lambda c: c["training"].update(learning_rate="fast"), r"training\.learning_rate: 'fast' is not of type"),
        (
            lambda c: c.update(experts={"honesty": {"kind": "hub"}}),
            r"experts\.honesty: kind hub takes repo \(got none\)",
        ),
        (
            lambda c: c.update(experts={"honesty": {"kind": "local", "path": "x", "repo": "a/b"}}),
            r"experts\.honesty: kind local takes path \(got path, repo\)",
        ),
        (
            lambda c: c.update(experts={"honesty": {"kind": "lora", "path": "x", "repo": "a/b"}}),
            r"experts\.honesty: a lora adapter needs repo \(hub, with revision\) or path, one of them",
        ),
        (lambda c: c.update(experts={"kindness": {"kind": "trained"}}), r"experts: Additional properties"),
        (
            lambda c: c["mixtures"].update(models={"helpfulness+honesty": {"uniform": {"kind": "local", "path": "x"}}}),
            r"mixtures\.models\.helpfulness\+honesty\.uniform: a name of lowercase letters",
        ),
        (
            lambda c: (
                c.update(combos=["helpfulness+honesty"])
                or c["mixtures"].update(models={"harmlessness+honesty": {"joint": {"kind": "local", "path": "x"}}})
            ),
            r"mixtures\.models\.harmlessness\+honesty: not one of combos",
        ),
        (
            lambda c: c["training"].update(processes=4) or c.update(resources={"train": {"gpu": 2}}),
            r"training\.processes is 4, but resources\.train\.gpu asks for 2 GPU",
        ),
        (
            lambda c: c.update(dims={"helpfulness": {"sources": ["hub:hh_rlhf_helpful", TWIN]}}),
            r"dims\.helpfulness\.sources: two different hub sources are named 'hh_rlhf_helpful'",
        ),
    ],
)
def test_config_errors_name_the_key(edit, message):
    config = copy.deepcopy(load_config(REPO / "configs" / "tiny.yaml"))
    edit(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


PRE_QUOTED = {
    "params.args",
    "params.options",
    "params.sources",
    "params.command",
    "params.env",
    "params.recipe",
}  # built by shlex.join / to_flags


def test_every_value_a_rule_puts_in_a_shell_command_is_quoted():
    seen = 0
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for command in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", smk.read_text()):
            for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", command):
                assert field.endswith(":q") or field in PRE_QUOTED, f"{smk.name}: {{{field}}} is not shell-quoted"
                seen += 1
    assert seen > 40  # every rule's command was read


def test_numbers_yaml_reads_as_strings_are_numbers():
    """PyYAML (and so Snakemake) reads `1e-3` as a string; the user meant a number."""
    config = copy.deepcopy(load_config(REPO / "configs" / "tiny.yaml"))
    config["training"].update(learning_rate="1e-3", steps="3")
    config["mixtures"].update(strategies=["ratio"], ratios={"helpfulness": "2", "honesty": "1", "harmlessness": "1e0"})
    check_config(config)
    assert config["training"]["learning_rate"] == 0.001 and config["training"]["steps"] == 3
    assert config["mixtures"]["ratios"] == {"helpfulness": 2.0, "honesty": 1.0, "harmlessness": 1.0}


@pytest.mark.workflow
def test_a_bad_config_stops_the_dry_run_naming_the_key(tmp_path, assets_root):
    def edit(config):
        config["merges"]["tiez"] = [{}]

    configfile, _ = copy_workflow(tmp_path, assets_root, edit)
    done = subprocess.run(
        SNAKEMAKE + ["-n", "--configfile", str(configfile)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "merges.tiez: method: unknown merge method 'tiez'" in done.stdout + done.stderr


@pytest.mark.workflow
def test_paper_dags_build_from_the_dry_run():
    for name in ("paper-llama3-8b", "paper-mistral-7b"):
        counts = job_counts(REPO, REPO / "configs" / f"{name}.yaml")
        config = load_config(REPO / "configs" / f"{name}.yaml")
        assert counts["evaluate"] == len(arms(config))
        assert counts["train_mixture"] == 4 * 4 and counts["mix_data"] == 16
        assert counts["merge"] == sum(len(v) for v in config["merges"].values()) * 4
        assert counts["download_judge_model"] == 3  # helpfulness reward model, guard, and the mixtures' own judge


@pytest.mark.workflow
def test_the_slurm_site_template_works_as_the_readme_says(tmp_path):
    """cp -r profiles/slurm profiles/mysite, then the documented dry run and `resm plan` of each paper preset: no
    traceback (the template's caching needed SNAKEMAKE_OUTPUT_CACHE); downloads run where snakemake runs (compute
    nodes are often offline); CPU-only rules on the CPU partition, GPU rules on the GPU one; each rule in the
    conda env it needs; the plan's jobs are the dry run's, its sizes those of the published architectures
    (8,030,261,248 and 7,241,732,096 parameters, as the model cards say)."""
    for item in ("Snakefile", "rules", "captions", "envs", "profiles", "configs", "config.yaml"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, tmp_path / item)
    shutil.copytree(tmp_path / "profiles" / "slurm", tmp_path / "profiles" / "mysite")
    for preset, params in (("paper-llama3-8b", 8_030_261_248), ("paper-mistral-7b", 7_241_732_096)):
        cmd = ["--workflow-profile", "profiles/mysite", "--configfile", f"configs/{preset}.yaml", "-n"]
        out = run(SNAKEMAKE + cmd, cwd=tmp_path)
        partitions: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for rule, resources in re.findall(r"\nrule (\w+):\n(?:    .*\n)*?    resources: (.*)", out):
            partitions.setdefault(rule, set()).update(re.findall(r"slurm_partition=(\w+)", resources))
            counts[rule] = counts.get(rule, 0) + 1
        for rule in ("build_data", "decontaminate_data", "mix_data", "fit_judges", "conflicts", "report"):
            assert partitions[rule] == {"cpu"}, (preset, rule, partitions[rule])
        for rule in ("train_expert", "train_mixture", "merge", "evaluate"):
            assert partitions[rule] == {"gpu"}, (preset, rule, partitions[rule])

        rules = parsed_rules(tmp_path / "configs" / f"{preset}.yaml", cwd=tmp_path)
        assert rules.pop("RESM_REPO") == str(tmp_path)  # what ${RESM_REPO} in the env files expands to
        local = {name for name, rule in rules.items() if rule["local"]}
        assert local == {
            "fetch_assets",
            "prepare_base",
            "fetch_dataset",
            "download_judge_model",
            "fetch_model",
            "fetch_lm_eval_task",  # the preset's lm-eval tasks (ifeval, truthfulqa_mc2), fetched on the login node
        }
        assert counts["fetch_lm_eval_task"] == 2  # one per lm-eval task, local (above): no sbatch
        envs = {name: rule["env"] for name, rule in rules.items()}
        assert envs.pop("all") is None and Path(envs.pop("evaluate")).name == "vllm.yaml"  # backend: vllm
        assert {Path(e).name for e in envs.values()} == {"resm.yaml"}, envs

        plan = [sys.executable, "-m", "resm_core.cli", "plan", f"configs/{preset}.yaml", "--profile", "profiles/mysite"]
        out = run(plan + ["--snakefile", "Snakefile"], cwd=tmp_path)
        table = {m[0]: m[1:] for m in re.findall(r"\n(\w+) +(\d+) +(\d+) +([\d./]+) +(\d+)(.*)", out)}
        assert {rule: int(row[0]) for rule, row in table.items()} == {r: n for r, n in counts.items() if r != "all"}
        gb = params * 2 / 1e9  # bfloat16
        assert f"{params / 1e9:.2f} B parameters, bfloat16" in out
        assert f"3 x {gb:.2f} GB bfloat16 task vector" in table["extract_taskvec"][4]
        assert f"132 x {gb:.2f} GB bfloat16 merged, each deleted once evaluated" in table["merge"][4]
        one_runtime = {rule: row for rule, row in table.items() if "/" not in row[2]}
        for row in one_runtime.values():
            assert int(row[3]) == round(int(row[0]) * int(row[1]) * float(row[2]))
        two, three = (h for h in table["train_mixture"][2].split("/"))  # a mixture of k dims: k x the runtime
        assert float(three) / float(two) == 1.5 and float(two) == 2 * float(table["train_expert"][2])
        gpu_hours = sum(int(row[3]) for row in table.values())
        assert int(table["merge"][1]) == 1 and f"GPU hours asked for: {gpu_hours:.0f} " in out
        kept = (1 + counts["train_expert"] + counts["train_mixture"] + 3) * gb  # base, trained, task vectors
        assert f"models on disk at the end: {kept:.0f} GB" in out


def parsed_rules(configfile: Path, cwd: Path = REPO) -> dict:
    """rule -> {env: the conda env file it runs in (what --sdm conda builds), local: run where snakemake runs},
    read from the parsed workflow; under `RESM_REPO`, the checkout the workflow tells the env files to install."""
    script = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings\n"
        "with SnakemakeApi(OutputSettings()) as api:\n"
        "    wf = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),\n"
        "        config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]), snakefile=Path('Snakefile'))\n"
        "    w = wf._workflow\n"
        "    rules = {r.name: {'env': r.conda_env and str(r.conda_env), 'local': r.name in w._localrules,\n"
        "                      'container': r.container_img} for r in w.rules}\n"
        "    print(json.dumps({**rules, 'RESM_REPO': os.environ.get('RESM_REPO')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(configfile)], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.workflow
def test_each_rule_runs_in_the_environment_it_needs(tmp_path):
    """With the transformers backend evaluation runs in envs/resm.yaml like every rule (the paper presets, with
    vllm, are checked under the site template); `container:` in the config reaches every rule."""
    tiny = parsed_rules(REPO / "configs" / "tiny.yaml")
    assert tiny.pop("RESM_REPO") == str(REPO)
    assert {Path(rule["env"]).name for name, rule in tiny.items() if name != "all"} == {"resm.yaml"}
    assert {rule["container"] for rule in tiny.values()} == {None}
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    (tmp_path / "boxed.yaml").write_text(yaml.safe_dump({**config, "container": "docker://resm-3h:latest"}))
    boxed = parsed_rules(tmp_path / "boxed.yaml")
    assert {rule["container"] for name, rule in boxed.items() if name != "RESM_REPO"} == {"docker://resm-3h:latest"}


def test_the_container_recipes_copy_what_the_package_and_the_workflow_need():
    """containers/Dockerfile and containers/resm.def install this package (torch pinned first) and carry the
    workflow; every path they copy exists, so a build cannot fail on a renamed file."""
    docker = (REPO / "containers" / "Dockerfile").read_text()
    apptainer = (REPO / "containers" / "resm.def").read_text()
    copied = {p for line in docker.splitlines() if line.startswith("COPY ") for p in line.split()[1:-1]}
    files = apptainer.split("%files")[1].split("%")[0].split()
    assert copied == set(files[0::2])  # the two recipes carry the same paths
    needed = {"pyproject.toml", "resm_core", "Snakefile", "rules", "envs", "captions", "config.yaml"}
    assert needed <= copied and all((REPO / p).exists() for p in copied)
    for recipe in (docker, apptainer):
        assert recipe.index("pip install torch==2.13.0") < recipe.index('pip install "/opt/resm-3h[workflow]"')


def test_the_conda_envs_install_this_checkout_from_where_snakemake_copies_them(tmp_path):
    """Snakemake copies an env file into .snakemake/conda/ and conda hands its pip section to pip as a file
    there: the package must still resolve to this checkout (`-e ..` pointed into .snakemake/)."""
    for name in ("resm.yaml", "vllm.yaml"):
        env = yaml.safe_load((REPO / "envs" / name).read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        ours = [line for line in pip if line.startswith("-")]
        assert ours == ["-e ${RESM_REPO}[workflow]"], (name, pip)  # the workflow stack: the rules need it
        where = tmp_path / name / ".snakemake" / "conda" / "0123abcd"
        where.mkdir(parents=True)
        (where / "condaenv.requirements.txt").write_text("\n".join(ours) + "\n")
        report = where / "report.json"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--no-deps", "--no-build-isolation",
             "--report", str(report), "-r", "condaenv.requirements.txt"],
            cwd=where, env={**os.environ, "RESM_REPO": str(REPO)}, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (install,) = json.loads(report.read_text())["install"]
        assert install["metadata"]["name"] == "resm-3h" and install["download_info"]["url"] == REPO.as_uri()
        assert install["requested_extras"] == ["workflow"]


@pytest.mark.workflow
def test_the_released_experts_presets_train_no_expert():
    for family in ("llama3", "mistral"):
        path = REPO / "configs" / f"paper-released-{family}.yaml"
        config, counts = load_config(path), job_counts(REPO, path)
        assert "train_expert" not in counts  # the three released experts are adopted, not trained
        assert counts["fetch_model"] == counts["adopt_model"] == 5  # three experts, two joint-annotation models
        assert counts["evaluate"] == len(arms(config)) and "mix/joint/helpfulness+honesty" in arms(config)


@pytest.mark.workflow
def test_decisive_preset_is_the_default_grid_with_three_runs_and_more_evaluation_items(tmp_path):
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    config = merged(default, yaml.safe_load((REPO / "configs" / "decisive.yaml").read_text()))
    check_config(config)
    first = arms(default)
    # every trained arm once per seed: the first seed's at the plain paths, the others under seedN/
    assert arms(config) == first + [f"seed{s}/{a}" for s in (1, 2) for a in first if a != "base"]
    assert config["results"] != default["results"]
    for name, bench in default["evaluation"]["benchmarks"].items():
        bigger = config["evaluation"]["benchmarks"][name]
        assert bigger["n"] >= bench["n"] and bigger["n_val"] >= bench["n_val"]
    layered = tmp_path / "decisive.yaml"
    layered.write_text(yaml.safe_dump(config))
    counts = job_counts(REPO, layered)
    assert counts["evaluate"] == len(arms(config))
    assert counts["train_expert"] == counts["extract_taskvec"] == 9 and counts["train_mixture"] == 2 * 3
    assert counts["merge"] == 6 * 3 and counts["mix_data"] == 2  # one mixture's data, trained with each seed


def test_training_seeds_name_their_first_run():
    config = load_config(REPO / "config.yaml")
    config["training"]["seeds"] = [3, 4]
    with pytest.raises(ConfigError, match=r"training\.seed is 0 but training\.seeds starts with 3"):
        check_config(config)
    del config["training"]["seed"]
    check_config(config)
    assert "seed4/expert/honesty" in arms(config) and "seed3/expert/honesty" not in arms(config)
    config["training"]["seeds"] = [1, 1]
    with pytest.raises(ConfigError, match=r"training\.seeds"):
        check_config(config)


def test_code_fingerprint_follows_the_stage_code(tmp_path):
    code = tmp_path / "resm_core"
    shutil.copytree(REPO / "resm_core", code, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: code_fingerprint(s, code) for s in ("merge", "train", "evaluate")}
    with open(code / "merge" / "averaging.py", "a") as f:
        f.write("\n# changed\n")
    after = {s: code_fingerprint(s, code) for s in ("merge", "train", "evaluate")}
    assert after["merge"] != before["merge"] and after["train"] == before["train"]
    assert after["evaluate"] == before["evaluate"]
    data = code_fingerprint("data", code)
    with open(code / "data" / "embedded" / "borderline_safe.jsonl", "a") as f:  # shipped data, not code
        f.write('{"prompt": "How do I kill a stuck job?", "answer": "Use scancel.", "category": "homonym"}\n')
    assert code_fingerprint("data", code) != data


def test_a_profile_that_sets_what_the_config_owns_is_refused_by_name():
    """Inside the SLURM plugin a profile's cpus_per_task beats a rule's threads and its set-resources replace the
    config's values: such a profile is refused, naming each key; site settings pass."""
    from resm_core.slurm import check_profile

    check_profile(
        {"slurm_partition": "cpu", "slurm_account": "a", "mem_mb": 1000}, {"merge": {"slurm_partition": "gpu"}}, {}
    )
    with pytest.raises(ConfigError) as err:
        check_profile({"cpus_per_task": 4}, {"merge": {"mem_mb": 96000, "slurm_partition": "gpu"}}, {"evaluate": 2})
    message = str(err.value)
    for named in ("default-resources: cpus_per_task", "set-resources: merge: mem_mb", "set-threads: evaluate"):
        assert named in message
    assert "slurm_partition" not in message.split("site settings")[0]


@pytest.mark.workflow
def test_sbatch_asks_for_the_config_resources_under_the_slurm_profile(tmp_path):
    """What the SLURM plugin would put in the sbatch call of a CPU rule and a GPU rule of the paper preset under
    profiles/slurm: the config's threads as --cpus-per-task, its memory, runtime and GPUs (a GPU merge running
    8 threads asked for 4 CPUs and the profile's memory before); a mixture of two dims gets twice the runtime.
    A profile that repeats a resource stops the workflow before any job, naming it."""
    from resm_core.workflow_jobs import planned_jobs

    config = load_config(REPO / "configs" / "paper-llama3-8b.yaml")["resources"]
    jobs = planned_jobs(REPO / "configs" / "paper-llama3-8b.yaml", REPO / "Snakefile", REPO / "profiles" / "slurm")
    flags = {job.rule: job.sbatch for job in jobs if not job.local}
    merge, train = config["merge"], config["train"]
    assert flags["build_data"] == "-A my-account -p cpu -t 60 --mem 4000 --ntasks=1 --cpus-per-task=1"
    assert flags["merge"] == (
        f"-A my-account -p gpu -t {merge['runtime']} --mem {merge['mem_mb']} "
        f"--cpus-per-task={merge['threads']} --gpus=1"
    )
    assert flags["train_expert"].endswith(f"--cpus-per-task={train['threads']} --gpus={train['gpu_model']}:1")
    mixtures = {job.sbatch.split(" -t ")[1].split()[0] for job in jobs if job.rule == "train_mixture"}
    assert mixtures == {str(2 * train["runtime"]), str(3 * train["runtime"])}
    assert {job.rule for job in jobs if job.local} >= {"fetch_assets", "prepare_base", "fetch_dataset"}
    fetches = [job for job in jobs if job.rule == "fetch_lm_eval_task"]  # ifeval, truthfulqa_mc2
    assert len(fetches) == 2 and all(job.local and not job.sbatch for job in fetches)

    for item in ("Snakefile", "rules", "captions", "envs", "configs", "config.yaml"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, tmp_path / item)
    profile = tmp_path / "mysite"
    profile.mkdir()
    site = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    site["set-resources"]["merge"]["mem_mb"] = 96000
    site["configfile"] = str(tmp_path / "config.yaml")
    (profile / "config.yaml").write_text(yaml.safe_dump(site))
    cmd = ["--workflow-profile", str(profile), "--configfile", "configs/paper-llama3-8b.yaml", "-n"]
    done = subprocess.run(SNAKEMAKE + cmd, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "set-resources: merge: mem_mb" in done.stdout + done.stderr


def test_a_layered_preset_alone_says_what_it_layers_on():
    """configs/decisive.yaml sets only what differs from config.yaml: given alone, the error says so and how to
    layer it, instead of "'base' is a required property"."""
    with pytest.raises(ConfigError, match=r"base, .* missing: .* snakemake --configfile config.yaml configs/decisive"):
        load_config(REPO / "configs" / "decisive.yaml")
