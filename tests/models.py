"""Tiny deterministic base models and PEFT adapters built inside the tests (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = (
    "the a an and or of to in on for with is was are be this that it he she they we you i not but "
    "pasta bread bake salt pepper soup onion garlic oven recipe cook chop stir boil fry sauce "
    "stock market bank rate rates interest profit loss shares price trade money fund invest "
    "team goal coach match score won lost final player league season ball game run "
    "patient doctor scan tumor report chest lung heart blood dose pain clinic "
    "good bad great terrible love hate movie film plot actor boring fun"
).split()


def write_tokenizer(path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (its old `vocab_file` is silently ignored,
    # which left a five-token vocabulary that read every word as [UNK])
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    assert tok.convert_tokens_to_ids("pasta") != tok.unk_token_id
    tok.save_pretrained(path)


def vocab_size(path: Path) -> int:
    return len((path / "vocab.txt").read_text().split("\n")) - 1


def make_bert(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A BertModel with hidden size 32, saved as safetensors with a tokenizer."""
    from transformers import BertConfig, BertModel

    write_tokenizer(path)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size(path), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(path)
    return path


def make_llama(path: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A LlamaForCausalLM with hidden size 32 (the decoder case), with a tokenizer.

    A larger initializer_range gives logits wide enough for a LoRA to change what it writes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    write_tokenizer(path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size(path), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                      tie_word_embeddings=False, initializer_range=initializer_range)
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    return path


def make_gpt2(path: Path, seed: int = 0) -> Path:
    """A GPT2LMHeadModel (Conv1D layers: LoRA with fan_in_fan_out)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    write_tokenizer(path)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size(path), n_embd=32, n_layer=2, n_head=4, n_positions=64)
    GPT2LMHeadModel(cfg).eval().save_pretrained(path)
    return path


def load_model(base: Path):
    """The base model in the class it was saved as."""
    import transformers

    arch = json.loads((base / "config.json").read_text())["architectures"][0]
    return getattr(transformers, arch).from_pretrained(base).eval()


def make_adapter(base: Path, out: Path, *, seed: int, r: int = 4, alpha: float = 8, targets=("query", "value"),
                 **lora_kwargs) -> Path:
    """A PEFT LoRA adapter with random (non-zero) A and B, saved in PEFT's format."""
    from peft import LoraConfig, get_peft_model

    model = load_model(base)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **lora_kwargs)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # make B non-trivial and of a realistic size
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    peft_model.save_pretrained(out)
    return out


def clear_fan_in_fan_out(adapter_dir: Path) -> None:
    """Say fan_in_fan_out false in the adapter's config, as a hand-made or converted one may."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["fan_in_fan_out"] = False
    cfg_path.write_text(json.dumps(cfg))
