"""Training: SFT and DPO experts and mixture models, full or LoRA, seeded and resumable."""
