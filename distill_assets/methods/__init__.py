"""Student-training methods: one small settings block per method (spec.py), one trainer builder each.

`training.train_student` is the one shared path: it builds the student, asks the method's
builder for a TRL trainer, trains, merges LoRA adapters and saves the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from distill_assets.methods import offline_logits, on_policy, sft

BUILDERS: dict[str, Callable] = {
    "sft": sft.build_trainer,
    "on_policy": on_policy.build_trainer,
    "offline_logits": offline_logits.build_trainer,
}
