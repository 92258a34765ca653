"""Cross-tokenizer logit distillation: the alignment on hand-built offsets, the loss by hand, and a student
on the demo's own BPE tokenizer trained from a teacher on the character tokenizer."""

import math

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill_assets.demo.bpe_tokenizer import OUT_DIR as BPE_DIR
from distill_assets.demo.bpe_tokenizer import build_bpe_tokenizer, training_texts
from distill_assets.methods.cross_tokenizer_logits import align_spans, plan_rows, token_map
from distill_assets.methods.cross_tokenizer_trainer import cross_tokenizer_loss
from distill_assets.spec import load_spec
from distill_assets.training import train_student
from resources.backends import SamplingParams
from resources.transformers_backend import TransformersBackend
from tests.test_methods import routed_training_frame, small_methods_spec

CPU = torch.device("cpu")


def test_alignment_groups_tokens_between_shared_boundaries():
    # "2022-01": student "20" "22" "-" "01"; teacher one token per character.
    student = [(0, 2), (2, 4), (4, 5), (5, 7)]
    teacher = [(i, i + 1) for i in range(7)]
    assert align_spans(student, teacher) == [(0, 1, 0, 2), (1, 1, 2, 2), (2, 1, 4, 1), (3, 1, 5, 2)]
    # Boundaries that cross: "abcde" as "ab" "cde" and "a" "bcd" "e" meet only at the end.
    assert align_spans([(0, 2), (2, 5)], [(0, 1), (1, 4), (4, 5)]) == [(0, 2, 0, 3)]
    # Two byte-level tokens of one character share its span: the group does not close between them.
    assert align_spans([(0, 1), (0, 1), (1, 2)], [(0, 1), (1, 2)]) == [(0, 2, 0, 1), (2, 1, 1, 1)]
    # Texts that differ at the end: the tokens left over form one last group.
    assert align_spans([(0, 1), (1, 3)], [(0, 1), (1, 2)]) == [(0, 1, 0, 1), (1, 1, 1, 1)]
    assert align_spans([], [(0, 1)]) == []


@pytest.fixture(scope="module")
def char_tokenizer():
    return AutoTokenizer.from_pretrained(BPE_DIR.parent / "teacher_a")


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return AutoTokenizer.from_pretrained(BPE_DIR)


def test_demo_bpe_tokenizer_is_the_committed_one_and_splits_otherwise(bpe_tokenizer, char_tokenizer):
    built = build_bpe_tokenizer(training_texts())
    assert built.get_vocab() == bpe_tokenizer.get_vocab()  # the build is deterministic: the committed files
    assert bpe_tokenizer.chat_template == char_tokenizer.chat_template
    assert bpe_tokenizer.eos_token == char_tokenizer.eos_token == "<|end|>"
    assert bpe_tokenizer.tokenize("2022-01-17") == ["20", "22", "-", "01", "-", "17"]
    assert bpe_tokenizer.get_vocab()["a"] != char_tokenizer.get_vocab()["a"]  # other ids for the same text


def test_token_map_joins_the_vocabularies_by_text(char_tokenizer, bpe_tokenizer):
    mapped = token_map(char_tokenizer, bpe_tokenizer)
    for text in ("a", "7", "-", " "):
        assert mapped[char_tokenizer.convert_tokens_to_ids(text)] == bpe_tokenizer.convert_tokens_to_ids(
            bpe_tokenizer.tokenize(text)[0]
        )
    assert mapped[char_tokenizer.eos_token_id] == bpe_tokenizer.eos_token_id
    assert mapped[char_tokenizer.convert_tokens_to_ids("<|user|>")] == -1  # other special tokens: no text to share


def test_plan_rows_adds_the_end_group_and_drops_rows_that_do_not_line_up(char_tokenizer, bpe_tokenizer):
    [plan, cut, other] = plan_rows(["2022-01", "2022-01", "2022-01"], [8, 7, 5], bpe_tokenizer, char_tokenizer)
    groups, student_ids, teacher_ids = plan
    assert groups == [(0, 1, 0, 2), (1, 1, 2, 2), (2, 1, 4, 1), (3, 1, 5, 2), (4, 1, 7, 1)]
    assert student_ids == bpe_tokenizer("2022-01", add_special_tokens=False)["input_ids"]
    assert teacher_ids[-1] == char_tokenizer.eos_token_id and len(teacher_ids) == 8
    assert cut[0][-1] == (3, 1, 5, 2)  # stopped at max_new_tokens: no eos step, no end group
    assert other is None  # 5 steps for 7 characters: generated as other tokens


def test_loss_matches_hand_computation():
    # One sequence: prompt token, then two completion tokens; vocabulary of 3.
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.5, 0.0, -1.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    # Group 0 (exact): student token 1; the teacher's top-2 map to student ids 1 and 2, at p .6 and .2.
    # Group 1 (ULD): student tokens 1..2 against two teacher steps; teacher top-2 .5 .3, its later token p .8.
    groups = {
        "group_batch": torch.tensor([0, 0]),
        "group_position": torch.tensor([1, 1]),
        "group_later": torch.tensor([[-1], [2]]),
        "group_ids": torch.tensor([[1, 2], [-1, -1]]),
        "group_logprobs": torch.log(torch.tensor([[0.6, 0.2], [0.5, 0.3]])),
        "group_teacher_later": torch.log(torch.tensor([0.8, 0.8])),
        "group_exact": torch.tensor([True, False]),
    }
    loss, parts = cross_tokenizer_loss(logits, labels, groups, alpha=0.4)

    def softmax(row):
        z = sum(math.exp(v) for v in row)
        return [math.exp(v) / z for v in row]

    s0, s1 = softmax([1.0, 2.0, 0.0]), softmax([0.5, 0.0, -1.0])
    ce = -(math.log(s0[1]) + math.log(s1[0])) / 2
    p = [0.75, 0.25]
    kl = p[0] * (math.log(p[0]) - math.log(s0[1])) + p[1] * (math.log(p[1]) - math.log(s0[2]))
    scale = s1[0]  # the student's probability of its second token in the group
    top = sorted(s0, reverse=True)[:2]
    uld = abs(top[0] * scale - 0.5 * 0.8) + abs(top[1] * scale - 0.3 * 0.8)
    uld += abs((scale - (top[0] + top[1]) * scale) - (0.8 - 0.8 * 0.8))
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert parts["uld"].item() == pytest.approx(uld, rel=1e-5)
    assert parts["exact"].item() == 0.5
    assert loss.item() == pytest.approx(0.6 * ce + 0.4 * (kl + uld) / 2, rel=1e-5)


@pytest.fixture(scope="module")
def cross_spec(tmp_path_factory, tiny_teacher):
    def students(arch, training):
        return [
            {"name": "s_cross", "base": arch, "method": "cross_tokenizer_logits", "training": training},
            {"name": "s_same", "base": arch, "method": "offline_logits", "training": training},
        ]

    return small_methods_spec(tmp_path_factory.mktemp("cross"), tiny_teacher, BPE_DIR, students)


@pytest.fixture(scope="module")
def training_frame(cross_spec, tiny_teacher):
    return routed_training_frame(cross_spec, tiny_teacher)


def test_cross_tokenizer_student_trains_and_checkpoint_generates(cross_spec, training_frame, tmp_path):
    out, logged = tmp_path / "s_cross", []
    metrics = train_student(cross_spec.student("s_cross"), cross_spec, training_frame, out, CPU, log=logged.append)
    losses = [h["loss"] for h in metrics["loss_history"]]
    assert len(losses) == 6 and min(losses[-2:]) < losses[0], losses
    assert not any("do not line up" in line for line in logged)  # every row aligned
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(BPE_DIR))
    backend = TransformersBackend.load(str(out), CPU, torch.float32)
    [completion] = backend.generate([[{"role": "user", "content": "12 km in m"}]], SamplingParams(max_new_tokens=4))
    backend.close()
    assert completion.num_tokens >= 1


def test_same_vocabulary_method_refuses_the_student_naming_both_tokenizers(cross_spec, training_frame, tmp_path):
    with pytest.raises(ValueError, match=r"students\.s_same\.method: teacher .* has another vocabulary") as error:
        train_student(cross_spec.student("s_same"), cross_spec, training_frame, tmp_path / "x", CPU, log=print)
    assert "student_bpe" in str(error.value) and "tiny_teacher" in str(error.value)


def synthetic_frame(char_tokenizer, answers: list[str]):
    """A training set whose char-level teacher wrote `answers`: top-1 its own token, then its eos, at p .9."""
    import polars as pl

    from distill_assets.frames import TOPK_SCHEMA

    rows = []
    for i, answer in enumerate(answers):
        ids = [*char_tokenizer(answer, add_special_tokens=False)["input_ids"], char_tokenizer.eos_token_id]
        messages = [{"role": "user", "content": f"prompt {i}"}, {"role": "assistant", "content": answer}]
        rows.append({"teacher": "teacher_a", "messages": messages,
                     "topk_ids": [[t, 50] for t in ids], "topk_logprobs": [[math.log(0.9), math.log(0.05)]] * len(ids),
                     "topk_tokens": None})  # fmt: skip
    return pl.DataFrame(rows).cast({name: dtype for name, dtype in TOPK_SCHEMA.items()})


def test_collator_lays_exact_and_uld_groups_on_the_completion_tokens(char_tokenizer, bpe_tokenizer):
    from distill_assets.methods.cross_tokenizer_logits import with_plans
    from distill_assets.methods.cross_tokenizer_trainer import CrossTokenizerCollator
    from distill_assets.methods.offline_logits import to_dataset

    frame = synthetic_frame(char_tokenizer, ["2022-01", "abc"])
    dataset, store = to_dataset(frame)
    dataset, unaligned = with_plans(dataset, ["teacher_a"] * 2, store, bpe_tokenizer, {"teacher_a": char_tokenizer})
    assert unaligned == 0
    examples = []
    for i in range(2):
        messages = frame["messages"][i].to_list()
        start = len(bpe_tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True)["input_ids"])
        full = list(bpe_tokenizer.apply_chat_template(messages)["input_ids"])
        examples.append({**dataset[i], "teacher_index": 0, "input_ids": full,
                         "labels": [-100] * start + full[start:]})  # fmt: skip
    mapping = token_map(char_tokenizer, bpe_tokenizer)
    eos = bpe_tokenizer.eos_token_id
    collator = CrossTokenizerCollator(bpe_tokenizer.pad_token_id, store=store, token_maps=[mapping], eos_token_id=eos)
    batch = collator(examples)
    first = (batch["labels"][0] != -100).nonzero().flatten().tolist()
    # "2022-01": "20" "22" "-" "01" against 7 characters, then <|end|> against the teacher's eos step.
    in_row0 = batch["group_batch"] == 0
    assert batch["group_position"][in_row0].tolist() == first
    assert batch["group_exact"][in_row0].tolist() == [False, False, True, False, True]
    assert batch["group_later"][in_row0].tolist() == [[-1]] * 5  # one student token per group
    dash = bpe_tokenizer.convert_tokens_to_ids("-")
    assert batch["group_ids"][in_row0][2].tolist() == [dash, mapping[50]]
    assert batch["group_ids"][in_row0][4, 0] == bpe_tokenizer.eos_token_id
    # A ULD group's teacher tail: its second character's top-1 probability, .9.
    assert batch["group_teacher_later"][in_row0][0].item() == pytest.approx(math.log(0.9), abs=1e-3)
    groups = {k: v for k, v in batch.items() if k.startswith("group_")}
    loss, parts = cross_tokenizer_loss(torch.randn(2, batch["input_ids"].shape[1], 384), batch["labels"], groups, 0.5)
    assert parts["kl"] > 0 and parts["uld"] > 0 and torch.isfinite(loss)
    # A template that puts another token after the answer before its eos: no end group there.
    collator.eos_token_id = bpe_tokenizer.convert_tokens_to_ids("<|user|>")
    assert collator(examples)["group_exact"][:4].tolist() == [False, False, True, False]


@pytest.fixture(scope="module")
def byte_level_teacher(tmp_path_factory):
    """A random tiny teacher on a second byte-level BPE (300 tokens): another vocabulary than the student's."""
    from transformers import LlamaForCausalLM

    from distill_assets.demo.tiny_models import llama_config

    path = tmp_path_factory.mktemp("models") / "bpe_teacher"
    tokenizer = build_bpe_tokenizer(training_texts(), vocab_size=300)
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(tokenizer, hidden_size=32, num_hidden_layers=1)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def on_policy_spec(cross_spec, teacher, tmp_path):
    data = cross_spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["teachers"][0]["model"] = str(teacher)
    student = {**data["students"][0], "name": "s_gold", "method": "on_policy"}
    student["on_policy"] = {"teacher": "teacher_a", "max_completion_length": 6}
    data["students"] = [student]
    for task in data["tasks"]:  # the prompt files, where the module's spec has them
        for field in ("source", "eval_source"):
            task[field] = str(cross_spec.resolve_path(task[field]))
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_on_policy_across_byte_level_tokenizers_trains_with_gold(
    cross_spec, training_frame, byte_level_teacher, tmp_path
):
    spec = on_policy_spec(cross_spec, byte_level_teacher, tmp_path)
    out = tmp_path / "s_gold"
    metrics = train_student(spec.student("s_gold"), spec, training_frame, out, CPU, log=lambda _: None)
    assert len(metrics["loss_history"]) == 6 and all(math.isfinite(h["loss"]) for h in metrics["loss_history"])
    backend = TransformersBackend.load(str(out), CPU, torch.float32)
    [completion] = backend.generate([[{"role": "user", "content": "12 km in m"}]], SamplingParams(max_new_tokens=4))
    backend.close()
    assert completion.num_tokens >= 1


def test_on_policy_across_a_character_tokenizer_names_the_offline_method(cross_spec, training_frame, tmp_path):
    spec = on_policy_spec(cross_spec, BPE_DIR.parent / "teacher_a", tmp_path)
    with pytest.raises(ValueError, match=r"byte-level BPE .* teacher's .*teacher_a is not; use method: cross_tok"):
        train_student(spec.student("s_gold"), spec, training_frame, tmp_path / "x", CPU, log=lambda _: None)
