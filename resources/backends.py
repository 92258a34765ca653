"""The teacher backend interface: chat prompts in, completions out.

Every backend (local transformers, vLLM's offline engine, OpenAI-compatible HTTP
endpoints) takes a batch of requests (a chat conversation and which of its n samples
it is) and sampling parameters, and returns one `Completion` per request. A backend
reports each completion through `on_completion` as soon as it has it, so a cache can
persist answers while the rest are still being generated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Messages = list[dict[str, str]]
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    seed: int = 0
    n: int = 1  # completions per prompt
    top_logprobs: int = 0  # log-probabilities kept per generated token; 0 keeps none

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def seed_for(self, sample_index: int) -> int:
        """Each sample of a prompt gets its own seed, so its n samples differ and each is reproducible."""
        return self.seed + sample_index


@dataclass(frozen=True)
class Request:
    """One completion to generate: a chat prompt, and which of its n samples this is."""

    messages: Messages
    sample_index: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    token_id: int | None = None  # HTTP endpoints return token strings only


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int  # generated tokens, the end token included when one was produced
    finish_reason: str  # "stop" (end token), "length" (hit max_new_tokens) or "error"
    error: str | None = None  # why the request failed after its retries; None when it succeeded
    # Per generated token, the teacher's top-k alternatives (most likely first), when asked for.
    top_logprobs: tuple[tuple[TokenLogprob, ...], ...] | None = None

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
        self, prompts: Sequence[Messages], params: SamplingParams, progress: Progress | None = None
    ) -> list[Completion]:
        """One completion per prompt (its sample 0), in the order given."""
        return self.complete([Request(p) for p in prompts], params, progress)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connections."""
