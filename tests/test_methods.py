"""Each training method on the tiny teacher: a few steps, loss goes down, the checkpoint loads and generates."""

import math

import polars as pl
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from distill_assets.generation import generate_completions
from distill_assets.methods import METHODS
from distill_assets.methods.offline_logits import VocabularyMismatch, align, check_vocabulary, to_dataset
from distill_assets.methods.offline_logits_trainer import TopKCollator, offline_logits_loss
from distill_assets.partitions import teacher_task_key
from distill_assets.routing import Routing
from distill_assets.spec import Spec, SpecError, load_spec
from distill_assets.template_check import check_same_vocabulary
from distill_assets.training import build_student_base, train_student
from distill_assets.training_set import merge_routed
from resources.transformers_backend import TransformersBackend
from tests.conftest import shrunken_spec

CPU = torch.device("cpu")


def test_registry_holds_each_method_with_settings_label_check_and_builder():
    assert set(METHODS) == {"sft", "on_policy", "offline_logits", "cross_tokenizer_logits", "hidden_states"}
    for name, method in METHODS.items():
        settings = method.Settings()  # every field has a default
        assert method.Settings.__doc__, name
        for field, info in method.Settings.model_fields.items():
            assert info.description, f"{name}.{field} has no description"
        assert isinstance(method.label, str) and "TRL" in method.label
        assert method.loss_terms and all(isinstance(key, str) for key in method.loss_terms.values()), name
        assert callable(method.check) and callable(method.teachers) and callable(method.build_trainer)
        assert settings.model_config["extra"] == "forbid"
    assert set(METHODS["offline_logits"].Settings.model_fields) == {"alpha", "temperature"}
    assert set(METHODS["on_policy"].Settings.model_fields) == {
        "teacher",
        "beta",
        "temperature",
        "max_completion_length",
    }


def test_offline_logits_loss_matches_hand_computation():
    # One sequence of 3 positions over a 3-token vocabulary; positions 1 and 2 are completion tokens.
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 0.0, -1.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    # The teacher's top-2 at completion token 1 (predicted from position 0): ids 1, 0 with logprobs ln .6, ln .2;
    # at completion token 2 (from position 1): only id 0 stored.
    ids = torch.tensor([[[-1, -1], [1, 0], [0, -1]]])
    lps = torch.tensor([[[-math.inf, -math.inf], [math.log(0.6), math.log(0.2)], [math.log(0.9), -math.inf]]])
    loss, parts = offline_logits_loss(logits, labels, ids, lps, alpha=0.25, temperature=1.0)

    def log_softmax(row):
        z = math.log(sum(math.exp(v) for v in row))
        return [v - z for v in row]

    s0, s1 = log_softmax([1.0, 2.0, 0.0]), log_softmax([0.5, 0.0, -1.0])
    ce = -(s0[1] + s1[0]) / 2
    p = [0.6 / 0.8, 0.2 / 0.8]  # renormalised over the stored top-k
    kl0 = p[0] * (math.log(p[0]) - s0[1]) + p[1] * (math.log(p[1]) - s0[0])
    kl1 = 1.0 * (0.0 - s1[0])
    kl = (kl0 + kl1) / 2
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(0.75 * ce + 0.25 * kl, rel=1e-5)


def test_temperature_scales_the_kl_term():
    logits = torch.tensor([[[0.0, 0.0], [2.0, -1.0]]])
    labels = torch.tensor([[-100, 0]])
    ids, lps = torch.tensor([[[-1, -1], [0, 1]]]), torch.log(torch.tensor([[[1.0, 1.0], [0.7, 0.3]]]))
    _, parts = offline_logits_loss(logits, labels, ids, lps, alpha=1.0, temperature=2.0)
    s = torch.log_softmax(torch.tensor([0.0, 0.0]) / 2, -1)
    p = torch.softmax(torch.log(torch.tensor([0.7, 0.3])) / 2, -1)
    assert parts["kl"].item() == pytest.approx(4 * float((p * (p.log() - s)).sum()), rel=1e-5)


def small_methods_spec(root, tiny_teacher, tokenizer, students) -> Spec:
    """The shrunken demo (8 training prompts a task) with teachers giving top-4 log-probabilities, and
    `students(base, training)` as its students: a one-layer Llama over `tokenizer`, 6 steps of training."""
    data = shrunken_spec(root, tiny_teacher, train=8, eval_=2)
    for teacher in data["teachers"]:
        teacher["generation"] = {"max_new_tokens": 6, "batch_size": 16, "temperature": 0.0, "top_logprobs": 4}
    training = {"max_steps": 6, "per_device_train_batch_size": 8, "learning_rate": 0.01, "logging_steps": 1,
                "max_length": 64, "warmup_ratio": 0.0, "lr_scheduler_type": "constant"}  # fmt: skip
    base = {"architecture": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
            "tokenizer": str(tokenizer)}  # fmt: skip
    data["students"] = students(base, training)
    path = root / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


@pytest.fixture(scope="module")
def method_spec(tmp_path_factory, tiny_teacher):
    def students(arch, training):
        return [
            {"name": "s_sft", "base": arch, "method": "sft", "training": training},
            {"name": "s_logits", "base": arch, "method": "offline_logits", "training": training},
            {"name": "s_on_policy", "base": arch, "method": "on_policy", "training": training,
             "on_policy": {"teacher": "teacher_a", "max_completion_length": 6}},
            {"name": "s_lora", "base": arch, "method": "offline_logits", "training": training,
             "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        ]  # fmt: skip

    return small_methods_spec(tmp_path_factory.mktemp("methods"), tiny_teacher, tiny_teacher, students)


def routed_training_frame(spec, teacher_dir) -> pl.DataFrame:
    """The spec's routed training set, every task generated by the tiny teacher at `teacher_dir`."""
    from distill_assets.inputs import curate

    backend = TransformersBackend.load(str(teacher_dir), CPU, torch.float32, batch_size=16)
    frames = {}
    for task, teacher in Routing.from_spec(spec).teachers.items():
        t = spec.task(task)
        prompts, _, _, _ = curate(t, spec.resolve_path(t.source), spec.resolve_path(t.eval_source))
        frames[teacher_task_key(teacher, task)] = generate_completions(backend, prompts, spec.teacher(teacher), t)
    backend.close()
    return merge_routed(frames, spec, Routing.from_spec(spec)).collect()


@pytest.fixture(scope="module")
def training_frame(method_spec, tiny_teacher):
    return routed_training_frame(method_spec, tiny_teacher)


def test_training_set_carries_top_logprobs(training_frame):
    assert training_frame["topk_ids"].null_count() == training_frame["topk_logprobs"].null_count() == 0
    assert training_frame["topk_tokens"].null_count() == training_frame.height  # ids, not strings, from local teachers
    row = training_frame.row(0, named=True)
    assert len(row["topk_ids"][0]) == len(row["topk_logprobs"][0]) == 4
    assert training_frame.schema["topk_ids"] == pl.List(pl.List(pl.Int32))


def batch_of(tokenizer, frame: pl.DataFrame, rows: list[int]) -> tuple[dict, list[int]]:
    """The collator's batch for `rows` of the frame (tokenized as SFT does), and where each completion starts."""
    dataset, store = to_dataset(frame)
    examples, starts = [], []
    for i in rows:
        messages = frame["messages"][i].to_list()
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)
        full = list(tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"])
        starts.append(len(prompt["input_ids"]))
        examples.append({**dataset[i], "input_ids": full, "labels": [-100] * starts[-1] + full[starts[-1] :]})
    collator = TopKCollator(pad_token_id=tokenizer.pad_token_id, store=store, vocab_size=len(tokenizer))
    return collator(examples), starts


def test_collator_puts_teacher_steps_on_the_completion_tokens(method_spec, training_frame):
    _, tokenizer = build_student_base(method_spec.student("s_logits"), method_spec)
    row = training_frame.row(0, named=True)
    batch, [first] = batch_of(tokenizer, training_frame, [0])
    assert batch["teacher_token_ids"][0, first].tolist() == row["topk_ids"][0]
    stored = torch.tensor(row["topk_logprobs"][0], dtype=torch.float16).float()
    assert torch.equal(batch["teacher_logprobs"][0, first], stored)
    assert (batch["teacher_token_ids"][0, :first] == -1).all()
    # The greedy teacher's completion token is its top-1 at every step.
    steps = len(row["topk_ids"])
    full = batch["input_ids"][0].tolist()
    assert batch["teacher_token_ids"][0, first : first + steps, 0].tolist() == full[first : first + steps]


def test_collator_places_each_rows_steps_in_a_padded_batch(method_spec, training_frame):
    _, tokenizer = build_student_base(method_spec.student("s_logits"), method_spec)
    rows = [5, 0, training_frame.height - 1]
    batch, starts = batch_of(tokenizer, training_frame, rows)
    for b, (i, first) in enumerate(zip(rows, starts)):
        ids = training_frame["topk_ids"][i].to_list()
        placed = batch["teacher_token_ids"][b, first : first + len(ids)].tolist()
        assert placed == ids, i
        after = batch["teacher_token_ids"][b, first + len(ids) :]
        assert (after == -1).all() and torch.isinf(batch["teacher_logprobs"][b, first + len(ids) :]).all()


def test_rows_that_tokenize_differently_train_on_ce_only(method_spec, training_frame):
    _, tokenizer = build_student_base(method_spec.student("s_logits"), method_spec)
    row1 = pl.int_range(pl.len()) == 1
    frame = training_frame.with_columns(  # row 1 keeps only its first stored step: it no longer lines up
        pl.when(row1).then(pl.col(c).list.head(1)).otherwise(c).alias(c) for c in ("topk_ids", "topk_logprobs")
    )
    dataset, store = to_dataset(frame)
    logged = []
    aligned = align(dataset, tokenizer, store, logged.append)
    assert aligned["teacher_row"][:3] == [0, -1, 2] and "1 of" in logged[0]
    collator = TopKCollator(pad_token_id=tokenizer.pad_token_id, store=store)
    full = tokenizer.apply_chat_template(frame["messages"][1].to_list(), return_dict=True)["input_ids"]
    batch = collator([{**aligned[1], "input_ids": full, "labels": full}])
    assert (batch["teacher_token_ids"] == -1).all()
    dataset, store = to_dataset(frame.with_columns(pl.col("topk_ids", "topk_logprobs").list.head(1)))
    with pytest.raises(VocabularyMismatch, match="line up"):
        align(dataset, tokenizer, store)


def test_other_vocabulary_is_a_clear_error(training_frame, method_spec):
    _, tokenizer = build_student_base(method_spec.student("s_logits"), method_spec)
    check_vocabulary(training_frame, tokenizer, lambda _: tokenizer)  # the teacher's own tokenizer: the same ids

    class Shifted:  # a teacher whose id i is the student's token i + 1
        def convert_ids_to_tokens(self, ids):
            return tokenizer.convert_ids_to_tokens([i + 1 for i in ids])

    with pytest.raises(VocabularyMismatch, match="student's"):
        check_vocabulary(training_frame, tokenizer, lambda _: Shifted())
    # Token strings stored beside the ids (from a backend that gives both) are checked as they are.
    tokens = training_frame["topk_ids"].to_list()
    named = [[tokenizer.convert_ids_to_tokens(step) for step in row] for row in tokens]
    with_tokens = training_frame.with_columns(topk_tokens=pl.Series(named, dtype=pl.List(pl.List(pl.String))))
    check_vocabulary(with_tokens, tokenizer)
    with pytest.raises(VocabularyMismatch, match="student's"):
        check_vocabulary(with_tokens.with_columns(topk_ids=pl.col("topk_ids").list.eval(pl.element() + 1)), tokenizer)
    with pytest.raises(ValueError, match="no token ids"):  # an openai teacher: strings only
        check_vocabulary(with_tokens.with_columns(topk_ids=None), tokenizer)
    with pytest.raises(ValueError, match="top_logprobs > 0"):
        check_vocabulary(training_frame.drop("topk_ids", "topk_logprobs", "topk_tokens"), tokenizer)
    other = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="another vocabulary"):
        check_same_vocabulary(tokenizer, other, "teacher_a")


@pytest.mark.parametrize("name", ["s_sft", "s_logits", "s_on_policy", "s_lora"])
def test_method_trains_and_checkpoint_generates(name, method_spec, training_frame, tmp_path):
    student = method_spec.student(name)
    out = tmp_path / name
    metrics = train_student(student, method_spec, training_frame, out, CPU, log=lambda _: None)
    losses = [h["loss"] for h in metrics["loss_history"]]
    assert len(losses) == 6 and min(losses[-2:]) < losses[0], losses
    terms = METHODS[student.method].loss_terms  # each term of the loss is logged apart, and kept in the metrics
    assert all(set(terms) <= set(entry) for entry in metrics["loss_history"])
    assert set(metrics["final_loss_terms"]) == set(terms)
    assert metrics["method"] == student.method and metrics["peak_memory_mb"] >= 0
    model = AutoModelForCausalLM.from_pretrained(out)  # LoRA adapters are merged: plain from_pretrained
    assert not any("lora" in n for n, _ in model.named_parameters())
    backend = TransformersBackend.load(str(out), CPU, torch.float32)
    from resources.backends import SamplingParams

    [completion] = backend.generate([[{"role": "user", "content": "12 km in m"}]], SamplingParams(max_new_tokens=4))
    assert completion.num_tokens >= 1


def test_spec_errors_name_the_method_field(method_spec, tmp_path):
    data = yaml.safe_load((method_spec.base_dir / "distill.yaml").read_text())
    data["teachers"][0]["generation"]["top_logprobs"] = 0
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="top_logprobs"):
        load_spec(tmp_path / "a.yaml")
    data = yaml.safe_load((method_spec.base_dir / "distill.yaml").read_text())
    data["students"][2]["on_policy"] = {}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"on_policy\.teacher"):
        load_spec(tmp_path / "b.yaml")
    data["students"][2]["offline_logits"] = {"alpha": 0.5}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="offline_logits"):
        load_spec(tmp_path / "c.yaml")


def test_method_settings_labels_and_model_card(method_spec, tmp_path):
    lora, logits = method_spec.student("s_lora"), method_spec.student("s_logits")
    assert (lora.method_label(), logits.method_label()) == ("offline_logits + LoRA", "offline_logits")
    assert logits.method_settings() == METHODS["offline_logits"].Settings(alpha=0.5, temperature=1.0)
    assert method_spec.student("s_on_policy").method_settings().max_completion_length == 6
    from distill_assets.training import write_model_card

    metrics = {"examples": 24, "steps": 6, "final_loss": 1.5, "parameters": 1000}
    card = write_model_card(tmp_path, lora, method_spec, metrics, Routing.from_spec(method_spec).teachers).read_text()
    assert "with offline_logits + LoRA (TRL `SFTTrainer` with a top-k KL term" in card
    assert "LoRA adapters are merged into the weights" in card
    card = write_model_card(tmp_path, logits, method_spec, metrics, Routing.from_spec(method_spec).teachers).read_text()
    assert "with offline_logits (TRL" in card and "merged" not in card
