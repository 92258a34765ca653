"""Student training on a real BPE tokenizer and chat template: SmolLM2's, on tiny random models (conftest.py).

SmolLM2-135M-Instruct's tokenizer has pad == eos == `<|im_end|>`, a ChatML template with a
default system prompt, and 49,152 tokens; the padded variant has 64 embedding rows more.
"""

import math
import re

import numpy as np
import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_assets.methods import METHODS
from distill_assets.methods.offline_logits import to_dataset
from distill_assets.methods.on_policy import PADDED_LOGIT, match_teacher_head
from distill_assets.padding import ensure_pad_token
from distill_assets.spec import Spec
from distill_assets.template_check import check_training_set, render
from distill_assets.training import (
    CHECKPOINTING,
    TrainerContext,
    build_student_base,
    lora_config,
    train_student,
    training_args,
)
from resources.backends import SamplingParams
from resources.transformers_backend import TransformersBackend
from tests.conftest import SMOLLM2_VOCAB
from tests.topk_frames import TOPK_IDS, TOPK_LOGPROBS, TOPK_TOKENS

CPU = torch.device("cpu")
PROMPT, ANSWER = "Normalise the date: 3 March 2021", "2021-03-03"
PROBS = (0.7, 0.1, 0.05, 0.05)  # a teacher's top-4 probabilities at each step
ALL_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def make_spec(student_model, teacher_model, steps=2, batch=2, lr=1e-2, max_length=128, **student) -> Spec:
    """One task, one local teacher (top-4 log-probabilities), one student on `student_model` at a constant lr."""
    training = dict(max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr, logging_steps=1,
                    max_length=max_length, warmup_ratio=0.0, lr_scheduler_type="constant")  # fmt: skip
    teacher = {"name": "teacher", "model": str(teacher_model), "tasks": ["dates"], "generation": {"top_logprobs": 4}}
    return Spec.model_validate(
        {
            "tasks": [{"name": "dates", "source": "unused.jsonl"}],
            "teachers": [teacher],
            "students": [{"name": "student", "base": {"model": str(student_model)}, "training": training, **student}],
        }
    )


def top_k(tokenizer, completion: str, last: int) -> list[list[int]]:
    """A teacher's top-4 ids at each completion token and its end token, as the transformers backend stores them.

    The token itself comes first, then two others and `last`, which may be a padded row's id
    (past the tokenizer: no token).
    """
    steps = []
    for token in [*tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]:
        steps.append([token, *[t for t in (198, 216, 29) if t != token][:2], last])
    return steps


def training_frame(rows: list[tuple[str, str]], tokenizer=None, last_id: int = 260) -> pl.DataFrame:
    """A training set as the training_set asset writes it; with a tokenizer, the top-k columns for offline_logits."""
    frame = pl.DataFrame(
        {
            "task": ["dates"] * len(rows),
            "prompt_id": [f"p{i}" for i in range(len(rows))],
            "teacher": ["teacher"] * len(rows),
            "teacher_version": ["v1"] * len(rows),
            "prompt": [p for p, _ in rows],
            "completion": [c for _, c in rows],
            "messages": [[{"role": "user", "content": p}, {"role": "assistant", "content": c}] for p, c in rows],
        }
    )
    if tokenizer is None:
        return frame
    ids = [top_k(tokenizer, c, last_id) for _, c in rows]
    logprobs = [[[math.log(p) for p in PROBS] for _ in row] for row in ids]
    return frame.with_columns(
        topk_ids=pl.Series(ids, dtype=TOPK_IDS),
        topk_logprobs=pl.Series(logprobs, dtype=TOPK_LOGPROBS),
        topk_tokens=pl.lit(None, TOPK_TOKENS),
    )


ROWS = [(PROMPT, ANSWER), ("Normalise the date: the fourteenth of July, nineteen ninety-nine", "1999-07-14")]


def build(spec: Spec, frame: pl.DataFrame, tmp_path):
    """The trainer train_student would train, without training it."""
    student = spec.student("student")
    model, tokenizer = build_student_base(student, spec)
    context = TrainerContext(
        student=student,
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        training_set=frame,
        args=training_args(student, tmp_path / "work", CPU),
        callbacks=[],
        peft_config=lora_config(student),
        routing={"dates": "teacher"},
    )
    return METHODS[student.method].build_trainer(context), tokenizer


def test_end_of_turn_is_learned_though_pad_is_eos(tiny_smollm2, tmp_path):
    """TRL's labels are the answer, <|im_end|> and the newline after it; padding is -100, not the pad == eos id."""
    trainer, tokenizer = build(make_spec(tiny_smollm2, tiny_smollm2), training_frame(ROWS), tmp_path)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    rendered = render(tokenizer, training_frame(ROWS)["messages"][0].to_list())
    assert tokenizer.decode(rendered.labels) == f"{ANSWER}<|im_end|>\n"
    short, long = trainer.train_dataset[0], trainer.train_dataset[1]
    assert [t for t in short["labels"] if t != -100] == rendered.labels
    batch = trainer.data_collator([short, long])  # the short row is padded with the pad (== eos) id
    n = len(short["input_ids"])
    assert n < len(long["input_ids"])
    assert (batch["input_ids"][0, n:] == tokenizer.pad_token_id).all() and (batch["labels"][0, n:] == -100).all()
    for labels in batch["labels"]:  # each answer's <|im_end|> is learned, the padding after it is not
        assert labels.tolist().count(tokenizer.eos_token_id) == 1


def test_a_tokenizer_without_pad_token_pads_with_eos(tiny_smollm2):
    tokenizer = AutoTokenizer.from_pretrained(tiny_smollm2)
    tokenizer.pad_token = None
    assert ensure_pad_token(tokenizer).pad_token == "<|im_end|>"  # learned all the same: labels pad with -100


@pytest.mark.parametrize("method", ["sft", "offline_logits", "on_policy"])
def test_cpu_training_has_no_bf16_or_gradient_checkpointing(method, tiny_smollm2, tmp_path):
    """TRL's configs default to bf16 and gradient checkpointing, which only slow a CPU; nothing turns them on."""
    spec = make_spec(tiny_smollm2, tiny_smollm2, method=method, lora={"r": 4})
    trainer, _ = build(spec, training_frame(ROWS, AutoTokenizer.from_pretrained(tiny_smollm2)), tmp_path)
    args = trainer.args
    assert args.bf16 is False and getattr(args, CHECKPOINTING) is False and args.gradient_checkpointing is False
    assert not any(getattr(m, "gradient_checkpointing", False) for m in trainer.model.modules())
    assert next(trainer.model.parameters()).dtype == torch.float32


def test_sft_learns_the_answer_and_to_stop(tiny_smollm2, tmp_path):
    """Full fine-tuning on one repeated example: greedy generation in the chat template answers, then stops.

    The generation runs as evaluation does (the project's transformers backend, the
    student's template, stopping at its eos): stopping is what learning <|im_end|> shows.
    """
    question, answer = "What is the capital of France?", "The capital of France is Paris."
    spec = make_spec(tiny_smollm2, tiny_smollm2, steps=30, batch=1, lr=1e-2)
    out = tmp_path / "sft"
    train_student(spec.student("student"), spec, training_frame([(question, answer)]), out, CPU, log=lambda _: None)
    backend = TransformersBackend.load(str(out), CPU, torch.float32)
    [completion] = backend.generate([[{"role": "user", "content": question}]], SamplingParams(max_new_tokens=24))
    assert (completion.text, completion.finish_reason) == (answer, "stop")


def test_lora_targets_every_linear_layer_and_merges(tiny_smollm2, tmp_path):
    spec = make_spec(tiny_smollm2, tiny_smollm2, steps=3, lora={"r": 4, "alpha": 8})
    out = tmp_path / "lora"
    metrics = train_student(spec.student("student"), spec, training_frame(ROWS), out, CPU, log=lambda _: None)
    assert metrics["lora_target_modules"] == ALL_LINEAR  # the architecture's, found by PEFT; not the head
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_smollm2)
    assert not any("lora" in name for name, _ in trained.named_parameters())
    after, before = trained.state_dict(), base.state_dict()
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        assert not torch.equal(after[name], before[name]), name  # the adapters' update, merged in
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    spec = make_spec(tiny_smollm2, tiny_smollm2, lora={"r": 4, "target_modules": ["q_proj"]})
    assert lora_config(spec.student("student")).target_modules == {"q_proj"}  # the spec's list wins


@pytest.mark.parametrize("student_rows", [SMOLLM2_VOCAB, SMOLLM2_VOCAB + 64])
def test_offline_logits_ignore_padded_teacher_ids(student_rows, tiny_smollm2, tiny_smollm2_padded, tmp_path):
    """Top-k entries of padded rows (id past the tokenizer, no token) are left out, however the student is padded."""
    student = tiny_smollm2 if student_rows == SMOLLM2_VOCAB else tiny_smollm2_padded
    tokenizer = AutoTokenizer.from_pretrained(student)
    frame = training_frame(ROWS, tokenizer, last_id=SMOLLM2_VOCAB + 40)
    dataset, store = to_dataset(frame)
    ids, logprobs = store.steps(dataset[0]["teacher_row"], len(tokenizer))
    kept = ids >= 0  # of 4 entries, the padded one left out
    assert (kept.sum(axis=1) == 3).all() and ids.max() < SMOLLM2_VOCAB and (ids[:, 3] == -1).all()
    assert np.isinf(logprobs[~kept]).all() and np.allclose(logprobs[:, :3], np.log(PROBS[:3]), atol=1e-3)
    spec = make_spec(student, tiny_smollm2_padded, steps=3, method="offline_logits")
    metrics = train_student(spec.student("student"), spec, frame, tmp_path / "out", CPU, log=lambda _: None)
    losses = [h["loss"] for h in metrics["loss_history"]]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_teacher_head_matches_the_student_rows(tiny_smollm2, tiny_smollm2_padded):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_smollm2)
    ids = torch.tensor([[1, 4093, 198, 81]])
    before = teacher(input_ids=ids).logits
    match_teacher_head(teacher, SMOLLM2_VOCAB + 64, SMOLLM2_VOCAB)  # a padded student
    after = teacher(input_ids=ids).logits
    assert after.shape[-1] == SMOLLM2_VOCAB + 64 == teacher.config.vocab_size
    assert torch.allclose(after[..., :SMOLLM2_VOCAB], before) and (after[..., SMOLLM2_VOCAB:] == PADDED_LOGIT).all()
    padded = AutoModelForCausalLM.from_pretrained(tiny_smollm2_padded)
    before = padded(input_ids=ids).logits
    match_teacher_head(padded, SMOLLM2_VOCAB, SMOLLM2_VOCAB)  # an unpadded student: the teacher's padding dropped
    assert torch.allclose(padded(input_ids=ids).logits, before[..., :SMOLLM2_VOCAB])


def prefers_padding(checkpoint, out):
    """The checkpoint with its padded rows' embeddings scaled up: its tied head favours the padded ids."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    with torch.no_grad():
        model.get_input_embeddings().weight[SMOLLM2_VOCAB:] *= 100
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    return out


@pytest.mark.parametrize("padded", ["teacher", "student"])
def test_on_policy_across_padded_vocabularies(padded, tiny_smollm2, tiny_smollm2_padded, tmp_path):
    """A padded teacher's head is cut to the student's rows; a padded student never samples a padded id."""
    if padded == "teacher":
        student, teacher = tiny_smollm2, tiny_smollm2_padded
    else:  # a student that would sample padded ids, which index past the unpadded teacher's embedding
        student, teacher = prefers_padding(tiny_smollm2_padded, tmp_path / "student"), tiny_smollm2
    spec = make_spec(student, teacher, steps=2, method="on_policy", on_policy={"max_completion_length": 4})
    metrics = train_student(spec.student("student"), spec, training_frame(ROWS), tmp_path / "out", CPU, lambda _: None)
    assert len(metrics["loss_history"]) == 2 and all(math.isfinite(h["loss"]) for h in metrics["loss_history"])


def test_max_length_no_prompt_fits_fails_before_training(tiny_smollm2, tmp_path):
    spec = make_spec(tiny_smollm2, tiny_smollm2, max_length=16)  # the default system prompt alone takes 20+
    with pytest.raises(ValueError, match=r"students\.student\.training\.max_length: no row fits 16 tokens") as err:
        train_student(spec.student("student"), spec, training_frame(ROWS), tmp_path / "out", CPU)
    assert re.search(r"Raise max_length to \d+ to keep every row whole", str(err.value))
    assert not (tmp_path / "out.tmp").exists()  # failed before a trainer was built


def test_max_length_says_how_many_rows_are_dropped_or_cut(tiny_smollm2):
    tokenizer = AutoTokenizer.from_pretrained(tiny_smollm2)
    long_prompt = ("Normalise the date: " + "really " * 40 + "3 March 2021", ANSWER)
    long_answer = (PROMPT, "2021-03-03 " * 20)
    logged = []
    fit = check_training_set(tokenizer, training_frame([*ROWS, long_prompt, long_answer]), "s", 64, logged.append)
    assert (fit.rows, fit.dropped, fit.cut) == (4, 1, 1)
    assert logged == [
        f"max_length 64: of 4 rows, 1 are dropped (the prompt alone fills it) and 1 cut before their end-of-turn "
        f"token; {fit.longest_row} keeps every row whole"
    ]


def test_template_without_the_answer_or_the_end_of_turn_is_refused(tiny_smollm2):
    frame = training_frame(ROWS)
    tokenizer = AutoTokenizer.from_pretrained(tiny_smollm2)
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "message['content']", "(message['content'] if message['role'] != 'assistant' else '')"
    )
    with pytest.raises(ValueError, match=r"students\.s\.base \(task dates\): .* does not render the assistant's"):
        check_training_set(tokenizer, frame, "s", 128)
    tokenizer = AutoTokenizer.from_pretrained(tiny_smollm2)
    tokenizer.eos_token = "<|endoftext|>"  # a base model's eos under a chat template that ends turns otherwise
    with pytest.raises(ValueError, match=r"does not close the assistant's turn with its eos token '<\|endoftext\|>'"):
        check_training_set(tokenizer, frame, "s", 128)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"students\.s\.base: the student's tokenizer has no chat template"):
        check_training_set(tokenizer, frame, "s", 128)
