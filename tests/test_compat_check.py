"""The tokenizer and chat-template compatibility check that runs before training: one test per failure it catches."""

import polars as pl
import pytest
from transformers import AutoTokenizer

from distill_assets.demo.bpe_tokenizer import OUT_DIR as BPE_DIR
from distill_assets.demo.tiny_models import build_tokenizer
from distill_assets.template_check import check_compatibility, check_training_set

TEACHER_DIR = BPE_DIR.parent / "teacher_a"


@pytest.fixture
def chars():
    return AutoTokenizer.from_pretrained(TEACHER_DIR)


@pytest.fixture
def bpe():
    return AutoTokenizer.from_pretrained(BPE_DIR)


def training_set(answer: str = "2022-01-17") -> pl.DataFrame:
    messages = [{"role": "user", "content": "Date in ISO 8601: 2022/1/17"}, {"role": "assistant", "content": answer}]
    return pl.DataFrame({"task": ["dates"], "messages": [messages]})


def test_compatible_pairs_pass(chars, bpe):
    check_compatibility(chars, len(chars), {"teacher_a": chars}, "same", "s")
    check_compatibility(chars, len(chars) + 64, {"teacher_a": chars}, "same", "s")  # padded rows are allowed
    check_compatibility(bpe, len(bpe), {"teacher_a": chars}, "any", "s")  # another vocabulary, where allowed
    check_compatibility(bpe, len(bpe), {}, None, "s")  # a method that learns text only


def test_more_tokens_than_embedding_rows(bpe, chars):
    with pytest.raises(
        ValueError, match=r"students\.s\.base: the tokenizer .*student_bpe has 384 tokens but the model 102"
    ):
        check_compatibility(bpe, len(chars), {"teacher_a": chars}, "any", "s")


def test_no_pad_token(chars):
    chars.pad_token = chars.eos_token = None  # training gives a tokenizer without one its eos token: none either
    with pytest.raises(ValueError, match=r"students\.s\.base: .* no pad token"):
        check_compatibility(chars, len(chars), {}, None, "s")


def test_other_vocabulary_where_the_method_needs_the_same(bpe, chars):
    with pytest.raises(ValueError, match=r"students\.s\.method: teacher 'teacher_a' \(.*teacher_a\) has another"):
        check_compatibility(bpe, len(bpe), {"teacher_a": chars}, "same", "s")


def test_teacher_ends_with_another_token_than_the_students_end_of_turn(chars):
    teacher = build_tokenizer()
    teacher.eos_token = "<|bos|>"  # same vocabulary, but its answers end with another token
    with pytest.raises(ValueError, match=r"ends its answers with '<\|bos\|>', but the student .* '<\|end\|>'"):
        check_compatibility(chars, len(chars), {"teacher_a": teacher}, "same", "s")


def test_teacher_without_an_end_token_even_across_tokenizers(bpe, chars):
    chars.eos_token = None
    with pytest.raises(ValueError, match=r"teacher 'teacher_a' .* has no eos token"):
        check_compatibility(bpe, len(bpe), {"teacher_a": chars}, "any", "s")


def test_student_without_a_chat_template(bpe):
    bpe.chat_template = None
    with pytest.raises(ValueError, match=r"students\.s\.base: the student's tokenizer has no chat template"):
        check_training_set(bpe, training_set(), "s", 64)


def test_template_that_drops_the_answer(bpe):
    bpe.chat_template = bpe.chat_template.replace(
        "{{ message['content'] }}<|end|>{% endgeneration", "<|end|>{% endgeneration"
    )
    with pytest.raises(ValueError, match="does not render the assistant's answer"):
        check_training_set(bpe, training_set(), "s", 64)


def test_template_that_does_not_close_the_turn_with_eos(bpe):
    bpe.chat_template = bpe.chat_template.replace("}}<|end|>{% endgeneration %}", "}}{% endgeneration %}")
    with pytest.raises(ValueError, match=r"does not close the assistant's turn with its eos token '<\|end\|>'"):
        check_training_set(bpe, training_set(), "s", 64)


def test_no_row_fits_max_length(bpe):
    with pytest.raises(ValueError, match=r"students\.s\.training\.max_length: no row fits 8 tokens"):
        check_training_set(bpe, training_set(), "s", 8)
