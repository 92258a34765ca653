"""Curation rules, verifiers, the judge's score parser, MinHash near-duplicates and the GX suites."""

from __future__ import annotations

import random
import tracemalloc

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_assets import curation
from distill_assets.curation import (
    Duplicate,
    JudgeFailed,
    _bands,
    curate_completions,
    dedup_across,
    duplicates,
    jaccard,
    judge_scores,
    minhash,
    near_duplicates,
    parse_score,
    shingles,
    summary,
)
from distill_assets.demo.tasks import TASKS
from distill_assets.inputs import normalise_text
from distill_assets.quality import completion_suite, prompt_suite
from distill_assets.spec import JudgeSpec, QualitySpec
from distill_assets.verifiers import VERIFIERS, get_verifier
from resources.backends import Completion, TeacherBackend

QUALITY = QualitySpec()


@settings(max_examples=200, deadline=None)
@given(task=st.sampled_from(sorted(TASKS)), seed=st.integers(0, 2**32 - 1))
def test_demo_verifiers_accept_the_answer_and_reject_a_changed_one(task, seed):
    prompt, answer = TASKS[task](random.Random(seed))
    verifier = get_verifier(f"distill_assets.demo.verifiers:{task}")
    assert verifier(prompt, answer, None) and verifier(prompt, f" {answer}\n", None)
    assert not verifier(prompt, answer + "0", None)
    assert VERIFIERS["reference"](prompt, answer, answer) and not VERIFIERS["reference"](prompt, "x", answer)


def test_a_users_verifier_by_module_path():
    assert get_verifier("distill_assets.verifiers:reference") is VERIFIERS["reference"]


@given(st.text(max_size=80))
def test_parse_score_never_raises_and_stays_in_range(text):
    score = parse_score(text)
    assert score is None or 0.0 <= score <= 10.0


def test_parse_score_reads_common_replies():
    replies = {"Score: 7": 7.0, "8/10": 8.0, "4 out of 5": 8.0, "I'd say 9.": 9.0, "score=3.5/5": 7.0}
    assert {r: parse_score(r) for r in replies} == replies
    assert parse_score("no idea") is None and parse_score("Score: 11") is None and parse_score("12/10") is None
    assert parse_score("Question 3 ... Score: 6") == 6.0  # the labelled number wins


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="abcde ", min_size=1, max_size=40), min_size=1, max_size=30))
def test_near_duplicates_point_back_and_find_exact_copies(texts):
    texts = [*texts, texts[0]]  # a copy of the first is always found
    found = near_duplicates(texts, QUALITY)
    for i, (j, similarity) in found.items():
        assert j < i and j not in found and similarity >= QUALITY.near_duplicate_threshold
        assert abs(similarity - jaccard(shingles(texts[i], 3), shingles(texts[j], 3))) < 1e-9
    last = len(texts) - 1
    assert last in found or any(i in found for i in range(last) if shingles(texts[i], 3) == shingles(texts[0], 3))


def _reference_duplicates(prompts, completions, quality, active):
    """Duplicates as found before the compact index: shingle sets and LSH buckets of every row held in dicts."""
    found, seen = {}, {}
    for i in (i for i in range(len(prompts)) if active[i]):
        key = normalise_text(prompts[i]) + "\x00" + normalise_text(completions[i])
        if key in seen:
            found[i] = Duplicate("exact", seen[key], 1.0)
        seen.setdefault(key, i)
    sets = [shingles(f"{p} {c}", quality.shingle_words) for p, c in zip(prompts, completions)]
    signature = minhash(sets, quality.minhash_permutations)
    bands, rows = _bands(quality.minhash_permutations, quality.near_duplicate_threshold)
    buckets: list[dict] = [{} for _ in range(bands)]
    for i in (i for i in range(len(prompts)) if active[i] and i not in found):
        keys = [signature[i, band * rows : (band + 1) * rows].tobytes() for band in range(bands)]
        candidates = {j for band, key in enumerate(keys) for j in buckets[band].get(key, ())}
        best = max(((jaccard(sets[i], sets[j]), j) for j in candidates), default=(0.0, -1))
        if best[0] >= quality.near_duplicate_threshold:
            found[i] = Duplicate("near", best[1], best[0])
            continue
        for band, key in enumerate(keys):
            buckets[band].setdefault(key, []).append(i)
    return found


def _noisy_copies(rng: random.Random, rows: int) -> tuple[list[str], list[str]]:
    """Rows drawn from a few texts with a word or two changed, some upper-cased: many exact and near repeats."""
    words = [
        "the",
        "a",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "red",
        "blue",
        "green",
        "one",
        "two",
        "three",
        "four",
        "five",
    ]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(2, 15))]
    prompts, completions = [], []
    for _ in range(rows):
        completion = rng.choice(texts).split()
        for _ in range(rng.randint(0, 2)):
            if completion:
                completion[rng.randrange(len(completion))] = rng.choice(words)
        prompt = rng.choice(texts)
        prompts.append(prompt.upper() if rng.random() < 0.1 else prompt)
        completions.append(" ".join(completion))
    return prompts, completions


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), threshold=st.sampled_from([0.5, 0.85, 1.0]), words=st.sampled_from([1, 3]))
def test_the_compact_index_decides_as_the_dict_of_buckets_did(seed, threshold, words):
    """Same duplicates, of the same rows, with the same Jaccard, as the index that held every row's sets."""
    rng = random.Random(seed)
    prompts, completions = _noisy_copies(rng, rng.randint(1, 150))
    quality = QualitySpec(near_duplicate_threshold=threshold, shingle_words=words)
    active = [rng.random() < 0.8 for _ in prompts]
    found = duplicates(prompts, completions, quality, active)
    assert found == _reference_duplicates(prompts, completions, quality, active)
    assert found == duplicates(prompts, completions, quality, active)  # and the same on a second call


def test_known_near_duplicates_are_found_across_signature_chunks(monkeypatch):
    monkeypatch.setattr(curation, "SIGNATURE_CHUNK", 3)
    monkeypatch.setattr(curation, "SHINGLE_CACHE", 2)
    story = "the quick brown fox jumps over the lazy dog and then runs far away into the green wood"
    completions = [story, "something else entirely, nothing alike", story.replace("lazy", "sleepy"), story,
                   story.upper(), story.replace("green wood", "dark forest tonight")]  # fmt: skip
    prompts, quality = ["Tell a story"] * 6, QualitySpec(near_duplicate_threshold=0.7)
    found = duplicates(prompts, completions, quality)
    assert found == _reference_duplicates(prompts, completions, quality, [True] * 6)
    assert {i: (d.kind, d.of) for i, d in found.items()} == {2: ("near", 0), 3: ("exact", 0), 4: ("exact", 0),
                                                             5: ("near", 0)}  # fmt: skip
    assert found[2].similarity == 16 / 22  # "lazy" -> "sleepy": 3 of 19 shingles changed


def _traced_peak(rows: int) -> int:
    """Peak traced allocations of `duplicates` over `rows` distinct rows of 40 words."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    prompts = [f"question {i}" for i in range(rows)]
    completions = [" ".join(rng.choice(words) for _ in range(40)) for _ in prompts]
    tracemalloc.start()
    try:
        assert duplicates(prompts, completions, QUALITY) == {}
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_duplicate_index_grows_by_a_few_hundred_bytes_a_row(monkeypatch):
    """Finding duplicates costs under 600 bytes more per row (MinHash signatures, band groups, digests):
    a chunk's shingle sets at a time, never every row's (which took about 8 kB a row at 40 words)."""
    monkeypatch.setattr(curation, "SIGNATURE_CHUNK", 256)
    small, large = _traced_peak(2000), _traced_peak(8000)
    assert (large - small) / 6000 < 600, (small, large)


def _frame(prompts, completions, finish=None):
    n = len(prompts)
    return pl.DataFrame(
        {
            "task": ["reverse"] * n,
            "prompt_id": [f"p{i}" for i in range(n)],
            "prompt": prompts,
            "completion": completions,
            "finish_reason": finish or ["stop"] * n,
            "teacher": ["teacher_b"] * n,
            "teacher_version": ["v"] * n,
            "reference": [None] * n,
        }
    )


WORDS = ["abc", "hello", "xyz", "qqq", "world", "pear", "plum"]
PROMPTS = [f"Reverse the letters: {w}" for w in WORDS]


def test_each_rule_drops_and_says_why():
    completions = ["cba", "I'm sorry, I cannot help with that", "", "<|user|>zyx", "dlrow", "rae", "mulp"]
    finish = ["stop", "stop", "stop", "stop", "stop", "stop", "length"]
    frame = pl.concat([_frame(PROMPTS, completions, finish), _frame(PROMPTS[:1], ["cba"])])
    curated = curate_completions(frame, QUALITY, get_verifier("distill_assets.demo.verifiers:reverse"))
    assert curated["dropped_by"].to_list() == [
        None, "refusal", "empty", "template_leak", None, "verifier", "truncated", "exact_duplicate",
    ]  # fmt: skip
    stats = summary(curated)
    assert stats["generated"] == 8 and stats["kept"] == 2 and sum(stats["dropped"].values()) == 6
    assert all(e["why"] for e in stats["examples"])
    off = curate_completions(
        frame, QUALITY.model_copy(update={"curate": False}), get_verifier("distill_assets.demo.verifiers:reverse")
    )
    assert off["dropped_by"].null_count() == off.height and off["verified"].to_list()[0] is True


class ScriptedJudge(TeacherBackend):
    name = "judge"

    def __init__(self, replies):
        self.replies, self.seen = replies, []

    def complete(self, requests, params, progress=None, on_completion=None):
        prompts = [r.prompt for r in requests]
        self.seen += prompts
        answers = [self.replies[p[-1]["content"].split("Answer:\n")[1].split("\n")[0]] for p in prompts]
        return [Completion.failed(a.error) if isinstance(a, Completion) else Completion(a, 3, "stop") for a in answers]


def test_the_judge_keeps_completions_at_or_above_the_threshold():
    judge = ScriptedJudge({"cba": "Score: 9", "zyx": "2/10", "olleh": "hmm"})
    spec = JudgeSpec(teacher="teacher_a", threshold=7)
    frame = _frame([PROMPTS[0], PROMPTS[2], PROMPTS[1]], ["cba", "zyx", "olleh"])
    curated = curate_completions(frame, QUALITY, None, lambda p, c: judge_scores(judge, p, c, spec), spec.threshold)
    assert curated["judge_score"].to_list() == [9.0, 2.0, None]
    assert curated["dropped_by"].to_list() == [None, "judge", "judge"]
    assert judge.seen[0][0] == {"role": "system", "content": spec.rubric}


def test_a_failed_judge_request_keeps_its_row_unjudged_and_counted():
    """A failure says nothing of the completion: it is neither a missing score nor a low one."""
    judge = ScriptedJudge({"cba": "Score: 9", "zyx": Completion.failed("HTTP 503 after 5 retries"), "olleh": "hmm"})
    spec = JudgeSpec(teacher="teacher_a", max_failed_fraction=0.5)
    frame = _frame([PROMPTS[0], PROMPTS[2], PROMPTS[1]], ["cba", "zyx", "olleh"])

    def ask(prompts, completions):
        return judge_scores(judge, prompts, completions, spec)

    curated = curate_completions(frame, QUALITY, None, ask, spec.threshold, spec.max_failed_fraction)
    assert curated["dropped_by"].to_list() == [None, None, "judge"]
    assert curated["judge_error"].to_list() == [None, "HTTP 503 after 5 retries", None]
    assert curated["judge_score"].to_list() == [9.0, None, None]
    assert "no score in the judge's reply 'hmm'" in curated["why"][2]
    assert summary(curated)["judge_failed"] == 1 and summary(curated)["dropped"]["judge"] == 1

    with pytest.raises(JudgeFailed, match=r"1 of 3 judge requests failed .*HTTP 503.*max_failed_fraction=0\.3 allows"):
        curate_completions(frame, QUALITY, None, ask, spec.threshold, 0.3)
    with pytest.raises(JudgeFailed, match="max_failed_fraction=0 allows"):  # the default: no row goes unjudged
        curate_completions(frame, QUALITY, None, ask, spec.threshold)


def test_duplicates_across_teachers():
    a = _frame(PROMPTS[:3], ["cba", "olleh", "zyx"])
    b = _frame(PROMPTS[:2], ["cba", "OLLEH "]).with_columns(teacher=pl.lit("teacher_a"), task=pl.lit("other"))
    kept, dropped = dedup_across(pl.concat([a, b]), QUALITY)
    assert kept.collect().height == 3 and dropped["dropped_by"].to_list() == ["exact_duplicate_across"] * 2


def test_completion_suite_fails_garbage_and_passes_good_data():
    good = _frame(PROMPTS, [w[::-1] for w in WORDS]).drop("reference")
    verifier = get_verifier("distill_assets.demo.verifiers:reverse")
    verified = pl.Series([verifier(p, c, None) for p, c in zip(good["prompt"], good["completion"])])
    assert all(o.passed for o in completion_suite(good, QUALITY, verified))
    garbage = good.with_columns(completion=pl.lit("<|assistant|> I'm sorry, I cannot help"))
    outcomes = {o.check: o for o in completion_suite(garbage, QUALITY, pl.Series([False] * garbage.height))}
    failed = {name for name, o in outcomes.items() if not o.passed}
    assert failed == {"no_refusals", "no_template_leaks", "duplicate_rate", "verifier_pass_rate"}
    assert outcomes["no_refusals"].failing_examples[0].startswith("<|assistant|>")


def test_prompt_suite_catches_what_inputs_must_not_have():
    frame = pl.DataFrame({"prompt_id": ["a", "a"], "task": ["t", "t"], "prompt": ["ok", " "], "reference": ["1", None]})
    failed = {o.check for o in prompt_suite(frame, QUALITY, need_reference=True) if not o.passed}
    assert failed == {"prompts_present", "unique_prompt_ids", "references_present"}
