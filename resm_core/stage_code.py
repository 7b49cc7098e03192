"""Which library code each workflow stage runs, found from the imports themselves, and a fingerprint of it.

Snakemake's rerun triggers cannot see imported Python, so every rule passes its stage's fingerprint as a
parameter: editing any module a stage imports (directly, lazily inside a function, or named in a string
such as `resm_core.schemas`) reruns exactly the rules of the stages that use it. Data files shipped beside
the code (the schemas, the embedded hand-written requests) count as code of the stages whose modules name
them (by file name, or by the name of the folder that holds them).
"""

from __future__ import annotations

import ast
import hashlib
import re
from functools import cache
from pathlib import Path

PACKAGE = "resm_core"
PACKAGE_DIR = Path(__file__).resolve().parent
DATA_SUFFIXES = {".yaml", ".yml", ".json", ".jsonl", ".jinja", ".txt", ".csv"}

# The library modules each stage's rules run (`resm` then imports what these import).
STAGE_ENTRIES = {
    "assets": ["resm_core.assets"],
    "base": ["resm_core.base_models"],  # base_request comes with it
    "data": ["resm_core.data.build"],
    "decontaminate": ["resm_core.data.decontaminate"],
    "mix": ["resm_core.data.mixtures", "resm_core.judges"],
    "train": ["resm_core.train.trainer"],
    "hub": ["resm_core.hub", "resm_core.base_models"],
    "adopt": ["resm_core.adopt"],
    "taskvec": ["resm_core.taskvec.extract", "resm_core.taskvec.conflicts"],
    "merge": ["resm_core.merge.engine", "resm_core.merge.recipe"],
    "judges": ["resm_core.judges.refusal", "resm_core.judges.similarity", "resm_core.judges.served"],
    "evaluate": ["resm_core.evaluate.run", "resm_core.evaluate.request"],
    "report": ["resm_core.report.build", "resm_core.grid"],
    # the frontier's validation choice apart from the report's tables and plots: editing a plot must not
    # rewrite the recipe every frontier merge starts from (and so rerun them)
    "choose": ["resm_core.report.pick"],
    "fronts": ["resm_core.report.fronts"],
}
_NAMED = re.compile(rf"\b{PACKAGE}(?:\.\w+)+")


def module_file(module: str, root: Path) -> Path | None:
    """The source file of a module of the package under `root` (a package is its __init__.py)."""
    parts = module.split(".")[1:]
    path = root.joinpath(*parts)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _strings(tree: ast.AST) -> set[str]:
    """String constants that are values, not docstrings or bare string statements."""
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare
    }


def _ours(names: set[str], root: Path) -> set[str]:
    """The package's modules among `names`, with the parent packages importing them runs first."""
    ours = {m for m in names if m == PACKAGE or m.startswith(PACKAGE + ".")}
    parents = {".".join(m.split(".")[:i]) for m in ours for i in range(1, len(m.split(".")))}
    return {m for m in ours | parents if module_file(m, root) is not None}


def _imports(module: str, source: Path, root: Path) -> tuple[set[str], set[str]]:
    """(modules it imports or names in a string, its string constants)."""
    stat = source.stat()
    imported, strings = _parsed(module, source, stat.st_mtime_ns, stat.st_size, root)
    return set(imported), set(strings)


@cache
def _parsed(module: str, source: Path, mtime_ns: int, size: int, root: Path) -> tuple[frozenset[str], frozenset[str]]:
    """Parsed once per file version: every stage that reaches a module shares the work."""
    tree = ast.parse(source.read_text(), str(source))
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    strings = _strings(tree)
    for text in strings:
        found |= set(_NAMED.findall(text))
    return frozenset(_ours(found, root)), frozenset(strings)


@cache
def _package_data(root: Path) -> tuple[tuple[Path, tuple[str, ...]], ...]:
    """Every data file of the package, with the names of the folders (not packages) that hold it."""
    out = []
    for f in sorted(root.rglob("*")):
        if f.suffix not in DATA_SUFFIXES or not f.is_file() or "__pycache__" in f.parts:
            continue
        folders = []
        for p in f.parents:
            if (p / "__init__.py").is_file():
                break
            folders.append(p.name)
        out.append((f, tuple(folders)))
    return tuple(out)


def _data_files(root: Path, strings: set[str]) -> set[Path]:
    """Data files of the package that a module names: by file name, or by the name of the folder (not a
    package) that holds them."""
    return {f for f, folders in _package_data(root) if f.name in strings or any(n in strings for n in folders)}


@cache
def _closure(entries: tuple[str, ...], root: Path) -> tuple[frozenset[str], frozenset[Path]]:
    """(modules, data files) a stage can reach; a data file's own mentions of modules count too."""
    modules: set[str] = set()
    data: set[Path] = set()
    todo = sorted(_ours(set(entries), root))  # an entry's parent packages run first
    while todo:
        module = todo.pop()
        if module in modules:
            continue
        source = module_file(module, root)
        if source is None:
            raise KeyError(f"{module}: no such module under {root}")
        modules.add(module)
        imported, strings = _imports(module, source, root)
        new_data = _data_files(root, strings) - data
        data |= new_data
        for f in new_data:
            imported |= _ours(set(_NAMED.findall(f.read_text(errors="replace"))), root)
        todo += sorted(imported - modules)
    return frozenset(modules), frozenset(data)


def stage_modules(stage: str, package_dir: str | Path = PACKAGE_DIR) -> set[str]:
    """Every resm_core module the stage's code can import, lazily imported ones included."""
    return set(_closure(tuple(STAGE_ENTRIES[stage]), Path(package_dir).resolve())[0])


def stage_files(stage: str, package_dir: str | Path = PACKAGE_DIR) -> list[Path]:
    """The stage's module files and the data files they read."""
    root = Path(package_dir).resolve()
    modules, data = _closure(tuple(STAGE_ENTRIES[stage]), root)
    files = {module_file(m, root) for m in modules} | set(data)
    return sorted(f for f in files if f is not None)


def code_fingerprint(stage: str, package_dir: str | Path = PACKAGE_DIR) -> str:
    """SHA-256 over the stage's files (path and content): a change reruns exactly the stages that use it."""
    root = Path(package_dir).resolve()
    h = hashlib.sha256()
    for f in stage_files(stage, root):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]
