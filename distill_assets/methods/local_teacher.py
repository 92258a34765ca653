"""A teacher loaded next to the student for training (on_policy, hidden_states): tokenizer, model, vocabulary check.

transformers is imported where a teacher is loaded, so a method's settings import cheaply.
"""

from __future__ import annotations

from typing import Any


def load_teacher_tokenizer(spec, teacher) -> Any:
    """A local teacher's tokenizer (`teacher`: its TeacherSpec), loaded before its weights: a mismatch fails fast."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.model_path(teacher.model), revision=teacher.revision)


def load_teacher_model(spec, teacher, dtype) -> Any:
    """The teacher's causal LM in `dtype`, in eval mode and without gradients: it is read, never trained."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec.model_path(teacher.model), revision=teacher.revision, dtype=dtype)
    return model.eval().requires_grad_(False)


def check_same_vocabulary(student_tokenizer, teacher_tokenizer, teacher: str, method: str) -> None:
    """Fail when the teacher's token ids do not mean the student's tokens: the method compares them id by id."""
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocab != teacher_vocab:
        differ = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()))[:5]
        raise ValueError(
            f"{method}: teacher {teacher!r}'s tokenizer ({teacher_tokenizer.name_or_path}) has another vocabulary "
            f"than the student's ({student_tokenizer.name_or_path}): {len(teacher_vocab)} vs {len(student_vocab)} "
            f"tokens, e.g. {differ}; use a student built on the teacher's tokenizer, or method: sft"
        )
