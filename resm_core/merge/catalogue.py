"""The catalogue of merge methods: importing the method modules registers them (resm_core.merge.api)."""

from __future__ import annotations

from resm_core.errors import ConfigError
from resm_core.merge import averaging, consensus, resm, svd_methods, ties_family  # noqa: F401  (they register)
from resm_core.merge.api import METHODS, MergeMethod

RENAMED = {"della_ties": "della (DELLA's drop-elect-fuse; the summing variant is now della_linear)"}


def get_method(name: str) -> MergeMethod:
    if name in RENAMED:
        raise ConfigError(f"method: {name!r} was renamed to follow mergekit: use {RENAMED[name]}")
    if name not in METHODS:
        raise ConfigError(f"method: unknown merge method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def all_methods() -> dict[str, MergeMethod]:
    return dict(METHODS)
