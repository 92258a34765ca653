"""How a `Completion` is stored in the generation cache: one self-contained byte string per answer.

Every cache backend stores what `encode_completion` returns and gives it back to
`decode_completion`; the format is this module's alone.

The bytes are a header (`MAGIC`, then the length of a JSON object), that JSON object with
the small fields (text, token count, finish reason, error, and the top-k's shape), then the
top-k arrays raw: token ids in the fewest little-endian bytes (2, 3 or 4) that hold the
largest one with all-ones kept for "no id", then the log-probabilities as float16. At top-20
with a 128k vocabulary that is 100 bytes per generated token, against about 1,400 for the JSON
this cache held before; those older rows (JSON text, as bytes or str) still decode.
"""

from __future__ import annotations

import json
import struct

import msgspec
import numpy as np

from resources.backends import Completion, TopK

MAGIC = b"\x00DC1"  # never the start of JSON text, so a row's first bytes tell the two formats apart
_HEADER = struct.Struct("<4sI")


def encode_completion(completion: Completion) -> bytes:
    fields = {
        "text": completion.text,
        "num_tokens": completion.num_tokens,
        "finish_reason": completion.finish_reason,
        "error": completion.error,
    }
    arrays = b""
    top = completion.top_logprobs
    if top is not None:
        width = _id_width(top.ids) if top.has_ids else 0
        fields["top"] = {"steps": len(top), "k": top.k, "id_bytes": width, "tokens": top.tokens}
        arrays = _pack_ids(top.ids, width) + top.logprobs.astype("<f2").tobytes()
    small = msgspec.json.encode(fields)
    return _HEADER.pack(MAGIC, len(small)) + small + arrays


def decode_completion(data: bytes | memoryview | str) -> Completion:
    if isinstance(data, memoryview):  # what some database drivers hand back for a binary column
        data = data.tobytes()
    if isinstance(data, str) or not data.startswith(MAGIC):
        return _decode_json(data)
    _, size = _HEADER.unpack_from(data)
    start = _HEADER.size + size
    fields = msgspec.json.decode(data[_HEADER.size : start])
    shape = fields.pop("top", None)
    if shape is not None:
        fields["top_logprobs"] = _decode_top(memoryview(data)[start:], shape)
    return Completion(**fields)


def _decode_top(arrays: memoryview, shape: dict) -> TopK:
    steps, k, width = shape["steps"], shape["k"], shape["id_bytes"]
    id_size = steps * k * width
    if len(arrays) != id_size + steps * k * 2:
        raise ValueError(f"generation cache: a completion's top-k holds {len(arrays)} bytes, not {steps}x{k}")
    ids = _unpack_ids(arrays[:id_size], width, steps * k).reshape(steps, k)
    logprobs = np.frombuffer(arrays[id_size:], dtype="<f2").reshape(steps, k)
    tokens = shape["tokens"]
    return TopK(ids, logprobs, None if tokens is None else tuple(tuple(step) for step in tokens))


def _id_width(ids: np.ndarray) -> int:
    """The fewest bytes that hold every id below the all-ones value that stands for "no id"."""
    largest = int(ids.max(initial=-1))
    return next(width for width in (2, 3, 4) if largest < (1 << (8 * width)) - 1)


def _pack_ids(ids: np.ndarray, width: int) -> bytes:
    if width == 0:
        return b""
    as_bytes = ids.astype("<i4").view(np.uint8).reshape(-1, 4)  # -1 is all ones in every width
    return as_bytes[:, :width].tobytes()


def _unpack_ids(data: memoryview, width: int, count: int) -> np.ndarray:
    if width == 0:
        return np.full(count, -1, dtype=np.int32)
    padded = np.zeros((count, 4), dtype=np.uint8)
    padded[:, :width] = np.frombuffer(data, dtype=np.uint8).reshape(count, width)
    ids = padded.view("<u4").ravel()
    return np.where(ids == (1 << (8 * width)) - 1, -1, ids).astype(np.int32)


def _decode_json(data: bytes | str) -> Completion:
    """A row in the cache's first format: the Completion as JSON, its top-k as per-token entries."""
    fields = json.loads(data)
    steps = fields.pop("top_logprobs", None)
    if steps is not None:
        logprobs = [[alt["logprob"] for alt in step] for step in steps]
        if all(alt.get("token_id") is not None for step in steps for alt in step):
            fields["top_logprobs"] = TopK.from_steps(logprobs, ids=[[alt["token_id"] for alt in s] for s in steps])
        else:
            fields["top_logprobs"] = TopK.from_steps(logprobs, tokens=[[alt["token"] for alt in s] for s in steps])
    return Completion(**fields)
