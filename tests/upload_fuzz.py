"""Fuzzing the upload route with crafted adapter files: schemathesis generates requests from
the OpenAPI schema, which says only "a file" for the adapter's parts, so it never reaches the
parsers of safetensors headers and adapter configs. Here each request takes a valid upload
and damages one thing (a header's shapes, dtypes, offsets, names or length field, the
file's bytes, the config's fields, the metadata, the representation), seeded, so a failure
can be replayed. Used bounded by tests/test_crafted.py and at length by
benchmarks/fuzz_server.py."""

from __future__ import annotations

import json
import random
import struct

DEEP = 5_000  # nesting levels for the deep-JSON damages: past Python's default recursion limit

ODD_VALUES = [-1, 0, 2 ** 63, 2 ** 64 + 1, 1.5, -0.0, "4", None, True, [], {}, [[1]], "\x00", "é" * 300, float("1e308")]


def _split(weights: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", weights[:8])
    return json.loads(weights[8:8 + n]), weights[8 + n:]


def safetensors_bytes(header: dict, data: bytes, length: int | None = None) -> bytes:
    """A safetensors file: its header's length (or `length`, a lie), the header, the data."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def damage(rng: random.Random, config: bytes, weights: bytes, meta: str, rep: dict) -> tuple[str, bytes, bytes, str, str]:
    """One damaged upload: (what was damaged, config, weights, meta, representation JSON)."""
    header, data = _split(weights)
    names = [k for k in header if k != "__metadata__"]
    cfg = json.loads(config)
    rep = json.loads(json.dumps(rep))
    kind = rng.choice(["shape", "dtype", "offsets", "name", "length", "bytes", "truncate", "metadata", "config",
                       "config-deep", "meta", "meta-deep", "rep", "entry"])
    target = rng.choice(names)
    if kind == "shape":
        header[target]["shape"] = rng.choice([[rng.choice(ODD_VALUES)], [rng.choice(ODD_VALUES), 4], [-2, -3],
                                              [2 ** 62, 8], [0, 0], [1] * 40, "4x4"])
    elif kind == "dtype":
        header[target]["dtype"] = rng.choice(["F64", "F16", "BF16", "I8", "I64", "BOOL", "U8", "X", 5, None, ""])
    elif kind == "offsets":
        header[target]["data_offsets"] = rng.choice([[10, 2], [0, 2 ** 63], [-8, 8], ["0", "8"], [0], [], None,
                                                     [0, len(data) + 1]])
    elif kind == "name":
        bad = rng.choice(["\x00", "\n", "", "é", "a" * 5000, ".lora_A.weight", "base_model.model."])
        header[target.replace("lora_", bad + "lora_", 1) if rng.random() < 0.5 else bad + target] = header.pop(target)
    elif kind == "length":
        return kind, config, safetensors_bytes(header, data, rng.choice([0, 7, 2 ** 63, 2 ** 64 - 1, len(data) * 10])), meta, json.dumps(rep)
    elif kind == "bytes":
        raw = bytearray(weights)
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return kind, config, bytes(raw), meta, json.dumps(rep)
    elif kind == "truncate":
        return kind, config, weights[:rng.randrange(len(weights))], meta, json.dumps(rep)
    elif kind == "metadata":
        header["__metadata__"] = rng.choice([{"a": 1}, {"a": {"b": "c"}}, ["x"], "x", {"\x00": "v"}, {"k": "\x00"}])
    elif kind == "entry":
        header[target] = rng.choice(ODD_VALUES)
    elif kind == "config":
        cfg[rng.choice(["r", "lora_alpha", "target_modules", "fan_in_fan_out", "use_rslora", "rank_pattern",
                        "alpha_pattern", "peft_type", "use_dora", "bias", "base_model_name_or_path",
                        "x" + str(rng.randrange(9))])] = rng.choice(ODD_VALUES)
    elif kind == "config-deep":
        return kind, b'{"r": 4, "lora_alpha": 8, "x": ' + _deep(DEEP).encode() + b"}", weights, meta, json.dumps(rep)
    elif kind == "meta":
        meta = json.dumps(rng.choice([{"k": "\x00"}, {"\x00": "v"}, {"k": 1}, {"k": None}, ["x"], "x", 3,
                                      {"k": {"nested": "v"}}, {"k" * 1000: "v" * 100_000}]))
    elif kind == "meta-deep":
        meta = '{"k": ' + _deep(DEEP) + "}"
    elif kind == "rep":
        field = rng.choice(["z", "space", "n_samples", "task", "var", "extra"])
        rep[field] = rng.choice([*ODD_VALUES, [float("nan")], [1e308] * 4, {"dim": -1}])
    return kind, json.dumps(cfg).encode(), safetensors_bytes(header, data), meta, json.dumps(rep, allow_nan=True)


def fuzz_uploads(post, config: bytes, weights: bytes, rep: dict, *, count: int, seed: int) -> dict:
    """`count` damaged uploads through `post(files, data) -> response`; what they got."""
    rng = random.Random(seed)
    statuses: dict[str, dict[str, int]] = {}
    problems = []
    for i in range(count):
        kind, cfg, raw, meta, rep_json = damage(rng, config, weights, "{}", rep)
        response = post({"adapter_config": ("adapter_config.json", cfg), "adapter_model": ("adapter_model.safetensors", raw)},
                        {"representation": rep_json, "name": f"fuzz-{seed}-{i}", "meta": meta})
        statuses.setdefault(kind, {}).setdefault(str(response.status_code), 0)
        statuses[kind][str(response.status_code)] += 1
        error = response.json().get("error") if response.status_code >= 400 else None
        if response.status_code >= 500 or (error is not None and (not isinstance(error, str) or "\n" in error)):
            problems.append({"request": i, "kind": kind, "status": response.status_code, "body": response.text[:300]})
    return {"requests": count, "statuses": statuses, "problems": problems}
