"""The teacher backend interface: chat prompts in, completions out.

Every backend (local transformers today; vLLM and OpenAI-compatible HTTP endpoints
plug in behind the same interface) takes a batch of chat conversations and sampling
parameters and returns one `Completion` per (prompt, sample).
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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int  # generated tokens, the end token included when one was produced
    finish_reason: str  # "stop" (end token) or "length" (hit max_new_tokens)


class TeacherBackend(ABC):
    """Generates completions for chat prompts. Implementations batch as they see fit."""

    name: str

    @abstractmethod
    def generate(
        self, prompts: Sequence[Messages], params: SamplingParams, progress: Progress | None = None
    ) -> list[Completion]:
        """One completion per prompt, in the order given."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connections."""
