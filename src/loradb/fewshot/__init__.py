"""Weights learned from a few labeled target examples (learned, LoraHub) for a compose."""
