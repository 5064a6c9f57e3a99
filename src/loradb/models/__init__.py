"""Running a base model: loading it offline, the packaged models, label prompts and instructions,
classification, generation and LoRA training."""
