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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distill_assets.spec import Spec, TeacherSpec
    from resources.accelerator import Accelerator

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


def build_backend(teacher: TeacherSpec, spec: Spec, accelerator: Accelerator) -> TeacherBackend:
    """The backend a teacher's spec names, loaded and ready (imports each engine only when used)."""
    if teacher.backend == "transformers":
        from resources.transformers_backend import TransformersBackend

        return TransformersBackend.load(
            spec.resolve(teacher.model),
            accelerator.torch_device(),
            accelerator.torch_dtype(),
            batch_size=teacher.generation.batch_size,
            revision=teacher.revision,
        )
    if teacher.backend == "vllm":
        from resources.vllm_backend import VLLMBackend

        dtype = "auto" if accelerator.dtype == "auto" else accelerator.dtype
        return VLLMBackend.load(spec.resolve(teacher.model), dtype=dtype, revision=teacher.revision)
    if teacher.backend == "openai":
        from resources.http_backend import HttpBackend
        from resources.retry import RetryPolicy

        return HttpBackend(
            base_urls=teacher.base_urls,
            model=teacher.model,
            api_key=HttpBackend.api_key_from_env(teacher.api_key_env),
            concurrency=teacher.concurrency,
            timeout_s=teacher.timeout_s,
            retry=RetryPolicy(max_retries=teacher.max_retries),
            name=teacher.name,
        )
    raise ValueError(f"teachers.{teacher.name}.backend: unknown backend {teacher.backend!r}")
