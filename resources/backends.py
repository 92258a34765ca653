"""The teacher backend interface: prompts in, completions out.

Every backend (local transformers, vLLM's offline engine, OpenAI-compatible HTTP
endpoints) takes a batch of requests (a prompt and which of its n samples it is) and
sampling parameters, and returns one `Completion` per request. A prompt is a chat
conversation, rendered with the model's chat template (an endpoint's chat completions),
or a plain string sent as it is (a base model without a chat template; an endpoint's
completions). A backend
reports each completion through `on_completion` as soon as it has it, so a cache can
persist answers while the rest are still being generated.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Messages = list[dict[str, str]]
Prompt = Messages | str  # a chat conversation, or raw text for a model without a chat template
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    seed: int = 0
    n: int = 1  # completions per prompt
    top_logprobs: int = 0  # log-probabilities kept per generated token; 0 keeps none
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings; it is not returned

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def seed_for(self, sample_index: int, prompt: Prompt | list[int]) -> int:
        """A request's own seed: the same (seed, prompt, sample) always gets the same one, so a sample is
        reproducible alone or in any batch; the n samples of a prompt, and two prompts, get different
        ones, so their random draws are independent (a seed shared by every prompt would correlate them).
        31 bits, which every backend's seed field takes."""
        payload = json.dumps([self.seed, sample_index, prompt], ensure_ascii=False)
        return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:4], "big") >> 1


@dataclass(frozen=True)
class Request:
    """One completion to generate: a prompt, and which of its n samples this is."""

    prompt: Prompt
    sample_index: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    """One alternative at one generated token, for code that wants entries rather than arrays."""

    token: str | None  # None where the backend gives ids only (decode them with the teacher's tokenizer)
    logprob: float
    token_id: int | None = None  # None where the backend gives strings only (an HTTP endpoint)


@dataclass(frozen=True, eq=False)
class TopK:
    """Per generated token, the teacher's k most likely tokens and their log-probabilities, most likely first.

    `ids` (int32) and `logprobs` (float16: what the cache and the frames keep) are [tokens, k]
    arrays; a step with fewer than k alternatives is padded at its end with id -1 and log-probability NaN.
    `tokens` holds the alternatives' strings only for a backend that returns no ids (an
    OpenAI-compatible endpoint), one tuple per step without the padding; then every id is -1.
    """

    ids: np.ndarray
    logprobs: np.ndarray
    tokens: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        ids = np.ascontiguousarray(self.ids, dtype=np.int32)
        logprobs = np.ascontiguousarray(self.logprobs, dtype=np.float16)
        if ids.ndim != 2 or ids.shape != logprobs.shape:
            raise ValueError(f"TopK: ids {ids.shape} and logprobs {logprobs.shape} must be [tokens, k] alike")
        if self.tokens is not None and [len(s) for s in self.tokens] != self.present.sum(axis=1).tolist():
            raise ValueError("TopK: tokens must list one string per present alternative of every step")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "logprobs", logprobs)

    @classmethod
    def from_steps(
        cls,
        logprobs: Sequence[Sequence[float]],
        ids: Sequence[Sequence[int]] | None = None,
        tokens: Sequence[Sequence[str]] | None = None,
    ) -> TopK:
        """From per-step lists (a step may list fewer alternatives: it is padded); ids or tokens, not both."""
        return cls.from_flat(
            [lp for step in logprobs for lp in step],
            [len(step) for step in logprobs],
            ids=None if ids is None else [i for step in ids for i in step],
            tokens=None if tokens is None else [t for step in tokens for t in step],
        )

    @classmethod
    def from_flat(
        cls,
        logprobs: Sequence[float],
        counts: Sequence[int],
        ids: Sequence[int] | None = None,
        tokens: Sequence[str] | None = None,
    ) -> TopK:
        """From every step's alternatives in one flat list, step after step, and each step's count of them.

        What a parser collects in one pass, with no per-step lists: `counts[t]` alternatives of
        step t follow those of step t-1; a step with fewer than the most is padded. Ids or tokens, not both.
        """
        if (ids is None) == (tokens is None):
            raise ValueError("TopK.from_flat: give the alternatives' ids or their tokens, not both nor neither")
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        values = np.asarray(logprobs, dtype=np.float64).reshape(-1)  # rounded to float16 once, by TopK
        if len(values) != counts.sum() or (ids is not None and len(ids) != len(values)):
            raise ValueError(f"TopK.from_flat: {len(values)} log-probabilities for {int(counts.sum())} alternatives")
        if np.isnan(values).any():  # NaN marks padding: an alternative listed without its log-probability is not
            raise ValueError("TopK.from_flat: an alternative's log-probability is null or NaN")
        shape = (len(counts), int(counts.max(initial=0)))
        known = np.full(shape, -1, dtype=np.int32)
        if (counts == shape[1]).all():
            padded = values.reshape(shape)
            if ids is not None:
                known = np.asarray(ids, dtype=np.int32).reshape(shape)
        else:
            padded = np.full(shape, np.nan)
            present = np.arange(shape[1]) < counts[:, None]  # row-major: each step's first counts[t] slots
            padded[present] = values
            if ids is not None:
                known[present] = ids
        if tokens is None:
            return cls(known, padded)
        if shape[1] and (counts == shape[1]).all():
            return cls(known, padded, tuple(zip(*[iter(tokens)] * shape[1])))  # every step's k, a tuple each
        ends = np.cumsum(counts).tolist()
        return cls(known, padded, tuple(tuple(tokens[end - n : end]) for end, n in zip(ends, counts.tolist())))

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    @property
    def present(self) -> np.ndarray:
        """[tokens, k] booleans: False where a step was padded."""
        return ~np.isnan(self.logprobs)

    @property
    def has_ids(self) -> bool:
        return self.tokens is None

    def head(self, steps: int) -> TopK:
        """The first `steps` tokens' alternatives."""
        return TopK(self.ids[:steps], self.logprobs[:steps], None if self.tokens is None else self.tokens[:steps])

    def entries(self) -> tuple[tuple[TokenLogprob, ...], ...]:
        """Per token, its alternatives as `TokenLogprob`s (slow: for checks and small outputs, not for data)."""
        counts = self.present.sum(axis=1).tolist()
        ids, logprobs = self.ids.tolist(), self.logprobs.astype(np.float32).tolist()
        return tuple(
            tuple(
                TokenLogprob(
                    self.tokens[t][j] if self.tokens is not None else None,
                    logprobs[t][j],
                    ids[t][j] if self.has_ids else None,
                )
                for j in range(n)
            )
            for t, n in enumerate(counts)
        )

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopK):
            return NotImplemented
        return (
            self.tokens == other.tokens
            and np.array_equal(self.ids, other.ids)
            and np.array_equal(self.logprobs, other.logprobs, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int  # generated tokens, the end token included when one was produced
    finish_reason: str  # "stop" (end token), "length" (hit max_new_tokens) or "error"
    error: str | None = None  # why the request failed after its retries; None when it succeeded
    # Per generated token, the teacher's top-k alternatives (most likely first), when asked for.
    top_logprobs: TopK | None = None

    @classmethod
    def failed(cls, reason: str) -> Completion:
        return cls(text="", num_tokens=0, finish_reason="error", error=reason)

    @property
    def ok(self) -> bool:
        return self.error is None


OnCompletion = Callable[[int, Completion], None]  # (request index, completion), as each is ready


class TeacherBackend(ABC):
    """Generates completions for chat prompts. Implementations batch as they see fit."""

    name: str

    @abstractmethod
    def complete(
        self,
        requests: Sequence[Request],
        params: SamplingParams,
        progress: Progress | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[Completion]:
        """One completion per request, in the order given; a failed request yields a failed Completion."""

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, progress: Progress | None = None
    ) -> list[Completion]:
        """One completion per prompt (its sample 0), in the order given."""
        return self.complete([Request(p) for p in prompts], params, progress)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connections."""


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: a chat through the tokenizer's chat template, raw text as it is."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    if tokenizer.chat_template is None:
        raise ValueError(
            f"{tokenizer.name_or_path}: the tokenizer has no chat template, so chat prompts cannot be rendered; "
            "for a base model set the teacher's `mode: completion` and a few-shot `prompt_template`"
        )
    return tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
