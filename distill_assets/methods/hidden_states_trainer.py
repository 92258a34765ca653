"""The trainer behind method hidden_states (hidden_states.py builds it): feature loss, projections, collator, trainer.

TRL has no feature-distillation trainer, so this is a small addition on top of SFTTrainer:
a collator that passes each row's teacher along, projections the trainer owns (trained with
the student, never saved with it) and a loss that adds the hidden-state term to the
cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """One layer pair's term over the masked tokens: relative squared error (mse) or mean cosine distance.

    student (already projected to the teacher's width) and teacher (N, L, d); mask (N, L), true
    on the tokens compared. mse is sum ||s - t||^2 / sum ||t||^2: 1 for a student that outputs
    zeros, whatever the teacher's scale, so the term stays comparable to the cross-entropy.
    """
    if not mask.any():
        return student.sum() * 0.0
    s, t = student[mask].float(), teacher[mask].float()
    if kind == "mse":
        return (s - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12)
    if kind == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    raise ValueError(f"hidden_states: unknown loss {kind!r} (mse or cosine)")


class Projections(nn.Module):
    """Per teacher, one linear map per layer pair from the student's width to the teacher's (identity where equal).

    Xavier-initialised and without bias, as DistillKit's; the trainer owns them, so the
    student's checkpoint never holds them.
    """

    def __init__(self, student_width: int, teacher_widths: list[int], pairs: list[int]):
        super().__init__()
        self.maps = nn.ModuleList(
            nn.ModuleList(_projection(student_width, width) for _ in range(count))
            for width, count in zip(teacher_widths, pairs)
        )

    def forward(self, teacher: int, pair: int, states: torch.Tensor) -> torch.Tensor:
        projection = self.maps[teacher][pair]
        if isinstance(projection, nn.Identity):
            return states
        return projection(states.to(projection.weight.dtype))


def _projection(student_width: int, teacher_width: int) -> nn.Module:
    if student_width == teacher_width:
        return nn.Identity()
    linear = nn.Linear(student_width, teacher_width, bias=False)
    nn.init.xavier_uniform_(linear.weight)
    return linear


@dataclass
class TeacherIndexCollator(DataCollatorForLanguageModeling):
    """Pads like SFT and passes each example's `teacher_index` (its teacher's place in the trainer's list)."""

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        batch["teacher_index"] = torch.tensor([e["teacher_index"] for e in examples], dtype=torch.long)
        return batch


class HiddenStatesTrainer(SFTTrainer):
    """SFTTrainer whose loss is (1 - alpha) * CE + alpha * the hidden-state term; data, loop and saving are SFT's.

    `teachers` are eval-mode models without gradients; `layer_maps[i]` lists teacher i's
    (student layer, teacher layer) pairs, indices into transformers' `hidden_states`.
    """

    def __init__(
        self, *args, teachers: list, layer_maps: list[list[tuple[int, int]]], alpha: float, loss: str, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.alpha, self.loss_kind, self.layer_maps = alpha, loss, layer_maps
        self.teacher_models = [teacher.to(self.args.device) for teacher in teachers]
        widths = [teacher.config.get_text_config().hidden_size for teacher in teachers]
        width = self.model.config.get_text_config().hidden_size
        self.projections = Projections(width, widths, [len(pairs) for pairs in layer_maps]).to(self.args.device)
        self._projections_in_optimizer = False

    def create_optimizer(self, model=None):
        """The student's optimizer, with the projections as one more parameter group (before the scheduler is built)."""
        optimizer = super().create_optimizer(model)
        params = [p for p in self.projections.parameters() if p.requires_grad]
        if params and not self._projections_in_optimizer:
            optimizer.add_param_group({"params": params, "weight_decay": self.args.weight_decay})
            self._projections_in_optimizer = True
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_index = inputs.pop("teacher_index")
        outputs = model(**inputs, use_cache=False, output_hidden_states=True)  # labels in: the CE is outputs.loss
        feature = self.feature_term(outputs.hidden_states, inputs["input_ids"], inputs["attention_mask"], teacher_index)
        loss = (1 - self.alpha) * outputs.loss + self.alpha * feature
        mode = "train" if model.training else "eval"
        self._metrics[mode]["ce"].append(outputs.loss.item())
        self._metrics[mode]["feature"].append(feature.item())
        return (loss, outputs) if return_outputs else loss

    def feature_term(self, student_states, input_ids, attention_mask, teacher_index) -> torch.Tensor:
        """The hidden-state term: each row against its own teacher, layer pairs averaged, rows weighted by tokens."""
        total, tokens, kind = student_states[0].sum() * 0.0, 0, self.loss_kind
        for index in teacher_index.unique().tolist():
            rows = teacher_index == index
            mask = attention_mask[rows].bool()
            with torch.no_grad():
                teacher_states = self.teacher_models[index](
                    input_ids=input_ids[rows], attention_mask=attention_mask[rows], output_hidden_states=True
                ).hidden_states
            pairs = self.layer_maps[index]
            term = sum(
                feature_loss(self.projections(index, j, student_states[s][rows]), teacher_states[t], mask, kind)
                for j, (s, t) in enumerate(pairs)
            )
            count = int(mask.sum())
            total, tokens = total + term / len(pairs) * count, tokens + count
        return total / max(tokens, 1)
