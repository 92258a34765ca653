"""The trainer behind method offline_logits (offline_logits.py builds it): top-k KL loss, collator, trainer.

TRL has no trainer for precomputed teacher log-probabilities, so this is a small addition
on top of SFTTrainer: a collator that lines the stored top-k (token ids, log-probabilities),
read from the memory-mapped store, up with the completion tokens, and a loss that adds a KL
term on the top-k mass to the cross-entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from distill_assets.methods.topk_store import TopKStore

IGNORE = -100


def offline_logits_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    alpha: float,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(1 - alpha) * cross-entropy + alpha * T^2 * KL(teacher top-k || student), per completion token.

    logits (B, L, V); labels (B, L) with -100 off the completion; teacher_ids / teacher_logprobs
    (B, L, k) aligned with labels (position j holds the teacher's distribution over token j),
    id -1 where there is no teacher entry. The teacher's top-k probabilities are renormalised
    over the k kept tokens; the student's log-probabilities are over its whole vocabulary, so
    mass it puts outside the teacher's top-k is penalised too.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]  # position j predicts token j + 1
    teacher_ids, teacher_logprobs = teacher_ids[:, 1:], teacher_logprobs[:, 1:].float()
    mask = labels != IGNORE
    ce = F.cross_entropy(logits[mask], labels[mask]) if mask.any() else logits.sum() * 0.0
    present = teacher_ids >= 0
    kl_mask = mask & present.any(-1)
    student = F.log_softmax(logits / temperature, dim=-1).gather(-1, teacher_ids.clamp(min=0))
    teacher = F.softmax(teacher_logprobs.masked_fill(~present, -math.inf) / temperature, dim=-1)
    teacher = torch.nan_to_num(teacher)  # rows with no entries at all
    per_token = (torch.special.xlogy(teacher, teacher) - teacher * student).sum(-1)
    kl = per_token[kl_mask].mean() * temperature**2 if kl_mask.any() else ce * 0.0
    return (1 - alpha) * ce + alpha * kl, {"ce": ce.detach(), "kl": kl.detach()}


@dataclass
class TopKCollator(DataCollatorForLanguageModeling):
    """Pads like SFT, then places teacher step t at the t-th completion token of each sequence.

    Each example's `teacher_row` names its row in `store` (-1: no teacher steps, cross-entropy
    only); entries with ids past `vocab_size` (padded embedding rows) are left out.
    """

    store: TopKStore | None = None
    vocab_size: int | None = None

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        labels = batch["labels"]
        rows = [self._steps(e["teacher_row"]) for e in examples]
        k = max((ids.shape[1] for ids, _ in rows), default=0) or 1
        ids = np.full((*labels.shape, k), -1, dtype=np.int64)
        logprobs = np.full((*labels.shape, k), -np.inf, dtype=np.float32)
        for b, (row_ids, row_logprobs) in enumerate(rows):
            positions = (labels[b] != IGNORE).nonzero().flatten().numpy()
            # The completion is the teacher's own tokens (and its end token): step t is completion token t.
            # A truncated completion gets the template's end token, for which the teacher has no step.
            n = min(len(positions), len(row_ids))
            ids[b, positions[:n], : row_ids.shape[1]] = row_ids[:n]
            logprobs[b, positions[:n], : row_logprobs.shape[1]] = row_logprobs[:n]
        batch["teacher_token_ids"], batch["teacher_logprobs"] = torch.from_numpy(ids), torch.from_numpy(logprobs)
        return batch

    def _steps(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        if row < 0 or self.store is None:
            return np.full((0, 0), -1, dtype=np.int64), np.full((0, 0), -np.inf, dtype=np.float32)
        return self.store.steps(row, self.vocab_size)


class OfflineLogitsTrainer(SFTTrainer):
    """SFTTrainer whose loss adds the top-k KL term; everything else (data, loop, saving) is SFT's."""

    def __init__(self, *args, alpha: float, temperature: float, **kwargs):
        self.alpha, self.temperature = alpha, temperature
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_ids, teacher_logprobs = inputs.pop("teacher_token_ids"), inputs.pop("teacher_logprobs")
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        loss, parts = offline_logits_loss(
            outputs.logits, labels, teacher_ids, teacher_logprobs, self.alpha, self.temperature
        )
        mode = "train" if model.training else "eval"
        for name, value in parts.items():
            self._metrics[mode][name].append(value.item())
        return (loss, outputs) if return_outputs else loss
