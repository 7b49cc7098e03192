"""Error types. Each message names the file, tensor or config key at fault, so a user can act on it."""


class ResmError(Exception):
    """Base class: the CLI prints these as one-line errors (exit code 2) instead of tracebacks."""


class ConfigError(ResmError):
    """A recipe, flag or parameter is missing, unknown or out of range."""


class CheckpointError(ResmError):
    """A model, adapter or task-vector directory cannot be read or written."""


class CompatibilityError(ResmError):
    """Base and experts do not match (architecture, keys, shapes, vocabulary, tokenizer)."""


class NumericError(ResmError):
    """A tensor holds NaN or Inf."""


class AssetError(ResmError):
    """A pinned asset cannot be downloaded, verified or found."""


class DataError(ResmError):
    """A dataset source, field, split or mixture is unknown, malformed or empty."""


class TrainingError(ResmError):
    """A training run cannot start or continue (model, tokenizer, data or checkpoint)."""


class JudgeError(ResmError):
    """A judge is not fitted, or its model cannot be read or used as the judge needs."""


class EvaluationError(ResmError):
    """An arm cannot be scored: a benchmark has nothing to score."""


class ReportError(ResmError):
    """A report or comparison lacks what it is built from (an arm's evaluation, shared items)."""
