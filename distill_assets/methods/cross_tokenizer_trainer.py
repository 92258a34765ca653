"""The trainer behind method cross_tokenizer_logits (cross_tokenizer_logits.py builds it): loss, collator, trainer.

The collator turns each row's alignment groups (student token runs against teacher step runs
over the same characters) into per-group tensors; the loss adds to the student's
cross-entropy an exact KL term on groups of one token each side, and ULD's sorted-probability
L1 on the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from distill_assets.methods.topk_store import TopKStore

IGNORE = -100
GROUP_KEYS = (
    "group_batch",
    "group_position",
    "group_later",
    "group_ids",
    "group_logprobs",
    "group_teacher_later",
    "group_exact",
)


def cross_tokenizer_loss(
    logits: torch.Tensor, labels: torch.Tensor, groups: dict[str, torch.Tensor], alpha: float, temperature: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(1 - alpha) * cross-entropy + alpha * the mean over groups of the exact KL (x T^2) or the ULD distance.

    logits (B, L, V), labels (B, L) with -100 off the completion. Per group g: `group_batch`,
    `group_position` (the sequence position of its first student token), `group_later` (G, m)
    the positions of its other student tokens (-1: none), `group_ids` (G, k) the teacher's
    top-k at its first step as student ids (-1: no student token), `group_logprobs` (G, k)
    their log-probabilities (-inf: no entry), `group_teacher_later` (G,) the log-probability
    of the teacher's other tokens in the group, and `group_exact` (G,) one token on each side.

    Exact groups with a mapped entry: KL(teacher || student) over the mapped entries, the
    teacher renormalised over them. The others: ULD's L1 between the sorted probabilities of
    the two group distributions (first token's distribution x the rest's probability); the
    teacher is known on its top-k only, so its tail is one bucket, compared with the student's
    mass past its own top-k.
    """
    logprobs = F.log_softmax(logits[:, :-1].float(), dim=-1)  # position j predicts token j + 1
    targets = labels[:, 1:]
    mask = targets != IGNORE
    token_logprobs = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, L - 1)
    ce = -token_logprobs[mask].mean() if mask.any() else logits.sum() * 0.0
    zero = ce * 0.0
    if groups["group_batch"].numel() == 0:
        return (1 - alpha) * ce, {"ce": ce.detach(), "kl": zero.detach(), "uld": zero.detach(), "exact": zero}
    b, first = groups["group_batch"], groups["group_position"] - 1
    ids, teacher_lp = groups["group_ids"], groups["group_logprobs"].float()
    mapped = ids >= 0
    exact = groups["group_exact"] & mapped.any(-1)

    student_t = F.log_softmax(logits[b, first].float() / temperature, dim=-1).gather(-1, ids.clamp(min=0))
    teacher_t = torch.nan_to_num(F.softmax(teacher_lp.masked_fill(~mapped, -math.inf) / temperature, dim=-1))
    kl = (torch.special.xlogy(teacher_t, teacher_t) - teacher_t * student_t).sum(-1) * temperature**2

    later = groups["group_later"]
    student_later = torch.where(later >= 0, token_logprobs[b.unsqueeze(-1), (later - 1).clamp(min=0)], 0.0).sum(-1)
    k = teacher_lp.shape[-1]
    student_scale, teacher_scale = student_later.exp(), groups["group_teacher_later"].float().exp()
    student_top = logprobs[b, first].exp().topk(k, dim=-1).values * student_scale.unsqueeze(-1)
    teacher_top = teacher_lp.exp().sort(dim=-1, descending=True).values * teacher_scale.unsqueeze(-1)
    student_tail = student_scale - student_top.sum(-1)
    teacher_tail = (teacher_scale - teacher_top.sum(-1)).clamp(min=0.0)
    uld = (student_top - teacher_top).abs().sum(-1) + (student_tail - teacher_tail).abs()

    distill = torch.where(exact, kl, uld).mean()
    parts = {
        "ce": ce.detach(),
        "kl": kl[exact].mean().detach() if exact.any() else zero.detach(),
        "uld": uld[~exact].mean().detach() if (~exact).any() else zero.detach(),
        "exact": exact.float().mean().detach(),  # share of groups matched token for token
    }
    return (1 - alpha) * ce + alpha * distill, parts


@dataclass
class CrossTokenizerCollator(DataCollatorForLanguageModeling):
    """Pads like SFT, then lays each row's alignment groups on its completion tokens.

    A row whose rendered completion tokens are not the ones it was aligned on (its chat
    template tokenizes the answer otherwise) keeps its cross-entropy only; groups past
    max_length are left out, and so is the end group where the template does not close the
    answer with the student's eos right after it.
    """

    store: TopKStore | None = None
    token_maps: list[np.ndarray] = field(default_factory=list)  # per teacher index: teacher id -> student id
    eos_token_id: int | None = None

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        rows = [self._groups(b, e, batch["labels"][b]) for b, e in enumerate(examples)]
        found = [g for row in rows for g in row]
        k = max((len(g[3]) for g in found), default=1)
        m = max((len(g[2]) for g in found), default=0) or 1
        out = {
            "group_batch": torch.tensor([g[0] for g in found], dtype=torch.long),
            "group_position": torch.tensor([g[1] for g in found], dtype=torch.long),
            "group_later": torch.full((len(found), m), -1, dtype=torch.long),
            "group_ids": torch.full((len(found), k), -1, dtype=torch.long),
            "group_logprobs": torch.full((len(found), k), -math.inf),
            "group_teacher_later": torch.tensor([g[5] for g in found], dtype=torch.float32),
            "group_exact": torch.tensor([g[6] for g in found], dtype=torch.bool),
        }
        for i, (_, _, later, ids, logprobs, _, _) in enumerate(found):
            out["group_later"][i, : len(later)] = torch.tensor(later, dtype=torch.long)
            out["group_ids"][i, : len(ids)] = torch.from_numpy(ids)
            out["group_logprobs"][i, : len(ids)] = torch.from_numpy(logprobs)
        return {**batch, **out}

    def _groups(self, b: int, example: dict, labels: torch.Tensor) -> list[tuple]:
        positions = (labels != IGNORE).nonzero().flatten().tolist()
        student_ids = example["student_ids"]
        n = min(len(positions), len(student_ids))
        if not example["groups"] or labels[positions[:n]].tolist() != student_ids[:n]:
            return []
        steps_ids, steps_logprobs = self.store.steps(example["teacher_row"])
        mapping = self.token_maps[example["teacher_index"]]
        found = []
        for s_start, s_len, t_start, t_len in example["groups"]:
            if s_start + s_len > len(positions) or t_start + t_len > len(steps_ids):
                break  # cut at max_length
            if s_start == len(student_ids) and labels[positions[s_start]] != self.eos_token_id:
                break  # the end group, but the template puts another token after the answer
            ids = steps_ids[t_start]
            known = (ids >= 0) & (ids < len(mapping))
            mapped = np.where(known, mapping[np.where(known, ids, 0)], -1)
            later = [
                _logprob_of(steps_ids[j], steps_logprobs[j], example["teacher_ids"][j])
                for j in range(t_start + 1, t_start + t_len)
            ]
            exact = s_len == 1 and t_len == 1
            span = positions[s_start + 1 : s_start + s_len]
            found.append((b, positions[s_start], span, mapped, steps_logprobs[t_start], sum(later), exact))
        return found


def _logprob_of(ids: np.ndarray, logprobs: np.ndarray, token: int) -> float:
    """The teacher's log-probability of the token it generated: from its top-k, else at most its k-th's."""
    hit = np.nonzero(ids == token)[0]
    return float(logprobs[hit[0]]) if len(hit) else float(logprobs[ids >= 0].min(initial=0.0))


class CrossTokenizerTrainer(SFTTrainer):
    """SFTTrainer whose loss adds the aligned exact-KL / ULD term; everything else (data, loop, saving) is SFT's."""

    def __init__(self, *args, alpha: float, temperature: float, **kwargs):
        self.alpha, self.temperature = alpha, temperature
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        groups = {key: inputs.pop(key) for key in GROUP_KEYS}
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        loss, parts = cross_tokenizer_loss(outputs.logits, labels, groups, self.alpha, self.temperature)
        mode = "train" if model.training else "eval"
        for name, value in parts.items():
            self._metrics[mode][name].append(value.item())
        return (loss, outputs) if return_outputs else loss
