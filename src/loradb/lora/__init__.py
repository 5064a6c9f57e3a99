"""LoRA adapters as files and as weight arithmetic, with no model running: the safetensors reader,
adapters, the base model's identity, exact and compressed composition, writing composed
adapters and merged models, in-memory theta0 + delta."""
