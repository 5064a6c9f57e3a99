"""Semi-synthetic multi-site segmentation data: `loradb data sites --out DIR`.

No multi-site segmentation data with masks ships in a reachable package, so the sites are
generated, as realistically as the sources allow, and said to be semi-synthetic wherever
they are used. Every image is composed from real material read inside two pinned wheels:
tissue textures from scikit-image's bundled images (brick, grass, gravel: CC0) and organ
textures (cell: CC0; ihc; moon), the organ's outline from a handwritten digit of
scikit-learn's digits (UCI), smoothed into a blob. The mask is exact: the outline itself.

Sites differ the way MRI sites do: a protocol (which tissue and organ texture, the organ's
contrast against its surroundings) shared by a scanner family, and per-site acquisition:
gamma, contrast, Rician noise, blur, a multiplicative bias field and resolution (down- and
up-sampling). Three families of three sites each, so a held-out site has two relatives in
the database: that is where retrieval should matter. Seeded: identical on every run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from loradb.io.pypi import PinnedFile

SKIMAGE = PinnedFile("scikit-image==0.26.0",
                     "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                     "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af", sdist=False)
SKLEARN = PinnedFile("scikit-learn==1.9.1",
                     "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
                     "52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df", sdist=False)
PINNED = (SKIMAGE, SKLEARN)
DIGITS = "sklearn/datasets/data/digits.csv.gz"  # 1797 rows: 64 pixels (0-16) of an 8x8 digit, then its label

SIZE = 128  # pixels per side of a generated image
TRAIN, TEST = 24, 16  # images per site
SEED = 0


@dataclass(frozen=True)
class Acquisition:
    """How a site's scanner turns the scene into its image (applied in this order)."""

    resolution: float  # the scene is down-sampled by this factor, then up-sampled back
    blur: float  # Gaussian sigma, pixels
    bias: float  # amplitude of the smooth multiplicative bias field
    gamma: float
    contrast: float  # around mid-grey
    noise: float  # Rician noise sigma (intensities in [0, 1])


@dataclass(frozen=True)
class Protocol:
    """What a scanner family shows: the tissue and organ textures and the organ's contrast."""

    tissue: str  # skimage/data/<tissue>.png
    organ: str  # skimage/data/<organ>.png
    organ_offset: float  # organ mean minus tissue mean, in [0, 1] intensity


FAMILIES: dict[str, tuple[Protocol, Acquisition]] = {
    "scanner-a": (Protocol("brick", "cell", +0.22), Acquisition(1.0, 0.5, 0.15, 0.8, 1.1, 0.03)),
    "scanner-b": (Protocol("grass", "ihc", -0.18), Acquisition(1.5, 1.0, 0.30, 1.3, 0.8, 0.06)),
    "scanner-c": (Protocol("gravel", "moon", +0.14), Acquisition(2.0, 1.5, 0.25, 1.0, 0.6, 0.08)),
}
SITES_PER_FAMILY = 3


def site_acquisitions(seed: int = SEED) -> dict[str, tuple[str, Protocol, Acquisition]]:
    """Every site: (family, protocol, its own acquisition = the family's, jittered)."""
    sites = {}
    for family, (protocol, base) in FAMILIES.items():
        for i in range(SITES_PER_FAMILY):
            rng = np.random.default_rng([seed, _stable(family), i])
            acq = replace(base, resolution=max(1.0, base.resolution * rng.uniform(0.85, 1.15)),
                          blur=max(0.0, base.blur + rng.uniform(-0.3, 0.3)), bias=base.bias * rng.uniform(0.7, 1.3),
                          gamma=base.gamma * rng.uniform(0.9, 1.1), contrast=base.contrast * rng.uniform(0.9, 1.1),
                          noise=base.noise * rng.uniform(0.8, 1.25))
            offset = protocol.organ_offset + rng.uniform(-0.03, 0.03)
            sites[f"{family[-1]}{i + 1}"] = (family, replace(protocol, organ_offset=offset), _rounded(acq))
    return sites


def _stable(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _rounded(acq: Acquisition) -> Acquisition:
    return Acquisition(**{k: round(v, 4) for k, v in asdict(acq).items()})


# ---- sources ---------------------------------------------------------------------------

class Sources:
    """The textures (grey, float in [0, 1]) and digit outlines read from the pinned wheels."""

    def __init__(self, skimage_wheel: Path, sklearn_wheel: Path):
        from PIL import Image

        self.textures: dict[str, np.ndarray] = {}
        names = {p.tissue for p, _ in FAMILIES.values()} | {p.organ for p, _ in FAMILIES.values()}
        with zipfile.ZipFile(skimage_wheel) as wheel:
            for name in sorted(names):
                with Image.open(io.BytesIO(wheel.read(f"skimage/data/{name}.png"))) as image:
                    self.textures[name] = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        with zipfile.ZipFile(sklearn_wheel) as wheel:
            rows = np.loadtxt(io.StringIO(gzip.decompress(wheel.read(DIGITS)).decode()), delimiter=",")
        self.digits = rows[:, :64].reshape(-1, 8, 8) / 16.0


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float image to (height, width)."""
    from PIL import Image

    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR),
                      dtype=np.float64)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflecting edges)."""
    if sigma < 0.05:
        return a
    radius = max(1, int(3 * sigma + 0.5))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-x ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    padded = np.pad(a, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def _crop(texture: np.ndarray, size: int, rng) -> np.ndarray:
    """A random crop of 1-2x the image size, rotated by a multiple of 90 degrees, resized to size."""
    side = int(rng.integers(size, min(texture.shape) + 1)) if min(texture.shape) > size else min(texture.shape)
    y, x = (int(rng.integers(0, texture.shape[i] - side + 1)) for i in (0, 1))
    patch = np.rot90(texture[y:y + side, x:x + side], int(rng.integers(0, 4)))
    return _resize(patch, (size, size))


# ---- one image ---------------------------------------------------------------------------

def organ_mask(sources: Sources, size: int, rng) -> np.ndarray:
    """A blob from a handwritten digit: up-sampled, smoothed, thresholded, placed at random."""
    digit = sources.digits[int(rng.integers(0, len(sources.digits)))]
    extent = int(rng.integers(int(size * 0.35), int(size * 0.6)))
    shape = _blur(_resize(np.pad(digit, 1), (extent, extent)), extent / 14)
    shape = shape > 0.45 * shape.max()
    mask = np.zeros((size, size), dtype=bool)
    y, x = (int(rng.integers(2, size - extent - 1)) for _ in range(2))
    mask[y:y + extent, x:x + extent] = shape
    return mask


def scene(sources: Sources, protocol: Protocol, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """The object before acquisition: (intensities in [0, 1], exact mask)."""
    mask = organ_mask(sources, size, rng)
    tissue = _crop(sources.textures[protocol.tissue], size, rng)
    organ = _crop(sources.textures[protocol.organ], size, rng)
    organ = (organ - organ.mean()) * 0.6 + tissue.mean() + protocol.organ_offset
    partial = _blur(mask.astype(np.float64), 0.7)  # partial volume at the organ's edge
    return np.clip(tissue * (1 - partial) + organ * partial, 0.0, 1.0), mask


def acquire(image: np.ndarray, acq: Acquisition, rng) -> np.ndarray:
    """The site's scanner applied to a scene (see Acquisition)."""
    size = image.shape[0]
    if acq.resolution > 1.0:
        low = max(8, int(round(size / acq.resolution)))
        image = _resize(_resize(image, (low, low)), (size, size))
    image = _blur(image, acq.blur)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    c = rng.normal(size=5)
    field = c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * xx ** 2 + c[4] * yy ** 2
    image = image * (1 + acq.bias * field / max(1e-9, np.abs(field).max()))
    image = np.clip(image, 0.0, 1.0) ** acq.gamma
    image = 0.5 + acq.contrast * (image - 0.5)
    noisy = np.hypot(image + rng.normal(0, acq.noise, image.shape), rng.normal(0, acq.noise, image.shape))  # Rician
    return np.clip(noisy, 0.0, 1.0)


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(a).save(out, format="PNG", optimize=False)
    return out.getvalue()


def write_sites(out: Path, sources: Sources, *, size: int = SIZE, train: int = TRAIN, test: int = TEST,
                seed: int = SEED, sites: list[str] | None = None) -> dict[str, dict]:
    """Write every site (or those named) as out/<site>/{train,test}/NNN.png with masks/NNN.png
    beside them (0 background, 255 organ) and out/<site>/domain.json; returns what each site is."""
    written = {}
    for name, (family, protocol, acq) in site_acquisitions(seed).items():
        if sites is not None and name not in sites:
            continue
        for split, count in (("train", train), ("test", test)):
            folder = out / name / split
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, _stable(name), _stable(split), i])
                image, mask = scene(sources, protocol, size, rng)
                image = acquire(image, acq, rng)
                (folder / f"{i:03d}.png").write_bytes(_png((image * 255 + 0.5).astype(np.uint8)))
                (folder / "masks" / f"{i:03d}.png").write_bytes(_png(mask.astype(np.uint8) * 255))
        info = {"family": family, "task": "segmentation", "protocol": asdict(protocol), "acquisition": asdict(acq),
                "train": train, "test": test, "size": size}
        (out / name / "domain.json").write_text(json.dumps(info, indent=2) + "\n")
        written[name] = info
    return written


def source_md(sites: dict[str, dict]) -> str:
    rows = "\n".join(f"| {n} | {i['family']} | {i['protocol']['tissue']} / {i['protocol']['organ']} "
                     f"({i['protocol']['organ_offset']:+.3f}) | " + ", ".join(f"{k} {v:g}" for k, v in i["acquisition"].items())
                     + f" | {i['train']} / {i['test']} |" for n, i in sites.items())
    return f"""# sites: semi-synthetic multi-site segmentation (generated, not real scans)

{len(sites)} sites in {len({i['family'] for i in sites.values()})} scanner families, {SIZE}x{SIZE} grey images with exact
organ masks, written by `loradb.evaluate.datasets.sites` (seed {SEED}): identical on every run.

Each image composes real material read inside two pinned wheels, nothing of which is run:
{SKIMAGE.requirement} ({SKIMAGE.filename}, sha256 {SKIMAGE.sha256}): the tissue textures brick, grass
and gravel (CC0Textures / DeviantArt, CC0) and the organ textures cell (CC0), ihc (no known copyright
restrictions) and moon (no statement); {SKLEARN.requirement} ({SKLEARN.filename}, sha256 {SKLEARN.sha256}):
the handwritten digits (UCI Optical Recognition of Handwritten Digits, Alpaydin & Kaynak 1998), each
up-sampled, smoothed and thresholded into the organ's outline, which is the mask.

A family fixes the protocol (tissue and organ texture, organ contrast); each site then has its own
acquisition: down- and up-sampling (resolution), Gaussian blur, a smooth multiplicative bias field,
gamma, contrast around mid-grey and Rician noise, the kinds of shift that separate MRI sites.
Layout: SITE/train/NNN.png with SITE/train/masks/NNN.png (0 background, 255 organ), the same for
test, and SITE/domain.json (family, protocol, acquisition).

| site | family | tissue / organ (organ contrast) | acquisition | train / test |
|---|---|---|---|---|
{rows}
"""


def sites_collection(cache: Path, out: Path) -> Path:
    """The collection in `out` (built once): the pinned wheels fetched and verified, every site written."""
    from loradb.io.files import replaced_dir

    if (out / "SOURCE.md").is_file():
        return out
    sources = Sources(SKIMAGE.fetch(cache), SKLEARN.fetch(cache))
    with replaced_dir(out) as tmp:
        written = write_sites(tmp, sources)
        (tmp / "SOURCE.md").write_text(source_md(written))
    return out
