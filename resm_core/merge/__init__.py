"""Model merging: one registry of pure per-tensor methods and a streaming engine."""

from resm_core.merge.engine import MergeJob, MergeRequest, merge, merge_state_dicts
from resm_core.merge.registry import all_methods, get_method

__all__ = ["MergeJob", "MergeRequest", "merge", "merge_state_dicts", "all_methods", "get_method"]
