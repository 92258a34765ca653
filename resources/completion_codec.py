"""How a `Completion` is stored in the generation cache: one self-contained byte string per answer.

Every cache backend stores what `encode_completion` returns and gives it back to
`decode_completion`; the format is this module's alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from resources.backends import Completion, TokenLogprob


def encode_completion(completion: Completion) -> bytes:
    return json.dumps(asdict(completion), ensure_ascii=False).encode()


def decode_completion(data: bytes | str) -> Completion:
    fields = json.loads(data)
    top = fields.get("top_logprobs")
    if top is not None:
        fields["top_logprobs"] = tuple(tuple(TokenLogprob(**alt) for alt in step) for step in top)
    return Completion(**fields)
