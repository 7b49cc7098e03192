"""Input directories are read, never followed; what resm writes owns its bytes.

A symbolic link inside a model or adapter directory would carry its target (a secret beside the expert, a
whole directory) into an output whose card says it can be uploaded as it stands, so a link is refused by
name. The one exception is the Hugging Face cache, whose snapshots are links into the repo's own `blobs/`.
A file taken into an output is a copy-on-write clone where the file system can make one, otherwise a copy:
a hard link would let a later write to the source change the output behind its manifest's digests. Only the
cache's blobs, which the hub never rewrites in place, are hard-linked.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from pathlib import Path

from resm_core.errors import CheckpointError, ResmError

_FICLONE = 0x40049409  # linux/fs.h: clone a whole file (btrfs, xfs, bcachefs; others answer EOPNOTSUPP)
_SNAPSHOT_DIR = re.compile(r"^(?:models|datasets|spaces)--[^/]+/snapshots/[0-9a-f]{40}$")


def _cache_repo(directory: Path) -> Path | None:
    """The repo folder (`models--org--name`) when `directory` is a snapshot of the hub cache, else None."""
    parts = directory.absolute().parts
    if len(parts) >= 3 and _SNAPSHOT_DIR.match("/".join(parts[-3:])):
        return directory.absolute().parent.parent
    return None


def _is_blob(path: Path) -> bool:
    """A file in a hub cache's `blobs/` folder (content-addressed: the hub never rewrites one in place)."""
    return path.parent.name == "blobs" and path.parent.parent.name.startswith(("models--", "datasets--"))


def check_no_links(directory: str | Path, what: str = "input", error: type[ResmError] = CheckpointError) -> None:
    """Refuse a symbolic link anywhere under `directory` (links of a hub cache snapshot into its own blobs
    excepted), naming the first one and where it points."""
    directory = Path(directory)
    repo = _cache_repo(directory)
    blobs = (repo / "blobs").resolve() if repo else None
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            if not path.is_symlink():
                continue
            target = path.resolve()
            if blobs is not None and target.parent == blobs and target.is_file():
                continue
            raise error(
                f"{path}: a symbolic link (to {os.readlink(path)}) inside the {what} directory {directory}; "
                f"resm reads inputs but never follows links out of them: copy the file in, or remove the link"
            )


def own_copy(src: Path, dst: Path) -> None:
    """`dst` with the bytes of `src`, owned: a clone (copy-on-write) or a copy; a hard link only to a hub
    cache blob. Permission bits are kept."""
    real = src.resolve()
    if _is_blob(real):
        try:
            os.link(real, dst)
            return
        except OSError:
            pass
    with open(real, "rb") as source, open(dst, "wb") as target:
        try:
            fcntl.ioctl(target.fileno(), _FICLONE, source.fileno())
        except OSError:
            shutil.copyfileobj(source, target, 1 << 24)
    shutil.copymode(real, dst)


def copy_files(src: Path, dst: Path, names: list[str] | None = None) -> list[str]:
    """The regular files of `src` (those in `names` only, if given; hidden ones never) copied into `dst` with
    `own_copy`, subfolders skipped; the names copied. Call `check_no_links` on `src` first."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src.iterdir()):
        if f.name.startswith(".") or not f.is_file() or (names is not None and f.name not in names):
            continue
        own_copy(f, dst / f.name)
        copied.append(f.name)
    return copied
