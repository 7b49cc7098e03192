"""A stage's code fingerprint covers every module the stage imports, found from the imports themselves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from workflow_helpers import REPO

from resm_core.stage_code import STAGE_ENTRIES, code_fingerprint, stage_files, stage_modules

# One interpreter loads the third-party libraries once, then forks a child per stage: each child starts
# with no resm_core module loaded, imports the stage's entry modules and reports what of resm_core it loaded.
_LOADED_PER_STAGE = """
import importlib, json, os, sys
for lib in ("torch", "numpy", "pandas", "scipy", "sklearn", "transformers", "safetensors", "yaml", "jsonschema",
            "tqdm", "matplotlib.pyplot", "datasets", "peft", "trl"):
    importlib.import_module(lib)
assert not [m for m in sys.modules if m.startswith("resm_core")]
entries = json.loads(sys.argv[1])
out = {}
for stage, modules in entries.items():
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        for m in modules:
            importlib.import_module(m)
        loaded = sorted(m for m in sys.modules if m == "resm_core" or m.startswith("resm_core."))
        os.write(write, json.dumps(loaded).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out[stage] = json.loads(pipe.read())
    os.wait()
print(json.dumps(out))
"""


def test_every_module_a_stage_imports_is_in_its_fingerprint():
    """Import each stage's code in a fresh process: whatever of resm_core it loads must be covered."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED_PER_STAGE, json.dumps(STAGE_ENTRIES)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(STAGE_ENTRIES)
    for stage, modules in loaded.items():
        assert set(modules) - stage_modules(stage) == set(), stage
        assert set(STAGE_ENTRIES[stage]) <= set(modules), stage


def test_the_judges_are_fitted_on_splits_and_schema_so_they_follow_them():
    judges = stage_modules("judges")
    assert {"resm_core.data.splits", "resm_core.data.schema", "resm_core.judges.refusal"} <= judges
    assert "resm_core.merge.engine" not in judges and "resm_core.train.trainer" not in judges


def test_lazy_imports_named_modules_and_named_data_files_count(tmp_path):
    """A toy package: an import inside a function, a module named in a string, a data file named by its folder."""
    pkg = tmp_path / "resm_core"
    (pkg / "stage" / "embedded").mkdir(parents=True)
    (pkg / "other").mkdir()
    for init in (pkg / "__init__.py", pkg / "stage" / "__init__.py", pkg / "other" / "__init__.py"):
        init.write_text("")
    (pkg / "stage" / "entry.py").write_text(
        textwrap.dedent('''
        """Docstrings that mention resm_core.unused are not imports."""
        from pathlib import Path
        EMBEDDED = Path(__file__).parent / "embedded"

        def later():
            from resm_core.other import lazy
            return lazy, "resm_core.other.named:Thing"
    ''')
    )
    (pkg / "stage" / "embedded" / "rows.jsonl").write_text("{}\n")
    (pkg / "other" / "lazy.py").write_text("")
    (pkg / "other" / "named.py").write_text("")
    (pkg / "other" / "unrelated.py").write_text("")
    (pkg / "unused.py").write_text("")
    STAGE_ENTRIES["toy"] = ["resm_core.stage.entry"]
    try:
        modules = stage_modules("toy", pkg)
        assert modules == {
            "resm_core",
            "resm_core.stage",
            "resm_core.stage.entry",
            "resm_core.other",
            "resm_core.other.lazy",
            "resm_core.other.named",
        }
        assert pkg / "stage" / "embedded" / "rows.jsonl" in stage_files("toy", pkg)
        before = code_fingerprint("toy", pkg)
        (pkg / "other" / "unrelated.py").write_text("x = 1\n")
        assert code_fingerprint("toy", pkg) == before
        (pkg / "stage" / "embedded" / "rows.jsonl").write_text('{"a": 1}\n')
        assert code_fingerprint("toy", pkg) != before
    finally:
        del STAGE_ENTRIES["toy"]


def stages_an_edit_reruns(tmp_path, module: str) -> set[str]:
    """The stages whose fingerprint changes when `module` (a path under resm_core/) of a copy is edited."""
    code = tmp_path / "resm_core"
    shutil.copytree(REPO / "resm_core", code, ignore=shutil.ignore_patterns("__pycache__"))
    before = {stage: code_fingerprint(stage, code) for stage in STAGE_ENTRIES}
    with open(code / module, "a") as f:
        f.write("\n# changed\n")
    return {stage for stage in STAGE_ENTRIES if code_fingerprint(stage, code) != before[stage]}


def test_a_change_to_the_splits_reaches_data_judges_and_evaluation_but_not_training_or_merging(tmp_path):
    changed = stages_an_edit_reruns(tmp_path, "data/splits.py")
    assert changed == {"data", "decontaminate", "mix", "judges", "evaluate", "report", "choose", "fronts"}


def test_a_plot_edit_reruns_the_reports_not_the_frontiers_choice(tmp_path):
    """The frontier merges start from the recipe `choose` writes: a change to a figure must not rewrite it."""
    assert stages_an_edit_reruns(tmp_path, "report/plots.py") == {"report", "fronts"}


def test_nothing_imports_in_a_circle():
    """No resm_core module imports itself back, not even through a lazy import inside a function (a module's
    own parent packages aside: Python runs them first anyway)."""
    from resm_core.stage_code import PACKAGE_DIR, _imports, module_file

    modules = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        dotted = ".".join(("resm_core", *path.relative_to(PACKAGE_DIR).with_suffix("").parts))
        modules.add(dotted.removesuffix(".__init__"))
    graph = {
        m: {n for n in _imports(m, module_file(m, PACKAGE_DIR), PACKAGE_DIR)[0] if not m.startswith(n + ".")}
        for m in modules
    }
    assert {"resm_core.merge.api", "resm_core.merge.catalogue", "resm_core.options"} <= set(graph)
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m] - {m}):
            assert state.get(n) != "open", " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
