"""Images as data, for an image base model (LiteMedSAM): z(D) is the mean over the folder's
images of the image encoder's output, mean-pooled over positions.

A dataset is a folder of .png/.jpg files (a masks/ folder beside them holds labels, not
data). Images are read one batch at a time and features summed in float64, so memory does
not grow with the folder; each image's feature vector is cached under its content hash and
the model's fingerprint, so a folder is encoded once (the encoder takes seconds per image
on a CPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from loradb.errors import DataError
from loradb.io.files import cache_dir, sha256_file
from loradb.lora.base import load_base
from loradb.models import litemedsam

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The folder's images, sorted by name (not its masks/ or other subfolders)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of images")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{root} holds no .png or .jpg images")
    return files


def image_input(path: Path, size: int = litemedsam.IMAGE_SIZE) -> np.ndarray:
    """The encoder's input for one image (see litemedsam.PREPROCESSING): (3, size, size) float32."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path} cannot be read as an image ({e})") from None
    low, high = float(grey.min()), float(grey.max())
    grey = (grey - low) / (high - low) if high > low else np.zeros_like(grey)
    return np.repeat(grey[None], 3, axis=0)


class ImageEncoder:
    """LiteMedSAM's image encoder, mean-pooled, with a per-image feature cache."""

    def __init__(self, base_path: str | os.PathLike, cache: Path | None = None):
        self.base = load_base(base_path)
        if not litemedsam.is_litemedsam(self.base.path):
            raise DataError(f"{self.base.path} is not an image model; a folder of images needs `base` litemedsam")
        self.cache = (cache or cache_dir()) / "features" / f"litemedsam-{self.base.fingerprint[:16]}"
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = litemedsam.load(self.base.path)
        return self._model

    def embeddings(self, batch: np.ndarray):
        """The encoder's output for a batch of inputs: (n, 256, 64, 64) torch tensor."""
        import torch

        with torch.no_grad():
            return self.model.image_encoder(torch.from_numpy(batch))

    def features(self, paths: list[Path], *, batch_size: int = 4) -> Iterator[np.ndarray]:
        """One pooled feature vector (float64) per image, from the cache or the encoder."""
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            keys = [sha256_file(p) for p in chunk]
            cached = {k: self._cached(k) for k in keys}
            todo = [(p, k) for p, k in zip(chunk, keys) if cached[k] is None]
            if todo:
                pooled = self.embeddings(np.stack([image_input(p) for p, _ in todo])).mean(dim=(2, 3)).double().numpy()
                for (_, key), vector in zip(todo, pooled):
                    cached[key] = vector
                    self._store(key, vector)
            for key in keys:
                vector = cached[key]
                assert vector is not None  # every miss was encoded above
                yield vector

    def _cached(self, key: str) -> np.ndarray | None:
        return load_cached(self.cache / f"{key}.npy", (litemedsam.FEATURE_DIM,))

    def _store(self, key: str, vector: np.ndarray) -> None:
        save_atomic(self.cache / f"{key}.npy", vector)


def load_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A cached array, or None when it is missing, unreadable, of another shape or not finite."""
    try:
        array = np.load(path)
    except (OSError, ValueError):
        return None
    return array if array.shape == shape and np.isfinite(array).all() else None


def save_atomic(path: Path, array: np.ndarray) -> None:
    """np.save whole or not at all (readers never meet half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def represent_images(base_path: str | os.PathLike, folder: str | os.PathLike, *, progress: bool = True):
    """The representation of a folder of images in the image model's default space."""
    from loradb.retrieval.represent import Representation, default_space

    encoder = ImageEncoder(base_path)
    paths = image_files(folder)
    total = np.zeros(litemedsam.FEATURE_DIM)
    squares = np.zeros(litemedsam.FEATURE_DIM)
    features = encoder.features(paths)
    if progress:
        from tqdm import tqdm

        features = tqdm(features, total=len(paths), desc="encoding images", unit="image")
    for vector in features:
        total += vector
        squares += vector ** 2
    mean = total / len(paths)
    return Representation(z=mean.astype(np.float32), space=default_space(encoder.base), base_name=encoder.base.name,
                          n_samples=len(paths), var=np.maximum(squares / len(paths) - mean ** 2, 0).astype(np.float32))
