"""How the retrieved adapters are weighed: the zero-shot formulas (formulas.py), the few-shot
learners (learned.py, shots.py), and the one table of methods (registry.py)."""
