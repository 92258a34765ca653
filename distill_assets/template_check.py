"""The student's chat template against the training set, checked before a trainer is built.

TRL's SFTTrainer renders each conversational prompt/completion row twice with the student's
chat template, the prompt with the generation prompt and the whole conversation, and learns
the tokens from where the two diverge: the completion and whatever the template closes the
assistant turn with. It then cuts every row at `max_length` and drops the rows left with
nothing to learn. A template that drops the assistant's content, or closes the turn without
the token generation stops on, trains a student that cannot answer or never stops while the
loss looks healthy; a `max_length` that no row fits fails deep inside the trainer
(`num_samples=0`). This module renders the rows the same way and says so first, naming the
student and the field to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Rendered:
    """One row as SFTTrainer tokenizes it: the whole conversation, and where the learned tokens start."""

    ids: list[int]
    completion_start: int

    @property
    def labels(self) -> list[int]:
        return self.ids[self.completion_start :]


def render(tokenizer, messages: Messages) -> Rendered:
    """Tokenize a conversation as TRL does for prompt/completion data (the last message is the completion)."""
    return render_all(tokenizer, [messages])[0]


def render_all(tokenizer, conversations: list[Messages]) -> list[Rendered]:
    """`render` for many conversations, with two batched template calls."""
    from trl.data_utils import common_prefix_length

    prompts = tokenizer.apply_chat_template([c[:-1] for c in conversations], add_generation_prompt=True)
    full = tokenizer.apply_chat_template(conversations)
    return [
        Rendered(ids, common_prefix_length(prompt, ids)) for prompt, ids in zip(prompts["input_ids"], full["input_ids"])
    ]


def check_example(tokenizer, messages: Messages, where: str) -> Rendered:
    """The completion's tokens round-trip and the end-of-turn token (the tokenizer's eos) is among the learned ones."""
    rendered = render(tokenizer, messages)
    learned = tokenizer.decode(rendered.labels, skip_special_tokens=False)
    completion = messages[-1]["content"].strip()
    if completion not in learned:
        raise ValueError(
            f"{where}: the student's chat template does not render the assistant's answer as learned tokens: "
            f"completion {completion!r}, learned {learned!r}; use a chat template that renders the assistant's content"
        )
    if tokenizer.eos_token_id not in rendered.labels:
        raise ValueError(
            f"{where}: the student's chat template does not close the assistant's turn with its eos token "
            f"{tokenizer.eos_token!r}, where generation stops (learned tokens {learned!r}): the student would never "
            "learn to stop; set the tokenizer's eos_token to the template's end-of-turn token"
        )
    return rendered


@dataclass(frozen=True)
class Fit:
    """How the training set's rows fit max_length: rows TRL drops (prompt alone too long), rows cut before their end."""

    rows: int
    dropped: int
    cut: int
    shortest_prompt: int  # tokens, in the student's template
    longest_prompt: int
    longest_row: int


def fit(tokenizer, messages: pl.Series, max_length: int, chunk: int = 1000) -> Fit:
    """Render every row, `chunk` rows at a time (only counts are kept), and see how it fits max_length.

    A row is dropped when its prompt alone takes max_length tokens or more (TRL keeps no row
    without a learned token), cut when its end-of-turn token falls past max_length.
    """
    eos, rows, dropped, whole, prompts, longest_row = tokenizer.eos_token_id, 0, 0, 0, [], 0
    for start in range(0, len(messages), chunk):
        for r in render_all(tokenizer, messages.slice(start, chunk).to_list()):
            rows += 1
            dropped += r.completion_start >= max_length
            whole += eos in r.ids[r.completion_start : max_length]
            prompts.append(r.completion_start)
            longest_row = max(longest_row, len(r.ids))
    return Fit(rows, dropped, rows - dropped - whole, min(prompts), max(prompts), longest_row)


def check_training_set(
    tokenizer,
    training_set: pl.DataFrame,
    student: str,
    max_length: int | None,
    log: Callable[[str], None] = print,
) -> Fit | None:
    """Check one row per task through the student's template, then (with max_length) how every row fits it.

    Raises ValueError naming the student's field when the template has no room for an answer
    or no end of turn, or when no row fits max_length whole (each row would be dropped or
    lose its end-of-turn token); logs how many rows TRL drops or cuts otherwise.
    """
    where = f"students.{student}"
    if tokenizer.chat_template is None:
        raise ValueError(
            f"{where}.base: the student's tokenizer has no chat template; training renders each prompt with it "
            "(use an instruct checkpoint, or give the tokenizer a chat_template)"
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{where}.base: the student's tokenizer has no eos token; generation could not stop")
    for row in training_set.unique("task", keep="first", maintain_order=True).iter_rows(named=True):
        check_example(tokenizer, row["messages"], f"{where}.base (task {row['task']})")
    if max_length is None:
        return None
    result = fit(tokenizer, training_set["messages"], max_length)
    if result.dropped + result.cut == result.rows:
        raise ValueError(
            f"{where}.training.max_length: no row fits {max_length} tokens whole in the student's chat template "
            f"({result.dropped} of {result.rows} prompts alone take {max_length} or more, the longest "
            f"{result.longest_prompt}); the student would learn no complete answer. Raise max_length to "
            f"{result.longest_row} to keep every row whole"
        )
    if result.dropped or result.cut:
        log(
            f"max_length {max_length}: of {result.rows} rows, {result.dropped} are dropped (the prompt alone fills "
            f"it) and {result.cut} cut before their end-of-turn token; {result.longest_row} keeps every row whole"
        )
    return result
