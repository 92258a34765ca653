"""Offline logit distillation: learn the teacher's top-k next-token distribution stored with its completions.

TRL has no trainer for precomputed teacher log-probabilities, so this is a small addition
on top of SFTTrainer: a collator that lines the stored top-k (token_id, logprob) up with
the completion tokens, and a loss that adds a KL term on the top-k mass to the
cross-entropy. The teacher is never loaded during training.
"""

from __future__ import annotations

import math

import datasets
import polars as pl
import torch
import torch.nn.functional as F
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from distill_assets.methods.sft import sft_config, to_prompt_completion

IGNORE = -100


class VocabularyMismatch(ValueError):
    """The teacher's stored token ids do not mean the same tokens in the student's vocabulary."""


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


def check_vocabulary(frame: pl.DataFrame, tokenizer, sample: int = 200) -> None:
    """Fail clearly when the stored teacher tokens are not the student's: the ids would point at other tokens."""
    if "top_logprobs" not in frame.columns or frame["top_logprobs"].null_count() == frame.height:
        raise ValueError(
            "training set: no top_logprobs column or all null; offline_logits needs the teachers' "
            "generation.top_logprobs > 0 (regenerate the synthetic completions)"
        )
    missing = frame.filter(pl.col("top_logprobs").is_null())
    if missing.height:
        teachers = sorted(set(missing["teacher"]))
        raise ValueError(f"training set: {missing.height} rows from {teachers} have no top_logprobs")
    vocab = tokenizer.get_vocab()
    for row in frame.head(sample).iter_rows(named=True):
        for step in row["top_logprobs"]:
            for entry in step:
                if entry["token_id"] is None or vocab.get(entry["token"]) != entry["token_id"]:
                    raise VocabularyMismatch(
                        f"teacher {row['teacher']}: token {entry['token']!r} has id {entry['token_id']} in the "
                        f"teacher's vocabulary but {vocab.get(entry['token'])} in the student's; offline_logits "
                        "needs a student with the teacher's tokenizer (or use method: sft)"
                    )


def to_dataset(frame: pl.DataFrame) -> datasets.Dataset:
    """Prompt/completion rows plus each completion step's teacher top-k ids and log-probabilities."""
    dataset = to_prompt_completion(frame)
    steps = frame["top_logprobs"].to_list()
    ids = [[[e["token_id"] for e in step] for step in row] for row in steps]
    logprobs = [[[e["logprob"] for e in step] for step in row] for row in steps]
    return dataset.add_column("teacher_token_ids", ids).add_column("teacher_logprobs", logprobs)


class TopKCollator(DataCollatorForLanguageModeling):
    """Pads like SFT, then places teacher step t at the t-th completion token of each sequence."""

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        labels = batch["labels"]
        k = max((len(s) for e in examples for s in e["teacher_token_ids"]), default=1)
        ids = torch.full((*labels.shape, k), -1, dtype=torch.long)
        logprobs = torch.full((*labels.shape, k), -math.inf)
        for b, example in enumerate(examples):
            positions = (labels[b] != IGNORE).nonzero().flatten().tolist()
            # The completion is the teacher's own tokens (and its end token): step t is completion token t.
            # A truncated completion gets the template's end token, for which the teacher has no step.
            for t, pos in enumerate(positions[: len(example["teacher_token_ids"])]):
                step_ids, step_lp = example["teacher_token_ids"][t], example["teacher_logprobs"][t]
                ids[b, pos, : len(step_ids)] = torch.tensor(step_ids)
                logprobs[b, pos, : len(step_lp)] = torch.tensor(step_lp)
        batch["teacher_token_ids"], batch["teacher_logprobs"] = ids, logprobs
        return batch


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


def align(dataset: datasets.Dataset, tokenizer, log=print) -> datasets.Dataset:
    """Keep the teacher steps of rows whose completion re-tokenizes to as many tokens as the teacher generated.

    The teacher generated one step per token, plus one for its end token when it stopped.
    A row whose completion the student's tokenizer splits differently (a non-canonical
    tokenization) keeps its cross-entropy but loses its KL term; when most rows disagree the
    vocabularies differ, and that is an error.
    """
    texts = [row[0]["content"] for row in dataset["completion"]]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    ok = [len(steps) in (n, n + 1) for steps, n in zip(dataset["teacher_token_ids"], lengths)]
    if ok and sum(ok) / len(ok) < 0.5:
        raise VocabularyMismatch(
            f"only {sum(ok)}/{len(ok)} completions have as many student tokens as the teacher generated: the "
            "teacher's tokens do not line up with the student's tokenization (different vocabularies)"
        )
    if not all(ok):
        log(f"offline_logits: {len(ok) - sum(ok)} of {len(ok)} rows tokenize differently; they train on CE only")
        keep = dict(enumerate(ok))
        dataset = dataset.map(
            lambda row, i: {} if keep[i] else {"teacher_token_ids": [], "teacher_logprobs": []}, with_indices=True
        )
    return dataset


def build_trainer(ctx) -> OfflineLogitsTrainer:
    settings = ctx.student.method_settings()
    check_vocabulary(ctx.training_set, ctx.tokenizer)
    dataset = align(to_dataset(ctx.training_set), ctx.tokenizer, ctx.log)
    args = sft_config({**ctx.args, "remove_unused_columns": False}, ctx.tokenizer)
    return OfflineLogitsTrainer(
        model=ctx.model,
        args=args,
        train_dataset=dataset,
        processing_class=ctx.tokenizer,
        data_collator=TopKCollator(pad_token_id=ctx.tokenizer.pad_token_id),
        callbacks=ctx.callbacks,
        peft_config=ctx.peft_config,
        alpha=settings.alpha,
        temperature=settings.temperature,
    )
