"""Student training: the one shared path for every method (distill_assets/methods) on the training set."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback

from distill_assets.evaluation import PeakRss
from distill_assets.frames import lazy, light
from distill_assets.methods import METHODS
from distill_assets.methods.local_teacher import load_teacher_tokenizer
from distill_assets.padding import ensure_pad_token
from distill_assets.spec import Spec, StudentSpec
from distill_assets.template_check import check_compatibility, check_training_set
from distill_assets.versions import checkpoint_lineage, read_lineage

Log = Callable[[str], None]

MODEL_CARD = """---
library_name: transformers
tags: [distill, knowledge-distillation]
---
# {student}

Distilled by `distill` with {method} ({trainer}) on {examples} teacher completions.{merged}

- Base: {base}
- Teachers, per task: {routing}
- Training: {steps} steps, batch {batch}, learning rate {lr}; final loss {final_loss:.4f}
- Parameters: {parameters:,}

Load it with `AutoModelForCausalLM.from_pretrained(path)`; prompts use the tokenizer's chat template.
"""


def build_student_base(
    student: StudentSpec, spec: Spec, dtype: torch.dtype = torch.float32, base_dir: Path | None = None
):
    """The student before distillation: a pre-trained model, a Llama built from scratch, or for a staged
    student (`base.student`) the trained checkpoint of the student it builds on, found at `base_dir`.

    A from-scratch student is initialised from the training seed, so the same spec gives
    the same base, and evaluation can score exactly the model that training started from.
    """
    base = student.base
    if base.student is not None:
        if base_dir is None or not Path(base_dir).is_dir():
            raise FileNotFoundError(
                f"students.{student.name}.base.student: no checkpoint of student {base.student!r} "
                f"{f'at {base_dir}' if base_dir else 'given'}; train {base.student!r} first"
            )
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    elif base.model is not None:
        path = spec.model_path(base.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        arch = base.architecture
        tokenizer = AutoTokenizer.from_pretrained(spec.resolve(base.tokenizer))
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size or arch.hidden_size * 8 // 3,
            num_hidden_layers=arch.num_hidden_layers,
            num_attention_heads=arch.num_attention_heads,
            num_key_value_heads=arch.num_attention_heads,
            max_position_embeddings=tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else 2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(student.training.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model, ensure_pad_token(tokenizer)


IMBALANCE_RATIO = 100.0  # one loss term this many times another: the weight between them no longer balances them
IMBALANCE_LOGS = 3  # the first logged steps (each a mean over logging_steps) the imbalance check reads


def loss_term_imbalance(
    history: list[dict], terms: list[str], logs: int = IMBALANCE_LOGS, ratio: float = IMBALANCE_RATIO
) -> str | None:
    """A warning when one loss term's mean over the first `logs` logged steps is more than `ratio` times another's.

    Cross-entropy and a distillation term can differ by 100-1000x (easydistill #34); the
    method's weight (alpha) then no longer sets their balance. None with fewer than two terms.
    """
    rows = [h for h in history[:logs] if all(h.get(term) is not None for term in terms)]
    if len(terms) < 2 or not rows:
        return None
    means = {term: sum(abs(h[term]) for h in rows) / len(rows) for term in terms}
    big, small = max(means, key=means.get), min(means, key=means.get)
    if means[big] <= ratio * means[small]:
        return None
    factor = f"{means[big] / means[small]:,.0f}x" if means[small] > 0 else "an unbounded factor"
    values = ", ".join(f"{term} {means[term]:.4g}" for term in terms)
    return (
        f"loss terms differ by {factor} over the first {len(rows)} logged steps ({values}): {big} sets the "
        f"gradient and the weight between the terms (alpha) no longer balances them; rescale or reweigh them"
    )


class _LogCallback(TrainerCallback):
    """Logs progress, keeps each logged step's loss and its terms (`terms`: term -> log key), checks their balance."""

    def __init__(self, log: Log, max_steps: int, terms: dict[str, str]):
        self.log, self.max_steps, self.terms, self.history, self.started = log, max_steps, terms, [], time.time()
        self.warning: str | None = None
        self._checked = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            entry = {"step": state.global_step, "loss": float(logs["loss"])}
            entry |= {term: float(logs[key]) for term, key in self.terms.items() if logs.get(key) is not None}
            self.history.append(entry)
            elapsed = time.time() - self.started
            eta = elapsed / max(state.global_step, 1) * (self.max_steps - state.global_step)
            parts = ", ".join(f"{term} {entry[term]:.4f}" for term in self.terms if term in entry)
            self.log(
                f"step {state.global_step}/{self.max_steps} loss {logs['loss']:.4f}"
                + (f" ({parts})" if len(self.terms) > 1 else "")
                + f" ({elapsed:.0f}s, ETA {eta:.0f}s)"
            )
            if len(self.history) >= IMBALANCE_LOGS:
                self._check()

    def on_train_end(self, args, state, control, **kwargs):
        self._check()  # a run with fewer logged steps than IMBALANCE_LOGS

    def _check(self) -> None:
        if not self._checked:
            self._checked = True
            self.warning = loss_term_imbalance(self.history, list(self.terms), IMBALANCE_LOGS, IMBALANCE_RATIO)
            if self.warning:
                self.log(f"WARNING: {self.warning}")


@dataclass
class TrainerContext:
    """What every method's trainer builder gets (distill_assets/methods)."""

    student: StudentSpec
    spec: Spec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    training_set: pl.DataFrame  # its text and lineage columns, in memory
    args: dict  # the TrainingArguments fields every method shares
    callbacks: list
    peft_config: LoraConfig | None
    routing: dict[str, str]  # task -> teacher whose completions the training set holds
    log: Log = print
    # the whole training set, top-k log-probability columns included, lazily: read a chunk at a time
    training_frame: pl.LazyFrame | None = None
    # teacher name -> its tokenizer, for a method that reads the teachers' token ids (teacher_vocabulary)
    teacher_tokenizers: dict[str, PreTrainedTokenizerBase] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.training_frame is None:
            self.training_frame = self.training_set.lazy()


def teacher_tokenizers(spec: Spec, names: list[str]) -> dict[str, PreTrainedTokenizerBase]:
    """The tokenizers of the named teachers, from their local checkpoints or hub ids, by teacher name."""
    return {name: load_teacher_tokenizer(spec, spec.teacher(name)) for name in names}


def lora_config(student: StudentSpec) -> LoraConfig | None:
    """PEFT's LoRA settings; without target_modules, every linear layer of the architecture but the output head."""
    if student.lora is None:
        return None
    lora = student.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) if lora.target_modules else "all-linear",
        task_type="CAUSAL_LM",
    )


def lora_targets(model) -> list[str]:
    """The names (last component) of the modules that carry LoRA adapters, e.g. ['down_proj', 'q_proj', ...]."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)})


def _release_freed_memory() -> None:
    """Hand freed heap back to the OS, so the RSS peak measured next is this training's, not an earlier run's.

    Students train one after another in one process; without this, memory freed by the
    previous one is reused silently and the next student's peak looks smaller than it is.
    """
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the figure is then a lower bound
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# transformers 5.23 renamed gradient_checkpointing to activation_checkpointing (the old name is an alias
# until 6); vLLM 0.33 pins transformers < 5.21, so the [vllm] extra installs the old one.
CHECKPOINTING = next(
    name
    for name in ("activation_checkpointing", "gradient_checkpointing")
    if name in TrainingArguments.__dataclass_fields__
)


def training_args(student: StudentSpec, work_dir: Path, device: torch.device) -> dict:
    """The TrainingArguments fields every method shares, from the student's `training` block."""
    cfg = student.training
    return dict(
        output_dir=str(work_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        lr_scheduler_kwargs=dict(cfg.lr_scheduler_kwargs),
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        use_cpu=device.type == "cpu",
        # TRL's configs default to bf16 and activation (gradient) checkpointing: on a CPU both only cost time
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        **{CHECKPOINTING: False},  # small students fit; recomputation only costs time
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


@dataclass
class _Run:
    """What one trainer.train() gave: mean loss, the logged losses and their terms, wall time, peak memory in bytes."""

    train_loss: float
    history: list[dict]
    seconds: float
    peak_bytes: int
    loss_warning: str | None = None  # loss_term_imbalance's, over the first logged steps

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else self.train_loss


def _measured_train(trainer, callback: _LogCallback, device: torch.device) -> _Run:
    """Train, timing it and measuring peak memory: CUDA's allocator peak, or the process's RSS on a CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _release_freed_memory()
    started = time.time()
    with PeakRss() as rss:
        result = trainer.train()
    seconds = time.time() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.increase
    return _Run(float(result.training_loss), callback.history, seconds, peak, callback.warning)


def train_student(
    student: StudentSpec,
    spec: Spec,
    training_set: pl.DataFrame | pl.LazyFrame,
    out_dir: Path,
    device: torch.device,
    log: Log = print,
    routing: dict[str, str] | None = None,
    base_dir: Path | None = None,
) -> dict:
    """Distil the student with its method (sft, on_policy, offline_logits); write a HF checkpoint to out_dir.

    A staged student (`base.student`) starts from the checkpoint of the student it builds on, at `base_dir`.
    Before a trainer is built, the student's chat template is checked against the training set
    and its tokenizer against its embeddings and its teachers' tokenizers (template_check).
    With LoRA the adapters are merged into the weights before saving, so the checkpoint
    loads with plain `from_pretrained` (and in vLLM) like any other. The training set's
    top-k log-probabilities are never read whole: only a method that learns from them reads them, in chunks.
    """
    training_frame, training_set = lazy(training_set), light(training_set)
    # task -> teacher, as the training set was routed (the routing table's decision with routing: auto)
    routing = routing or dict(training_set.select("task", "teacher").unique().iter_rows())
    model, tokenizer = build_student_base(student, spec, base_dir=base_dir)
    method = METHODS[student.method]
    max_length = student.training.max_length if method.learns_completions else None
    check_training_set(tokenizer, training_set, student.name, max_length, log)
    teachers = method.teachers(spec, student, training_set) if method.teacher_vocabulary else []
    loaded_teachers = teacher_tokenizers(spec, teachers)
    rows = model.get_input_embeddings().weight.shape[0]
    check_compatibility(tokenizer, rows, loaded_teachers, method.teacher_vocabulary, student.name)
    work_dir = out_dir.with_name(out_dir.name + ".tmp")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 touches the files
        shutil.rmtree(work_dir, ignore_errors=True)
    callback = _LogCallback(log, student.training.max_steps, method.loss_terms)
    context = TrainerContext(
        student=student,
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        training_set=training_set,
        args=training_args(student, work_dir, device),
        callbacks=[callback],
        peft_config=lora_config(student),
        routing=routing,
        log=log,
        training_frame=training_frame,
        teacher_tokenizers=loaded_teachers,
    )
    trainer = method.build_trainer(context)
    adapted = lora_targets(trainer.model) if student.lora is not None else []
    trainer.remove_callback(PrinterCallback)  # our callback logs progress to the run log instead
    run = _measured_train(trainer, callback, device)
    if not trainer.is_world_process_zero():  # data-parallel ranks > 0: rank 0 writes the checkpoint
        return {"final_loss": run.final_loss}
    trained = _save_weights(trainer, tokenizer, student, work_dir)
    metrics = _metrics(student, spec, training_set, run, trained, adapted)
    if base_dir is not None:  # which checkpoint of the student it builds on this one started from
        base_version = (read_lineage(base_dir) or {}).get("checkpoint_version")
        metrics["base_student"] = {"student": student.base.student, "checkpoint_version": base_version}
    (work_dir / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_card(work_dir, student, spec, metrics, routing)
    checkpoint_lineage(student.name, work_dir, training_frame)  # inside, so it is swapped in and published with it
    # Swap in the finished checkpoint only now: a crash mid-training leaves the last good one.
    shutil.rmtree(out_dir, ignore_errors=True)
    work_dir.rename(out_dir)
    return metrics


def _save_weights(trainer, tokenizer, student: StudentSpec, work_dir: Path) -> PreTrainedModel:
    """Write the trained model (LoRA adapters merged in) and its tokenizer, left-padded for generation."""
    trained = trainer.model
    if student.lora is not None:
        trained = trained.merge_and_unload()
    trained.save_pretrained(str(work_dir))
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(work_dir))
    return trained


def _metrics(
    student: StudentSpec, spec: Spec, training_set: pl.DataFrame, run: _Run, trained, lora_modules: list[str]
) -> dict:
    """training_metrics.json: whom the student learned from, its losses, time, memory and size."""
    return {
        "method": student.method,
        "lora": student.lora is not None,
        "lora_target_modules": lora_modules,
        "train_loss": run.train_loss,
        "final_loss": run.final_loss,
        "first_loss": run.history[0]["loss"] if run.history else float("nan"),
        # each term of the loss (e.g. ce, kd, feature), unweighted, at the first and the last logged step
        "first_loss_terms": _terms(run.history[:1], student.method),
        "final_loss_terms": _terms(run.history[-1:], student.method),
        "loss_warning": run.loss_warning,
        "train_seconds": round(run.seconds, 1),
        "peak_memory_mb": round(run.peak_bytes / 2**20, 1),
        "steps": student.training.max_steps,
        "examples": training_set.height,
        "teachers": METHODS[student.method].teachers(spec, student, training_set),
        "parameters": sum(p.numel() for p in trained.parameters()),
        "loss_history": run.history,
    }


def _terms(entries: list[dict], method: str) -> dict[str, float]:
    """The method's loss terms in a logged step (the first of `entries`; {} when there is none)."""
    return {term: entries[0][term] for term in METHODS[method].loss_terms if entries and term in entries[0]}


def write_model_card(out_dir: Path, student: StudentSpec, spec: Spec, metrics: dict, routing: dict[str, str]) -> Path:
    """The checkpoint's README.md: what it was distilled from, how, and how to load it."""
    first = spec.stages(student.name)[0].base  # a staged student's chain starts where its first stage does
    base = first.model or f"from scratch: {first.architecture.model_dump(exclude_none=True)}"
    if student.base.student is not None:
        stages = " -> ".join(s.name for s in spec.stages(student.name))
        base = f"student `{student.base.student}`'s checkpoint (stages: {stages}; the first built on {base})"
    path = out_dir / "README.md"
    path.write_text(
        MODEL_CARD.format(
            student=student.name,
            method=student.method_label(),
            trainer=METHODS[student.method].label,
            examples=metrics["examples"],
            merged=" The LoRA adapters are merged into the weights." if student.lora else "",
            base=base,
            routing=", ".join(f"{task}: {teacher}" for task, teacher in sorted(routing.items())),
            steps=metrics["steps"],
            batch=student.training.per_device_train_batch_size,
            lr=student.training.learning_rate,
            final_loss=metrics["final_loss"],
            parameters=metrics["parameters"],
        )
    )
    return path
