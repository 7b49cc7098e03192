"""Models named by hub id (`org/name`, optionally `@revision`) wherever a command takes a model directory.

A hub id resolves through `huggingface_hub` into its cache (offline from the cache when HF_HUB_OFFLINE=1),
so a second use downloads nothing; the snapshot directory's name is the commit, and every manifest records
repo and commit next to the path (`hub_origin`: a cache snapshot, or a fetched directory whose files match the
cache's snapshot; a `resm_source.json` alone is a claim, never an origin). `fetch` puts a snapshot into a
plain directory of its own (hard links to the cache's immutable blobs where the file system allows, else
copies) for the workflow, whose compute nodes may not see the login node's cache.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.errors import CheckpointError
from resm_core.input_dirs import own_copy
from resm_core.jsonfile import read_json

log = logging.getLogger(__name__)

SOURCE_FILE = "resm_source.json"  # where a fetched directory says which repo and commit it holds
_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")
_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})")
_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt", "*.md"]


@dataclass(frozen=True)
class HubId:
    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "")


def parse_id(text: str | Path) -> HubId | None:
    """A hub id, or None for anything that exists locally or does not look like `org/name[@revision]`."""
    text = str(text)
    if Path(text).exists():
        return None
    m = _ID.fullmatch(text)
    return HubId(m["repo"], m["revision"]) if m else None


def snapshot(
    hub_id: HubId, allow_pickle: bool = False, repo_type: str = "model", patterns: list[str] | None = None
) -> Path:
    """The snapshot directory of a hub model (or dataset, with its own `patterns`; None: every file) in the
    huggingface_hub cache, downloaded if missing."""
    from huggingface_hub import snapshot_download

    if repo_type == "model":
        patterns = _PATTERNS + (["*.bin"] if allow_pickle else [])
    try:
        path = snapshot_download(hub_id.repo, revision=hub_id.revision, repo_type=repo_type, allow_patterns=patterns)
    except Exception as exc:  # offline without the files, a gated repo, an unknown repo or revision
        raise CheckpointError(
            f"{hub_id}: not a local directory, and the hub did not give it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return Path(path)


def local_model(arg: str | Path, allow_pickle: bool = False) -> Path:
    """A model argument as a local directory: itself, or the cache snapshot of the hub id it names."""
    hub_id = parse_id(arg)
    return snapshot(hub_id, allow_pickle) if hub_id else Path(arg)


def hub_origin(path: str | Path) -> dict[str, str] | None:
    """{repo, commit} of a cache snapshot, or of a fetched directory whose files resm can match with the
    cache's snapshot of that commit; None for anything else. A `resm_source.json` is only a claim: any
    directory can carry one, and a card must not name a hub model that was never used."""
    path = Path(path)
    source = path / SOURCE_FILE
    if path.is_dir() and source.is_file():
        data = read_json(source, CheckpointError)
        origin = {k: str(data[k]) for k in ("repo", "revision", "commit") if data.get(k)}
        if _matches_cache(path, origin):
            return origin
        log.warning(
            "%s: %s names %s@%s, but its files do not match that commit's snapshot in the hub cache (absent, or "
            "different): recorded as a local directory",
            path,
            SOURCE_FILE,
            origin.get("repo"),
            origin.get("commit"),
        )
        return None
    m = _SNAPSHOT.search(path.resolve().as_posix())
    return {"repo": f"{m['org']}/{m['name']}", "commit": m["commit"]} if m else None


def _matches_cache(directory: Path, origin: dict[str, str]) -> bool:
    """Every file of `directory` (its `resm_source.json` aside) is in the cache's snapshot of the claimed
    commit with the same SHA-256 (an LFS blob's name is its SHA-256; other blobs are hashed)."""
    from huggingface_hub import constants

    from resm_core.checkpoint.digests import sha256_file

    repo, commit = origin.get("repo", ""), origin.get("commit", "")
    if not _ID.fullmatch(repo) or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return False
    snapshot_dir = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    # hidden files are not the model's (Snakemake marks a directory output with `.snakemake_timestamp`)
    files = [f for f in directory.rglob("*") if f.is_file() and f.name != SOURCE_FILE and not f.name.startswith(".")]
    if not snapshot_dir.is_dir() or not files:
        return False
    for f in files:
        cached = snapshot_dir / f.relative_to(directory)
        if not cached.is_file():
            return False
        blob = cached.resolve()
        digest = blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else sha256_file(blob)
        if digest != sha256_file(f):
            return False
    return True


def fetch(
    hub_id: HubId,
    out: Path,
    allow_pickle: bool = False,
    force: bool = False,
    repo_type: str = "model",
    patterns: list[str] | None = None,
) -> Path:
    """The snapshot as a directory of its own, with `resm_source.json` naming repo, revision and commit."""
    from huggingface_hub.utils import filter_repo_objects

    source = snapshot(hub_id, allow_pickle, repo_type, patterns)
    # offline, the cache gives the whole snapshot: only the files asked for are taken
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if not p.is_dir())
    with AtomicDirectory(out, force=force) as staging:
        for name in filter_repo_objects(files, allow_patterns=patterns):
            item = source / name
            target = staging / item.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            own_copy(item, target)
        origin = {"repo": hub_id.repo, "revision": hub_id.revision, "commit": source.name}
        (staging / SOURCE_FILE).write_text(json.dumps(origin, indent=2) + "\n")
    return out
