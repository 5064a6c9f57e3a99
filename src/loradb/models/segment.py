"""Box-prompted segmentation with LiteMedSAM, and a site's LoRA on its mask decoder.

As MedSAM evaluates: the prompt is the bounding box of the ground-truth mask; the masks are
the decoder's logits above 0 at 256 x 256; the score is Dice. The image encoder is frozen
and never adapted, so a site's images are encoded once and training runs the prompt encoder
and the mask decoder only (the decoder's attention projections carry the LoRA).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loradb.models import litemedsam


@dataclass
class Segmentations:
    """A site's images ready for the decoder: encoder output, box prompts and masks."""

    embeddings: Any  # torch (n, 256, 64, 64)
    boxes: Any  # torch (n, 4): x0, y0, x1, y1 in 256-pixel coordinates
    masks: Any  # torch (n, 256, 256) in {0, 1}


def box_of(mask: np.ndarray, size: int = litemedsam.IMAGE_SIZE) -> np.ndarray:
    """The bounding box of a mask, in the coordinates of the mask resized to size x size."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return np.array([0, 0, size - 1, size - 1], dtype=np.float32)
    sy, sx = size / mask.shape[0], size / mask.shape[1]
    return np.array([xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx - 1, (ys.max() + 1) * sy - 1], dtype=np.float32)


def resized_mask(mask: np.ndarray, size: int = litemedsam.IMAGE_SIZE) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)) > 127


def decode(model, embeddings, boxes):
    """Mask logits (n, 1, 256, 256) for encoder outputs and box prompts."""
    sparse, dense = model.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
    logits, _ = model.mask_decoder(image_embeddings=embeddings, image_pe=model.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    return logits


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def mean_dice(model, data: Segmentations, *, batch_size: int = 4) -> tuple[float, list[float]]:
    """Mean Dice of the model's masks on a site (and each image's)."""
    import torch

    scores = []
    with torch.no_grad():
        for start in range(0, len(data.boxes), batch_size):
            logits = decode(model, data.embeddings[start:start + batch_size], data.boxes[start:start + batch_size])
            for pred, truth in zip(logits[:, 0] > 0, data.masks[start:start + batch_size] > 0.5):
                scores.append(dice(pred.numpy(), truth.numpy()))
    return float(np.mean(scores)), scores


@dataclass(frozen=True)
class DecoderLoraConfig:
    rank: int = 4
    alpha: int = 8
    steps: int = 40
    lr: float = 1e-3
    batch_size: int = 4
    seed: int = 0


def train_decoder_lora(model, data: Segmentations, out: Path, config: DecoderLoraConfig = DecoderLoraConfig(),
                       *, progress: bool = False) -> Path:
    """A PEFT LoRA on the mask decoder's attention projections, trained on a site's images
    (BCE + soft Dice on the 256 x 256 logits, as MedSAM trains); saved as a PEFT adapter
    directory. `model` itself is left unchanged (a copy is trained)."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    names = litemedsam.decoder_attention_modules(model)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                                                 target_modules=names, lora_dropout=0.0))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr)
    generator = np.random.default_rng(config.seed)
    inner = peft_model.base_model.model
    inner.train()
    started = time.perf_counter()
    steps = range(config.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="training the decoder LoRA", unit="step")
    for _ in steps:
        pick = torch.from_numpy(generator.choice(len(data.boxes), size=min(config.batch_size, len(data.boxes)), replace=False))
        logits = decode(inner, data.embeddings[pick], data.boxes[pick])[:, 0]
        truth = data.masks[pick].float()
        probs = torch.sigmoid(logits)
        soft_dice = 1 - (2 * (probs * truth).sum(dim=(1, 2)) + 1) / (probs.sum(dim=(1, 2)) + truth.sum(dim=(1, 2)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, truth) + soft_dice.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    inner.eval()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    (out / "loradb_training.json").write_text(json.dumps({"task": "segmentation", "seconds": round(time.perf_counter() - started, 1),
                                                         "config": config.__dict__}) + "\n")
    return out
