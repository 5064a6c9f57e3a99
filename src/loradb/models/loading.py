"""Loading a base model with transformers, offline and quiet: the one entry for every
command that runs the model (represent, classify, generate, train, few-shot)."""

from __future__ import annotations

import os

from loradb.errors import LoradbError


def load_model(base_path: str | os.PathLike, *, causal: bool = False):
    """The base model (transformers AutoModel, or AutoModelForCausalLM with `causal`, float32)
    and its tokenizer, from local files only.

    One place for what every caller needs: no hub access, quiet transformers logging,
    a pad token for decoder tokenizers that lack one (padding is masked out anyway).
    Returns:
        (model, tokenizer).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import warnings

    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # our own bars report progress; theirs only says "loading weights"
    # PEFT calls an API that transformers 5 deprecates; the warning is theirs to fix, not the user's
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
        model, info = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(
            base_path, local_files_only=True, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise LoradbError(f"cannot load base model {base_path} with transformers ({e})") from None
    if info["missing_keys"]:  # transformers would fill them with random values and only log it
        missing = sorted(info["missing_keys"])
        raise LoradbError(f"base model {base_path} has no weights for {len(missing)} of its tensors (e.g. {missing[0]}); "
                          "they would be random: refusing to use it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
