"""Reading and writing Hugging Face checkpoints tensor by tensor, with provenance manifests."""

from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import AtomicDirectory, ShardedWriter, parse_size

__all__ = ["AtomicDirectory", "CheckpointReader", "ShardedWriter", "parse_size"]
