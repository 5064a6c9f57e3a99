"""Read safetensors files into float32 numpy arrays without torch.

The safetensors package's numpy reader cannot decode bfloat16, which is how many
adapters are saved; the format is simple enough (8-byte header length, JSON header,
raw little-endian data) to read directly. Reading never executes code from the file.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from loradb.io import jsondoc
from loradb.errors import LoradbError

# safetensors dtype name -> numpy dtype of the stored bytes
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # decoded to float32 by widening the bits
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_header(path: Path, label: str | None = None) -> tuple[dict, dict[str, str], int]:
    """Parse a safetensors header.

    Args:
        path: the .safetensors file.
        label: how to name it in errors (default: its path).
    Returns:
        (tensors, metadata, data_offset): tensors maps name -> {"dtype", "shape", "data_offsets"}.
    """
    try:
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise ValueError("file shorter than its header")
            (n,) = struct.unpack("<Q", raw_len)
            if n > _MAX_HEADER_BYTES:
                raise ValueError("header too large")
            header = jsondoc.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise LoradbError(f"{label or path} is not a readable safetensors file ({e}); re-save it with safetensors") from None
    if not isinstance(header, dict):
        raise LoradbError(f"{label or path} is not a readable safetensors file (header is not a mapping)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise LoradbError(f"{label or path} is not a readable safetensors file (its __metadata__ must map strings to strings)")
    return header, metadata, 8 + n


def read_tensors(path: Path, label: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every tensor of a safetensors file as float32.

    Args:
        path: the .safetensors file.
        label: how to name it in errors (default: its path).
    Returns:
        (tensors, metadata): name -> float32 array, and the file's string metadata.
    """
    header, metadata, offset = read_header(path, label)
    path_label = label or path
    data = Path(path).read_bytes()[offset:]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            start, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(s) for s in info["shape"])
            if any(s < 0 for s in shape) or not all(isinstance(s, int) for s in info["shape"]):
                raise ValueError("a dimension that is not a whole number >= 0")
        except (KeyError, TypeError, ValueError):
            raise LoradbError(f"{path_label}: tensor {name!r} has an unsupported dtype or a malformed header entry") from None
        count = math.prod(shape)  # Python's integers: a product past int64 cannot wrap round to a small count
        if not (0 <= start <= end <= len(data)) or end - start != count * dtype.itemsize:
            raise LoradbError(f"{path_label}: tensor {name!r} points outside the file; the file is truncated or corrupt")
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.astype(np.float32)
    return out, metadata
