"""Each metric on hand-checked cases: the empty answer, Unicode, numbers with thousands separators, invalid JSON."""

from __future__ import annotations

import pytest

from distill_assets.metrics import (
    METRICS,
    Unscorable,
    choice,
    chrf,
    contains,
    exact_match,
    json_valid,
    normalized_match,
    numeric,
    rouge_l,
    scorer,
    token_f1,
)
from distill_assets.spec import MetricSpec, SpecError, TaskSpec


def test_exact_match_ignores_surrounding_whitespace_only():
    assert exact_match.score(" 2021-03-05\n", "2021-03-05") == 1.0
    assert exact_match.score("2021-3-5", "2021-03-05") == 0.0
    assert exact_match.score("", "x") == 0.0
    assert exact_match.score("café", "café") == 1.0 and exact_match.score("Café", "café") == 0.0


@pytest.mark.parametrize(
    "answer, reference, expected",
    [
        ("Billing.", "billing", 1.0),
        ("  BILLING \n", "billing", 1.0),
        ("«Paris»", "paris", 1.0),  # guillemets are punctuation
        ("Ｂｉｌｌｉｎｇ", "billing", 1.0),  # full-width letters fold (NFKC)
        ("Straße", "STRASSE", 1.0),  # case folding, not lower-casing
        ("new   york", "New York", 1.0),  # inner whitespace collapsed
        ("bill ing", "billing", 0.0),
        ("billing issue", "billing", 0.0),
        ("", "billing", 0.0),
        ("", "", 1.0),
    ],
)
def test_normalized_match(answer, reference, expected):
    assert normalized_match.score(answer, reference) == expected


def test_numeric_parses_the_last_number_with_thousands_separators():
    assert numeric.score("1,234.5", "1234.5") == 1.0
    assert numeric.score("The total is 1,234.50 kg", "1,234.5") == 1.0
    assert numeric.score("3 boxes of 1,234.5", "1234.5") == 1.0  # the last number is the answer
    assert numeric.score("1234", "1,234.5") == 0.0
    assert numeric.score("−3", "-3") == 1.0  # the typeset minus sign
    assert numeric.score("1e3", "1000") == 1.0
    assert numeric.score("", "3") == 0.0  # no number in the answer: wrong
    with pytest.raises(Unscorable, match="no number in the reference"):
        numeric.score("3", "three")


def test_numeric_tolerances():
    assert numeric.score("1234", "1,234.5", numeric.Settings(abs_tol=0.5)) == 1.0
    assert numeric.score("1233.9", "1,234.5", numeric.Settings(abs_tol=0.5)) == 0.0
    assert numeric.score("101", "100", numeric.Settings(rel_tol=0.01)) == 1.0
    assert numeric.score("102", "100", numeric.Settings(rel_tol=0.01)) == 0.0


def test_contains():
    assert contains.score("The capital is Paris.", "paris") == 1.0
    assert contains.score("The capital is Paris.", "paris", contains.Settings(case_sensitive=True)) == 0.0
    assert contains.score("Ünïcode works", "ünïcode") == 1.0
    assert contains.score("", "paris") == 0.0
    with pytest.raises(Unscorable, match="empty"):
        contains.score("anything", "  ")


def test_choice_takes_the_label_the_answer_names_first():
    labels = choice.Settings(labels=["billing", "shipping", "other"])
    assert choice.score("It's a billing problem, not shipping.", "Billing", labels) == 1.0
    assert choice.score("Shipping, I think (not billing).", "billing", labels) == 0.0
    assert choice.score("rebilling", "billing", labels) == 0.0  # whole words only
    assert choice.score("", "billing", labels) == 0.0
    assert choice.score("ＯＴＨＥＲ", "other", labels) == 1.0
    assert choice.named_label("a billing issue", ["billing", "billing issue"]) == "billing issue"
    assert choice.score("billing", "Billing, I'd say", labels) == 1.0  # a teacher's answer as the reference
    with pytest.raises(Unscorable, match="names none of the labels"):
        choice.score("billing", "refund", labels)


def test_token_f1():
    assert token_f1.score("the cat sat", "the cat") == pytest.approx(0.8)  # P 2/3, R 1
    assert token_f1.score("a a b", "a b b") == pytest.approx(2 / 3)  # overlap counts each word at most as often
    assert token_f1.score("Café!", "café") == 1.0
    assert token_f1.score("", "") == 1.0 and token_f1.score("", "x") == 0.0


def test_rouge_l():
    # LCS "the cat on the mat": 5 of 6 answer words, 5 of 5 reference words: F = 10/11
    assert rouge_l.score("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    assert rouge_l.score("café au lait", "café") == pytest.approx(0.5)  # P 1/3, R 1
    assert rouge_l.score("北京", "北京") == 1.0  # rouge-score's own tokenizer drops every non-ASCII character
    assert rouge_l.score("", "x") == 0.0


def test_chrf():
    # character unigrams only: P 2/2, R 2/3, F_beta=2 = 5PR / (4P + R) = 10/14
    assert chrf.score("ab", "abc", chrf.Settings(char_order=1)) == pytest.approx(10 / 14)
    assert chrf.score("café crème", "café crème") == pytest.approx(1.0)
    assert chrf.score("", "café") == 0.0


def test_json_valid():
    assert json_valid.score('{"a": 1}', None) == 1.0
    assert json_valid.score('{"a": 1', None) == 0.0  # invalid JSON
    assert json_valid.score("", None) == 0.0
    assert json_valid.score('{"名前": "太郎"}', None) == 1.0
    assert json_valid.score('```json\n{"a": 1}\n```', None) == 1.0
    assert json_valid.score('```json\n{"a": 1}\n```', None, json_valid.Settings(strip_code_fence=False)) == 0.0
    schema = json_valid.Settings.model_validate(
        {"schema": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}}
    )
    assert json_valid.score('{"a": 2}', None, schema) == 1.0
    assert json_valid.score('{"a": "2"}', None, schema) == 0.0
    assert json_valid.score("[1]", None, schema) == 0.0


def half(prompt: str, prediction: str, reference: str | None) -> float:
    return 0.5 if reference is None else float(prediction == reference)


def out_of_range(prompt: str, prediction: str, reference: str | None) -> float:
    return 2.0


def test_a_users_function_is_a_metric_as_verifiers_are():
    score = scorer("tests.test_metrics:half", MetricSpec(name="tests.test_metrics:half").settings)
    assert score("q", "x", "x") == 1.0 and score("q", "x", None) == 0.5
    dates = scorer("distill_assets.demo.verifiers:dates", MetricSpec(name="exact_match").settings)  # a verifier
    assert dates("Date in ISO 8601: 5 March 2021", "2021-03-05", None) == 1.0
    assert dates("Date in ISO 8601: 5 March 2021", "2021-05-03", None) == 0.0
    with pytest.raises(ValueError, match=r"returned 2\.0"):
        scorer("tests.test_metrics:out_of_range", MetricSpec(name="exact_match").settings)("q", "x", "x")
    with pytest.raises(ValueError, match=r"unknown metric 'tests\.test_metrics:missing'"):
        scorer("tests.test_metrics:missing", MetricSpec(name="exact_match").settings)


def test_every_registered_metric_loads_with_its_settings_from_the_spec():
    written = {
        "exact_match": "exact_match", "normalized_match": "normalized_match",
        "numeric": {"name": "numeric", "rel_tol": 0.01}, "contains": "contains",
        "choice": {"name": "choice", "labels": ["a", "b"]}, "token_f1": "token_f1", "rouge_l": "rouge_l",
        "chrf": {"name": "chrf", "word_order": 2}, "json_valid": {"name": "json_valid", "schema": {"type": "object"}},
        "judge": {"name": "judge", "teacher": "teacher_b"},
    }  # fmt: skip
    assert set(written) == set(METRICS)
    task = TaskSpec.model_validate({"name": "t", "source": "x", "metrics": list(written.values())})
    assert task.headline.name == "exact_match"
    assert task.model_dump()["metrics"] == list(written.values())  # dumped as written, so it loads again
    assert task.metrics[2].settings.rel_tol == 0.01 and task.metrics[8].settings.schema_ == {"type": "object"}


@pytest.mark.parametrize(
    "task, message",
    [
        ({"metric": "exact_match"}, "the field is `metrics`, a list"),
        ({"metrics": ["bleu"]}, "unknown metric 'bleu'"),
        ({"metrics": [{"name": "numeric", "rel_tol": -1}]}, "numeric: rel_tol: Input should be greater than"),
        ({"metrics": [{"name": "choice"}]}, "choice: labels: Field required"),
        ({"metrics": [{"name": "json_valid", "schema": {"type": "nope"}}]}, "not a valid JSON Schema"),
        ({"metrics": ["exact_match", "exact_match"]}, "each metric once"),
        ({"metrics": ["exact_match"], "reference_field": None}, "exact_match compares answers with a reference"),
        ({"metrics": [{"name": "judge", "teacher": "nobody"}]}, "metrics.judge.teacher: unknown teacher 'nobody'"),
    ],
)
def test_a_bad_metric_fails_when_the_spec_loads_naming_it(spec_file, task, message):
    import yaml

    from distill_assets.spec import load_spec

    data = yaml.safe_load(spec_file.read_text())
    data["tasks"][0] |= task
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=message):
        load_spec(spec_file)


def test_a_tasks_metrics_stale_its_evaluations_not_its_training_data(spec_file):
    import yaml

    from distill_assets.spec import load_spec
    from distill_assets.versions import evaluation_version, task_versions

    before = load_spec(spec_file)
    data = yaml.safe_load(spec_file.read_text())
    data["tasks"][0]["metrics"] = ["exact_match"]  # the default, written out: nothing changes
    spec_file.write_text(yaml.safe_dump(data))
    assert evaluation_version(load_spec(spec_file)) == evaluation_version(before)
    data["tasks"][0]["metrics"] = ["exact_match", {"name": "judge", "teacher": "teacher_b"}]
    spec_file.write_text(yaml.safe_dump(data))
    judged = load_spec(spec_file)
    assert task_versions(judged) == task_versions(before)  # the inputs, training data and students stay fresh
    assert evaluation_version(judged) != evaluation_version(before)
    data["teachers"][1]["generation"]["max_new_tokens"] = 3  # the judging teacher changed: rescored again
    spec_file.write_text(yaml.safe_dump(data))
    assert evaluation_version(load_spec(spec_file)) != evaluation_version(judged)
