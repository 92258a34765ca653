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

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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

    def seed_for(self, sample_index: int) -> int:
        """Each sample of a prompt gets its own seed, so its n samples differ and each is reproducible."""
        return self.seed + sample_index


@dataclass(frozen=True)
class Request:
    """One completion to generate: a prompt, and which of its n samples this is."""

    prompt: Prompt
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
