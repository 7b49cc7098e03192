"""Outputs that appear whole or not at all.

Snakemake (and people) judge a step finished by the presence of its output directory, so nothing appears
under the final name until everything in it is on disk: the step fills a hidden sibling staging directory,
fsyncs it and renames it into place; an exception inside the `with` block removes the staging directory.
Kept free of torch: the Snakefile imports it (through the assets) on every `snakemake` call.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from resm_core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STALE_ELSEWHERE_S = 6 * 3600  # a staging directory of another host untouched this long is a killed run's


def prepare_output(out_dir: Path, force: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse to overwrite unless asked, and to replace an input at all, before any expensive work starts;
    clear what killed runs left staged for this output; refuse while another live run writes it."""
    out_dir = Path(out_dir)
    target = out_dir.resolve()
    for given in inputs:
        path = Path(given).resolve()
        if path == target or target in path.parents:
            raise ConfigError(f"{out_dir}: the output is (or holds) the input {given}; it would be deleted")
    if out_dir.exists() and not force:
        raise CheckpointError(f"{out_dir}: output already exists; pass --force to replace it")
    if not out_dir.parent.exists():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_staging(out_dir)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())


def _staging_name(out_dir: Path) -> str:
    """`.NAME.tmp-HOST-PID-RANDOM`: whose it is, so a later run can tell a live writer from a killed one."""
    return f".{out_dir.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _clear_stale_staging(out_dir: Path) -> None:
    host = _host()
    prefix = f".{out_dir.name}.tmp-"
    for staged in out_dir.parent.glob(f"{glob.escape(prefix)}*"):
        m = re.fullmatch(r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}", staged.name[len(prefix) :])
        age = time.time() - staged.stat().st_mtime
        if m and m["host"] == host:
            if _pid_alive(int(m["pid"])) and int(m["pid"]) != os.getpid():
                raise CheckpointError(
                    f"{out_dir}: process {m['pid']} is writing this output now ({staged.name}); "
                    f"wait for it, or stop it and rerun"
                )
        elif age < STALE_ELSEWHERE_S:
            continue  # another host's (a shared file system): it may be live; publish refuses a clobber
        log.warning("%s: removing %s, left by a run that was killed", out_dir, staged.name)
        _remove(staged)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class AtomicDirectory:
    """A directory that appears under its final name only when the `with` block succeeds. `inputs` are paths
    the output must not replace (it would delete them)."""

    def __init__(self, out_dir: str | Path, force: bool = False, inputs: Iterable[str | Path] = ()):
        self.out_dir = Path(out_dir)
        self.force = force
        self.inputs = list(inputs)
        self.tmp_dir = self.out_dir.parent / _staging_name(self.out_dir)
        self.existed = False

    def __enter__(self) -> Path:
        prepare_output(self.out_dir, self.force, self.inputs)
        self.existed = self.out_dir.exists()
        self.tmp_dir.mkdir()
        return self.tmp_dir

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            return
        try:
            self.publish()
        except BaseException:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            raise

    def publish(self) -> None:
        for item in self.tmp_dir.rglob("*"):
            if item.is_file():
                _fsync_path(item)
        _fsync_path(self.tmp_dir)
        exists = self.out_dir.exists() or self.out_dir.is_symlink()
        if exists and not (self.force and self.existed):
            raise CheckpointError(
                f"{self.out_dir}: appeared while this run was writing it (another run with the same output?); "
                f"this run's result was not published"
            )
        if exists:  # replacing what was there at the start, as --force asked
            trash = self.out_dir.parent / f".{self.out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            self.out_dir.rename(trash)
            self.tmp_dir.rename(self.out_dir)
            _remove(trash)
        else:
            try:
                self.tmp_dir.rename(self.out_dir)
            except OSError as exc:  # created between the check and the rename (ENOTEMPTY, EEXIST)
                raise CheckpointError(
                    f"{self.out_dir}: appeared while this run was writing it; this run's result was not published"
                ) from exc
        _fsync_path(self.out_dir.parent)
