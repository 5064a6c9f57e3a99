"""Causal language models: loading, the prompt of an (input -> target) task, and greedy,
bounded generation.

Training (train.py) and generation build the prompt the same way, here: the tokenizer's
chat template when it has one (SmolLM2-Instruct does: a user turn holding the instruction
and the input, then the assistant's turn), else "instruction\\n\\ninput\\n\\nAnswer:". The
input is cut to a number of tokens before it goes in, so the instruction and the
assistant header are never cut off. Generation is greedy (deterministic), stops at the
end token or after max_new_tokens, and keeps the first line of what was written.
"""

from __future__ import annotations

import os
from pathlib import Path

from loradb.errors import LoradbError

DEFAULT_MAX_NEW_TOKENS = 32
DEFAULT_GENERATE_BATCH = 8


def is_causal_lm(config: dict) -> bool:
    """Whether a model's config.json describes a causal (decoder-only) LM."""
    return any(str(a).endswith("ForCausalLM") or str(a).endswith("LMHeadModel") for a in config.get("architectures") or [])


def load_causal_lm(base_path: str | os.PathLike):
    """(AutoModelForCausalLM float32, tokenizer) from local files only, in eval mode."""
    from loradb.models.loading import load_model

    return load_model(base_path, causal=True)


class PromptFormat:
    """How an input becomes a prompt, and a training pair becomes token ids and labels."""

    def __init__(self, tokenizer, instruction: str, *, max_input_tokens: int):
        if max_input_tokens < 1:
            raise LoradbError(f"max input tokens must be at least 1, got {max_input_tokens}")
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.max_input_tokens = max_input_tokens
        self.chat = bool(getattr(tokenizer, "chat_template", None))  # an instruct model's own turn format
        self.end_id = next((t for t in (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
                            if t is not None), None)
        if self.end_id is None:
            raise LoradbError("the tokenizer has no end-of-sequence, separator or padding token to end a target with")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id

    def prompt(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_input_tokens]
        text = self.tokenizer.decode(ids)
        if self.chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": f"{self.instruction}\n\n{text}"}],
                                                      tokenize=False, add_generation_prompt=True)
        return f"{self.instruction}\n\n{text}\n\nAnswer:"

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer(self.prompt(text), add_special_tokens=False)["input_ids"]

    def training_ids(self, text: str, target: str, max_target_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple[list[int], list[int]]:
        """(input ids, labels): the prompt, then the target and the end token; only the latter are learned."""
        prompt = self.prompt_ids(text)
        # after "Answer:" the target is a new word; in a chat turn it starts the assistant's text
        answer = self.tokenizer(target.strip() if self.chat else " " + target.strip(),
                                add_special_tokens=False)["input_ids"][:max_target_tokens] + [self.end_id]
        return prompt + answer, [-100] * len(prompt) + answer


class Generator:
    """Greedy generation for a list of inputs with whatever weights `model` holds now."""

    def __init__(self, model, tokenizer, instruction: str, *, max_input_tokens: int,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = DEFAULT_GENERATE_BATCH):
        if max_new_tokens < 1 or batch_size < 1:
            raise LoradbError("max new tokens and the batch size must be at least 1")
        self.model = model
        self.format = PromptFormat(tokenizer, instruction, max_input_tokens=max_input_tokens)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def generate(self, texts: list[str], *, progress: bool = False, desc: str = "generate") -> list[str]:
        """The first line of the greedy continuation of each input's prompt, in input order.

        Inputs are batched by prompt length (left-padded, as decoders need) to waste
        little compute on padding; the order of the results is the order of `texts`.
        """
        import torch
        from tqdm.auto import tqdm

        prompts = [self.format.prompt_ids(t) for t in texts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        tok = self.format.tokenizer
        with tqdm(total=len(prompts), desc=desc, unit="ex", disable=None if progress else True, leave=False) as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                width = max(len(prompts[i]) for i in idx)
                ids = torch.tensor([[self.format.pad_id] * (width - len(prompts[i])) + prompts[i] for i in idx])
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
                with torch.inference_mode():
                    gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                              do_sample=False, num_beams=1, eos_token_id=self.format.end_id,
                                              pad_token_id=self.format.pad_id)
                for row, i in enumerate(idx):
                    text = tok.decode(gen[row, width:], skip_special_tokens=True).strip()
                    out[i] = text.splitlines()[0].strip() if text else ""
                bar.update(len(idx))
        return out


    def nll(self, texts: list[str], targets: list[str]) -> list[float]:
        """Each target's teacher-forced loss after its input's prompt, with whatever weights
        `model` holds now: the mean negative log-likelihood of its tokens and the end token,
        as training scores them (a second metric beside ROUGE, and a cheap one: no decoding)."""
        import torch

        pairs = [self.format.training_ids(t, y, self.max_new_tokens) for t, y in zip(texts, targets, strict=True)]
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        out = [0.0] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            ids, mask, labels = padded_pairs([pairs[i] for i in idx], self.format.pad_id)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            shifted = labels[:, 1:]  # the logits at position t predict the token at t + 1
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), shifted, ignore_index=-100,
                                                     reduction="none")
            per_pair = loss.sum(dim=1) / (shifted != -100).sum(dim=1)
            for row, i in enumerate(idx):
                out[i] = float(per_pair[row])
        return out


def padded_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int):
    """(input ids, attention mask, labels) tensors of (ids, labels) pairs, padded on the right
    (the labels with -100, which the loss ignores)."""
    import torch

    width = max(len(ids) for ids, _ in pairs)
    pad = [width - len(ids) for ids, _ in pairs]
    return (torch.tensor([ids + [pad_id] * p for (ids, _), p in zip(pairs, pad)]),
            torch.tensor([[1] * len(ids) + [0] * p for (ids, _), p in zip(pairs, pad)]),
            torch.tensor([labels + [-100] * p for (_, labels), p in zip(pairs, pad)]))


def generator_for(base_path: str | Path, *, instruction: str, max_input_tokens: int,
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = DEFAULT_GENERATE_BATCH) -> Generator:
    """The base causal LM loaded for generation (its weights are the caller's to change)."""
    model, tokenizer = load_causal_lm(base_path)
    model.eval()
    model.requires_grad_(False)
    return Generator(model, tokenizer, instruction, max_input_tokens=max_input_tokens, max_new_tokens=max_new_tokens,
                     batch_size=batch_size)


def run_generate(base_path: str | Path, data: str | Path, out: str | Path, *, adapter: str | Path | None = None,
                 instruction: str | None = None, field: str = "input", max_input_tokens: int = 128,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = DEFAULT_GENERATE_BATCH,
                 progress: bool = True) -> int:
    """`loradb generate`: greedy outputs for every input of a dataset, written as .jsonl.

    With `adapter`, the base's weights become theta0 + delta exactly before generating
    (the adapter is checked layer by layer against the base first). The output file is
    written whole or not at all. Returns the number of inputs.
    """
    import json

    from loradb.lora.adapter import read_adapter
    from loradb.lora.base import check_adapter_fits, load_base
    from loradb.lora.compose import compose_exact, factors_of
    from loradb.io.data import iter_texts
    from loradb.io.files import atomic_write_text
    from loradb.lora.inmemory import DeltaWeights
    from loradb.models.prompts import DEFAULT_INSTRUCTION, adapter_instruction

    base = load_base(base_path)
    if not is_causal_lm(base.config):
        raise LoradbError(f"{base.path} is not a causal language model (architectures {base.config.get('architectures')}); "
                          "generation needs one")
    if max_input_tokens < 1:
        raise LoradbError(f"`max_input_tokens` must be at least 1, got {max_input_tokens}")
    texts = list(iter_texts(data, field))
    lora = None
    if adapter is not None:
        lora = read_adapter(adapter)
        check_adapter_fits(base, lora, str(adapter))
        instruction = instruction or adapter_instruction(adapter)
    gen = generator_for(base.path, instruction=instruction or DEFAULT_INSTRUCTION, max_input_tokens=max_input_tokens,
                        max_new_tokens=max_new_tokens, batch_size=batch_size)
    if lora is not None:
        DeltaWeights(gen.model).set(compose_exact([factors_of(lora)], [1.0]))
    outputs = gen.generate(texts, progress=progress)
    atomic_write_text(Path(out), "".join(json.dumps({"input": t, "output": o}) + "\n" for t, o in zip(texts, outputs)))
    return len(texts)
