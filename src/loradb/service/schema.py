"""The HTTP API's documents as schemas: what a representation, and every error, look like.

These give the OpenAPI document a real contract (clients and fuzzers see the fields,
their types and bounds) and refuse malformed input at the edge with 422. The deeper
checks (a space's id matches its recipe, a privacy block's sigma really gives its
guarantee, z's dimension equals the space's) stay in wire.representation_from_doc.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field, StrictFloat, StrictInt

from loradb.retrieval.represent import REPRESENTATION_FORMAT, Pooling
from loradb.retrieval.targets import MAX_SAMPLES

FLOAT32_MAX = 3.4028234663852886e38
MAX_VECTOR = 1 << 20  # a static bound for the schema; `serve --max-dim` is the one enforced

Number = Annotated[StrictFloat, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Vector = Annotated[list[Number], Field(min_length=1, max_length=MAX_VECTOR)]


# a task's size: label prompts (at most MAX_PROMPTS of MAX_PROMPT_CHARS) or an instruction;
# TASK_BYTES is the most it takes as JSON (6 bytes a character at worst, \uXXXX)
MAX_PROMPTS, MAX_PROMPT_CHARS, MAX_INSTRUCTION_CHARS = 1_000, 1_000, 100_000
TASK_BYTES = 6 * (MAX_PROMPTS * MAX_PROMPT_CHARS + MAX_INSTRUCTION_CHARS)


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SpaceDoc(_Strict):
    """The recipe z was computed with; `id` (optional) must match it."""

    id: str | None = Field(None, max_length=64)
    base_fingerprint: str = Field(min_length=1, max_length=128)
    tokenizer: str = Field(min_length=1, max_length=128)
    layer: StrictInt = Field(ge=0, le=100_000)
    pooling: Literal[tuple(p.value for p in Pooling)]  # type: ignore[valid-type]
    max_length: StrictInt = Field(ge=1, le=1_000_000)
    dim: StrictInt = Field(ge=1, le=MAX_VECTOR)


class PrivacyDoc(_Strict):
    """A differential-privacy release as loradb's represent writes it; recomputed on arrival."""

    epsilon: Number
    delta: Number
    clip: Number
    sigma: Number
    sensitivity: Number
    n_samples: StrictInt = Field(ge=1, le=MAX_SAMPLES)
    mechanism: str = Field(max_length=200)
    adjacency: str = Field(max_length=200)


class TaskDoc(_Strict):
    """The task the data is for: its label prompts or its instruction (one of the two)."""

    prompts: list[Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]] | None = Field(
        None, min_length=1, max_length=MAX_PROMPTS)
    instruction: str | None = Field(None, min_length=1, max_length=MAX_INSTRUCTION_CHARS)


class RepresentationDoc(_Strict):
    """A dataset's representation: the `.npy.json` sidecar `loradb represent` writes, plus z."""

    format: Literal[REPRESENTATION_FORMAT] = REPRESENTATION_FORMAT  # type: ignore[valid-type]
    base: str = Field("", max_length=1000, description="a label naming the base model (never opened by the server)")
    n_samples: StrictInt | None = Field(None, ge=1, le=MAX_SAMPLES)
    space: SpaceDoc
    z: Vector
    privacy: PrivacyDoc | None = None
    var: Vector | None = None
    task: TaskDoc | None = None
    task_z: Vector | None = None

    def as_doc(self) -> dict:
        """The plain document wire.representation_from_doc validates further."""
        return self.model_dump(exclude_none=True)


class ErrorBody(Schema):
    error: str = Field(description="what was wrong, in one line")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {  # FastAPI's `responses`
    status: {"model": ErrorBody, "description": what} for status, what in (
        (400, "bad input (the message says what)"), (401, "no valid token"), (403, "the token's scope or ownership does not allow it"),
        (404, "no such record"), (409, "a name already taken"), (413, "a body or a compose over this server's limits"),
        (422, "a request that does not fit the schema, or over a per-request limit"), (429, "over the token's rate limit"))
}
