"""The trainer behind method hidden_states (hidden_states.py builds it): feature loss, projections, collator, trainer.

TRL has no feature-distillation trainer, so this is a small addition on top of SFTTrainer:
a collator that passes each row's teacher along, projections the trainer owns (trained with
the student, never saved with it) and a loss that adds the hidden-state term to the
cross-entropy. A row's teacher states do not change while the student trains, so they are
computed once and kept (up to a memory budget) for the epochs after the first.
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
    """Pads like SFT and passes each example's `teacher_index` (its teacher's place in the trainer's list) and
    `row_index` (its row in the training set, the key of its kept teacher states)."""

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        batch["teacher_index"] = torch.tensor([e["teacher_index"] for e in examples], dtype=torch.long)
        batch["row_index"] = torch.tensor([e["row_index"] for e in examples], dtype=torch.long)
        return batch


class TeacherStates:
    """Each training row's teacher hidden states at the mapped layers, over its real tokens, kept up to a budget.

    The teacher is frozen, so a row's states are the same every epoch: the first time a row
    comes they are computed (with the other new rows of its batch), the next times read back.
    """

    def __init__(self, budget_bytes: int):
        self.rows: dict[int, list[torch.Tensor]] = {}
        self.budget, self.used = budget_bytes, 0
        self.computed = self.reused = 0

    def batch(self, teacher, layers: list[int], input_ids, attention_mask, row_ids: list[int]) -> list[torch.Tensor]:
        """Per layer in `layers`, the rows' states (n, L, width) laid on their tokens (zeros on padding)."""
        mask = attention_mask.bool()
        fresh = self._compute(teacher, layers, input_ids, attention_mask, row_ids)
        self.reused += len(row_ids) - len(fresh)
        states = [fresh.get(i) or self.rows[row] for i, row in enumerate(row_ids)]
        out = []
        for j in range(len(layers)):
            width, dtype = states[0][j].shape[-1], states[0][j].dtype
            placed = torch.zeros((*input_ids.shape, width), dtype=dtype, device=input_ids.device)
            for i, row_states in enumerate(states):
                placed[i][mask[i]] = row_states[j].to(input_ids.device)
            out.append(placed)
        return out

    def _compute(self, teacher, layers, input_ids, attention_mask, row_ids: list[int]) -> dict[int, list]:
        """The states of the rows not kept, by batch position, run through the teacher together; kept while the
        budget allows."""
        positions = [i for i, row in enumerate(row_ids) if row not in self.rows]
        if not positions:
            return {}
        index = torch.tensor(positions, device=input_ids.device)
        with torch.no_grad():
            hidden = teacher(
                input_ids=input_ids[index], attention_mask=attention_mask[index], output_hidden_states=True
            ).hidden_states
        fresh = {}
        for k, i in enumerate(positions):
            real = attention_mask[i].bool()
            fresh[i] = [hidden[t][k][real].clone() for t in layers]  # a copy: the batch's tensors are not kept
            size = sum(state.numel() * state.element_size() for state in fresh[i])
            if self.used + size <= self.budget:
                self.rows[row_ids[i]] = fresh[i]
                self.used += size
        self.computed += len(positions)
        return fresh


class HiddenStatesTrainer(SFTTrainer):
    """SFTTrainer whose loss is (1 - alpha) * CE + alpha * the hidden-state term; data, loop and saving are SFT's.

    `teachers` are eval-mode models without gradients; `layer_maps[i]` lists teacher i's
    (student layer, teacher layer) pairs, indices into transformers' `hidden_states`.
    """

    def __init__(
        self,
        *args,
        teachers: list,
        layer_maps: list[list[tuple[int, int]]],
        alpha: float,
        loss: str,
        cache_bytes: int = 0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.teacher_states = TeacherStates(cache_bytes)
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
        teacher_index, row_index = inputs.pop("teacher_index"), inputs.pop("row_index")
        outputs = model(**inputs, use_cache=False, output_hidden_states=True)  # labels in: the CE is outputs.loss
        feature = self.feature_term(
            outputs.hidden_states, inputs["input_ids"], inputs["attention_mask"], teacher_index, row_index
        )
        loss = (1 - self.alpha) * outputs.loss + self.alpha * feature
        mode = "train" if model.training else "eval"
        self._metrics[mode]["ce"].append(outputs.loss.item())
        self._metrics[mode]["feature"].append(feature.item())
        return (loss, outputs) if return_outputs else loss

    def feature_term(self, student_states, input_ids, attention_mask, teacher_index, row_index) -> torch.Tensor:
        """The hidden-state term: each row against its own teacher, layer pairs averaged, rows weighted by tokens."""
        total, tokens, kind = student_states[0].sum() * 0.0, 0, self.loss_kind
        for index in teacher_index.unique().tolist():
            rows = teacher_index == index
            mask = attention_mask[rows].bool()
            pairs = self.layer_maps[index]
            teacher_states = self.teacher_states.batch(
                self.teacher_models[index],
                [t for _, t in pairs],
                input_ids[rows],
                attention_mask[rows],
                row_index[rows].tolist(),
            )
            term = sum(
                feature_loss(self.projections(index, j, student_states[s][rows]), teacher_states[j], mask, kind)
                for j, (s, _) in enumerate(pairs)
            )
            count = int(mask.sum())
            total, tokens = total + term / len(pairs) * count, tokens + count
        return total / max(tokens, 1)
