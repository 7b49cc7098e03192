"""Task vectors: expert minus base, from full fine-tunes or LoRA adapters, with statistics."""
