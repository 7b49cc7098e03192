"""resm-3h core library: checkpoint I/O, task vectors and model merging (RESM and baselines)."""

__version__ = "0.1.0"
