"""A teacher loaded next to the student for training (on_policy, hidden_states), and its tokenizer.

transformers is imported where a teacher is loaded, so a method's settings import cheaply.
"""

from __future__ import annotations

from typing import Any


def load_teacher_tokenizer(spec, teacher) -> Any:
    """A teacher's tokenizer (`teacher`: its TeacherSpec), from its local checkpoint or hub id."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec.model_path(teacher.model), revision=teacher.revision)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"teachers.{teacher.name}.model: its tokenizer could not be loaded ({error}); the student's method reads "
            "the teacher's token ids and needs it"
        ) from error


def load_teacher_model(spec, teacher, dtype) -> Any:
    """The teacher's causal LM in `dtype`, in eval mode and without gradients: it is read, never trained."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec.model_path(teacher.model), revision=teacher.revision, dtype=dtype)
    return model.eval().requires_grad_(False)
