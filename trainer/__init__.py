"""Synthetic data and decoupled LoRA fine-tuning for registered toolsets."""
