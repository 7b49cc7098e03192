"""Reading and writing Hugging Face checkpoints tensor by tensor, with provenance manifests. Import the
modules themselves (`checkpoint.reader`, `.writer`, `.atomic`): this package imports nothing, so reaching
`checkpoint.atomic` does not load torch."""
