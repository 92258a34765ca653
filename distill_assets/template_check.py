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

It also checks the student's tokenizer against its embeddings and against the tokenizers of
the teachers it learns from (`check_compatibility`), since each mismatch trains silently
wrong: a token id past the embedding rows indexes out of range, a teacher's token id means
another token in another vocabulary, and a teacher that ends its answers with another token
than the student's end of turn teaches a student that never stops. A method declares what it
needs of the teachers' tokenizers (`teacher_vocabulary`): the same vocabulary, or any (it
aligns the two tokenizations itself), with the rest checked all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import polars as pl

Messages = list[dict[str, str]]
# What a method needs of its teachers' tokenizers: nothing (it learns text), the student's very vocabulary
# (it compares distributions id by id), or any vocabulary (it aligns the two tokenizations by characters).
TeacherVocabulary = Literal["same", "any"] | None


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


def tokenizer_name(tokenizer) -> str:
    """How an error names a tokenizer: the path or hub id it was loaded from."""
    return getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__


def check_embeddings(tokenizer, rows: int, where: str) -> None:
    """Every id the tokenizer gives must index an embedding row; rows past the tokenizer (padding) are allowed.

    Padded rows are no tokens: the methods leave them out (offline top-k entries past the
    tokenizer are dropped, on-policy sampling suppresses them), so they are never learned.
    """
    if len(tokenizer) > rows:
        raise ValueError(
            f"{where}.base: the tokenizer {tokenizer_name(tokenizer)} has {len(tokenizer)} tokens but the model "
            f"{rows} embedding rows: ids {rows}..{len(tokenizer) - 1} would index out of range; resize the "
            "model's embeddings to the tokenizer, or use the tokenizer the model was trained with"
        )


def check_same_vocabulary(student_tokenizer, teacher_tokenizer, teacher: str) -> None:
    """The teacher's token ids must mean the student's tokens: the same token -> id map (padding aside)."""
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocab != teacher_vocab:
        differ = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()))[:5]
        raise ValueError(
            f"teacher {teacher!r} ({tokenizer_name(teacher_tokenizer)}) has another vocabulary than the student "
            f"({tokenizer_name(student_tokenizer)}): {len(teacher_vocab)} vs {len(student_vocab)} tokens, e.g. "
            f"{differ}; use a student on the teacher's tokenizer, or a method for different tokenizers "
            "(cross_tokenizer_logits)"
        )


def check_end_of_turn(student_tokenizer, teacher_tokenizer, teacher: str, vocabulary: TeacherVocabulary) -> None:
    """The teacher must end its answers with an end token; with one vocabulary, with the student's end of turn.

    A teacher's completion ends where it generated its eos token, which is the last step its
    stored (or live) distribution covers. Across tokenizers that step is mapped onto the
    student's eos; within one vocabulary (required, or found) it is taken id for id, so the
    two must be one token.
    """
    names = f"teacher {teacher!r} ({tokenizer_name(teacher_tokenizer)})"
    if teacher_tokenizer.eos_token_id is None:
        raise ValueError(f"{names} has no eos token: where its answers end cannot be told; set its eos_token")
    one_vocabulary = vocabulary == "same" or teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab()
    if one_vocabulary and teacher_tokenizer.eos_token != student_tokenizer.eos_token:
        raise ValueError(
            f"{names} ends its answers with {teacher_tokenizer.eos_token!r}, but the student "
            f"({tokenizer_name(student_tokenizer)}) closes its turns with {student_tokenizer.eos_token!r}: it would "
            "learn to end with a token that does not stop it; give both tokenizers the same eos_token"
        )


def check_compatibility(
    tokenizer,
    embedding_rows: int,
    teacher_tokenizers: dict,
    vocabulary: TeacherVocabulary,
    student: str,
) -> None:
    """The student's tokenizer against its embeddings and the tokenizers of the teachers it learns from.

    `teacher_tokenizers` maps teacher name -> tokenizer; `vocabulary` is what the student's
    method needs of them. Raises ValueError naming the student and both tokenizers.
    """
    where = f"students.{student}"
    check_embeddings(tokenizer, embedding_rows, where)
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"{where}.base: the tokenizer {tokenizer_name(tokenizer)} has no pad token (nor an eos token to pad "
            "with); set its pad_token"
        )
    if vocabulary is None:
        return
    for teacher, teacher_tokenizer in sorted(teacher_tokenizers.items()):
        try:
            if vocabulary == "same":
                check_same_vocabulary(tokenizer, teacher_tokenizer, teacher)
            check_end_of_turn(tokenizer, teacher_tokenizer, teacher, vocabulary)
        except ValueError as error:
            raise ValueError(f"{where}.method: {error}") from None
