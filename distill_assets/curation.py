"""Curation of synthetic data: keep only completions worth learning from, and say why each was dropped.

Rules run in order, and a row is dropped by the first rule that rejects it:

    empty -> truncated -> refusal -> template_leak -> verifier -> judge -> exact_duplicate -> near_duplicate

Every row stays in the curated frame with `dropped_by` (the rule, or null when kept) and
`why` (a sentence a person can read), so metadata and the report can count and show them.
Plain functions, polars in and out.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

from distill_assets.frames import Frame, beside, lazy, light, rows_where, where
from distill_assets.inputs import normalise_text
from distill_assets.metrics.judge import Settings as JudgeMetric
from distill_assets.spec import JudgeSpec, QualitySpec
from distill_assets.verifiers import Verifier
from resources.backends import SamplingParams, TeacherBackend

RULES = [
    "empty",
    "truncated",
    "refusal",
    "template_leak",
    "verifier",
    "judge",
    "exact_duplicate",
    "near_duplicate",
]
ACROSS_RULES = ["exact_duplicate_across", "near_duplicate_across"]


# Verification and judging ----------------------------------------------------------------


def verify(frame: pl.DataFrame, verifier: Verifier) -> pl.Series:
    """One bool per row: does the verifier accept the completion? (frame needs prompt, completion, reference)"""
    references = frame["reference"] if "reference" in frame.columns else [None] * frame.height
    return pl.Series(
        "verified",
        [bool(verifier(p, c or "", r)) for p, c, r in zip(frame["prompt"], frame["completion"], references)],
        dtype=pl.Boolean,
    )


_SCORE = re.compile(r"(?i)\bscore\b\W{0,3}(-?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+(?:\.\d+)?))?")
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+(?:\.\d+)?))?")


def parse_score(text: str) -> float | None:
    """A judge's 0-10 score from its reply ("Score: 7", "8/10", "4 out of 5" -> 8.0), or None.

    A "Score:" label wins over other numbers; a score out of another scale is rescaled to 10.
    Anything outside 0-10 after rescaling is not a score.
    """
    match = _SCORE.search(text) or _NUMBER.search(text)
    if not match:
        return None
    value = float(match.group(1))
    if match.group(2):
        scale = float(match.group(2))
        if scale <= 0:
            return None
        value = value / scale * 10.0
    return value if 0.0 <= value <= 10.0 else None


def judge_messages(rubric: str, prompt: str, completion: str, reference: str | None = None) -> list[dict[str, str]]:
    """The judge's chat: the rubric, then the question, the reference answer when given, and the answer."""
    shown = f"Reference answer:\n{reference}\n\n" if reference is not None else ""
    return [
        {"role": "system", "content": rubric},
        {"role": "user", "content": f"Question:\n{prompt}\n\n{shown}Answer:\n{completion}\n\nScore the answer."},
    ]


class JudgeVerdict(NamedTuple):
    """The judge on one completion: its score (None when the reply holds none), or why the request failed."""

    score: float | None
    reply: str
    error: str | None = None  # the request failed after its retries: no verdict at all, not a missing score


class JudgeFailed(RuntimeError):
    """More judge requests failed than the task's `judge.max_failed_fraction` allows."""


def judge_scores(
    backend: TeacherBackend,
    prompts: Sequence[str],
    completions: Sequence[str],
    judge: JudgeSpec | JudgeMetric,
    references: Sequence[str | None] | None = None,
) -> list[JudgeVerdict]:
    """The judge's verdict per completion (against its reference, when given: the `judge` metric);
    a failed request is a verdict with its error, not a reply."""
    references = references if references is not None else [None] * len(prompts)
    chats = [judge_messages(judge.rubric, p, c, r) for p, c, r in zip(prompts, completions, references)]
    replies = backend.generate(chats, SamplingParams(max_new_tokens=judge.max_new_tokens, temperature=0.0))
    return [JudgeVerdict(parse_score(r.text), r.text) if r.ok else JudgeVerdict(None, "", r.error) for r in replies]


# Duplicates: exact, and near (MinHash over word shingles) --------------------------------
#
# The index is compact so that it grows by about 300 bytes per row, whatever the texts' length:
# MinHash signatures are computed a chunk of rows at a time (only a chunk's shingle sets are held)
# into uint32 arrays, each LSH band becomes one int32 group id per row (rows whose band is equal
# share it), and only rows that share a group with another row are ever looked at again. Exact
# duplicates are found on 16-byte digests of the normalised rows.

_PRIME = (1 << 31) - 1  # hashes, coefficients and signatures stay below 2**31: a*h + b fits in uint64
SIGNATURE_CHUNK = 4096  # rows whose shingle sets are held at once while their signatures are computed
SHINGLE_CACHE = 4096  # rows whose shingle sets are kept while candidate pairs are checked


def shingles(text: str, words: int) -> set[str]:
    tokens = normalise_text(text).split()
    if len(tokens) <= words:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + words]) for i in range(len(tokens) - words + 1)}


def _hash(shingle: str) -> int:
    return int.from_bytes(hashlib.blake2b(shingle.encode(), digest_size=8).digest(), "little") % _PRIME


def minhash(shingle_sets: Iterable[set[str]], permutations: int, seed: int = 0) -> np.ndarray:
    """One MinHash signature (row, uint32) per set: min over the set of (a*h + b) mod p per permutation."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=permutations, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=permutations, dtype=np.uint64)
    rows = []
    for items in shingle_sets:
        h = np.fromiter((_hash(s) for s in items), dtype=np.uint64, count=len(items))
        rows.append(((np.outer(h, a) + b) % _PRIME).min(axis=0))
    return np.array(rows, dtype=np.uint32).reshape(len(rows), permutations)


def signatures(texts: Iterable[str], count: int, words: int, permutations: int) -> np.ndarray:
    """[count, permutations] uint32 MinHash signatures of the `count` texts' shingle sets, a chunk at a time."""
    out = np.empty((count, permutations), dtype=np.uint32)
    texts = iter(texts)
    for start in range(0, count, SIGNATURE_CHUNK):
        chunk = [shingles(text, words) for text in itertools.islice(texts, SIGNATURE_CHUNK)]
        out[start : start + len(chunk)] = minhash(chunk, permutations)
    return out


def band_groups(signature: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[signatures, bands] int32: per band, a group id shared by the signatures whose band is equal,
    and -1 for a signature alone in its group (no other row can be its candidate through that band)."""
    groups = np.empty((len(signature), bands), dtype=np.int32)
    for band in range(bands):
        part = np.ascontiguousarray(signature[:, band * rows : (band + 1) * rows])
        _, inverse, counts = np.unique(part.view(np.dtype((np.void, part.itemsize * rows))).ravel(),
                                       return_inverse=True, return_counts=True)  # fmt: skip
        groups[:, band] = np.where(counts[inverse] > 1, inverse, -1)
    return groups


def _bands(permutations: int, threshold: float) -> tuple[int, int]:
    """(bands, rows per band) whose LSH S-curve rises a little below the threshold."""
    options = [(b, permutations // b) for b in range(1, permutations + 1) if permutations % b == 0]
    return min(options, key=lambda br: abs((1 / br[0]) ** (1 / br[1]) - (threshold - 0.1)))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(
    texts: Sequence[str], quality: QualitySpec, active: Sequence[bool] | None = None
) -> dict[int, tuple[int, float]]:
    """{index: (index of the earlier row it repeats, Jaccard)} for rows that near-duplicate an earlier one.

    MinHash LSH finds candidate pairs: the earlier rows, not themselves near-duplicates, that share
    a band with the row; the exact Jaccard of their shingle sets decides (the highest wins, the
    later row on a tie). Rows with `active` False are neither checked nor matched against.
    """
    rows_in = np.flatnonzero(np.ones(len(texts), bool) if active is None else np.asarray(active, bool))
    words = quality.shingle_words
    signature = signatures((texts[i] for i in rows_in.tolist()), len(rows_in), words, quality.minhash_permutations)
    groups = band_groups(signature, *_bands(quality.minhash_permutations, quality.near_duplicate_threshold))
    del signature
    shingled = functools.lru_cache(maxsize=SHINGLE_CACHE)(lambda i: shingles(texts[i], words))
    members: dict[tuple[int, int], list[int]] = {}  # (band, group) -> its rows kept so far
    found: dict[int, tuple[int, float]] = {}
    for n in np.flatnonzero((groups >= 0).any(axis=1)).tolist():
        i = int(rows_in[n])
        keys = [(band, group) for band, group in enumerate(groups[n].tolist()) if group >= 0]
        candidates = {j for key in keys for j in members.get(key, ())}
        best = max(((jaccard(shingled(i), shingled(j)), j) for j in candidates), default=(0.0, -1))
        if best[0] >= quality.near_duplicate_threshold:
            found[i] = (best[1], best[0])
            continue
        for key in keys:
            members.setdefault(key, []).append(i)
    return found


class _Joined(Sequence[str]):
    """Each row's prompt and completion as one text, made when asked for (never all held at once)."""

    def __init__(self, prompts: Sequence[str], completions: Sequence[str]):
        self.prompts, self.completions = prompts, completions

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i):  # type: ignore[override]
        return f"{self.prompts[i]} {self.completions[i]}"


class Duplicate(NamedTuple):
    """A row that repeats an earlier one: exactly (after normalisation) or nearly (by Jaccard)."""

    kind: str  # "exact" or "near"
    of: int  # index of the earlier row it repeats
    similarity: float  # Jaccard of the shingle sets; 1.0 for an exact repeat


def exact_duplicates(prompts: Sequence[str], completions: Sequence[str], active: np.ndarray) -> dict[int, int]:
    """{index: index of the first active row equal to it after `normalise_text`} for the active rows that repeat one.

    Rows are compared by a 16-byte blake2b digest of the normalised pair (a collision: about 2**-128).
    """
    rows = np.flatnonzero(active)
    digests = b"".join(
        hashlib.blake2b(f"{normalise_text(prompts[i])}\x00{normalise_text(completions[i])}".encode(),
                        digest_size=16).digest()
        for i in rows.tolist()
    )  # fmt: skip
    _, first, inverse = np.unique(np.frombuffer(digests, dtype="V16"), return_index=True, return_inverse=True)
    of = rows[first[inverse]]
    repeats = np.flatnonzero(of != rows)
    return dict(zip(rows[repeats].tolist(), of[repeats].tolist()))


def duplicates(
    prompts: Sequence[str], completions: Sequence[str], quality: QualitySpec, active: Sequence[bool] | None = None
) -> dict[int, Duplicate]:
    """{index: Duplicate} for the (prompt, completion) rows that repeat an earlier row, exactly or nearly.

    Exact: equal after `normalise_text`. Near: among the rest, MinHash LSH and Jaccard of
    the prompt and completion together. Rows with `active` False are neither checked nor matched against.
    """
    still = np.ones(len(prompts), bool) if active is None else np.array(active, bool)
    found = {i: Duplicate("exact", j, 1.0) for i, j in exact_duplicates(prompts, completions, still).items()}
    still[list(found)] = False
    for i, (j, similarity) in near_duplicates(_Joined(prompts, completions), quality, still).items():
        found[i] = Duplicate("near", j, similarity)
    return found


# The curation pass ------------------------------------------------------------------------

Judge = Callable[[Sequence[str], Sequence[str]], list[JudgeVerdict]]


def _text_rules(
    completions: Sequence[str], finish_reasons: Sequence[str | None], quality: QualitySpec
) -> list[tuple[str, str] | None]:
    """Per completion, the first of empty, truncated, refusal, template_leak that rejects it (rule, why), or None."""
    refusal = [re.compile(p) for p in quality.refusal_patterns]
    leak = [re.compile(p) for p in quality.leak_patterns]
    out: list[tuple[str, str] | None] = []
    for text, reason in zip(completions, finish_reasons):
        if not text.strip():
            out.append(("empty", "the completion is empty"))
        elif quality.drop_truncated and reason == "length":
            out.append(("truncated", "cut off at max_new_tokens"))
        elif pattern := next((p for p in refusal if p.search(text)), None):
            out.append(("refusal", f"matches refusal pattern {pattern.pattern!r}"))
        elif pattern := next((p for p in leak if p.search(text)), None):
            out.append(("template_leak", f"matches leak pattern {pattern.pattern!r}"))
        else:
            out.append(None)
    return out


def _apply_judge(
    judge: Judge,
    prompts: Sequence[str],
    completions: Sequence[str],
    todo: Sequence[int],
    threshold: float,
    drop: Callable[[int, str, str], None],
) -> tuple[list[float | None], list[str | None]]:
    """Judge the rows `todo`, dropping those under `threshold` or without a score; (scores, errors) per row."""
    scores: list[float | None] = [None] * len(prompts)
    errors: list[str | None] = [None] * len(prompts)
    for i, verdict in zip(todo, judge([prompts[i] for i in todo], [completions[i] for i in todo])):
        scores[i], errors[i] = verdict.score, verdict.error
        if verdict.error is None and verdict.score is None:
            drop(i, "judge", f"no score in the judge's reply {verdict.reply[:60]!r}")
        elif verdict.score is not None and verdict.score < threshold:
            drop(i, "judge", f"judge score {verdict.score:g} < {threshold:g}")
    return scores, errors


def curate_completions(
    frame: pl.DataFrame,
    quality: QualitySpec,
    verifier: Verifier | None = None,
    judge: Judge | None = None,
    judge_threshold: float = 7.0,
    judge_max_failed: float = 0.0,
) -> pl.DataFrame:
    """The partition's rows with `verified`, `judge_score`, `judge_error`, `dropped_by` and `why` added.

    A row whose judge request failed (after its retries) is kept unjudged, with the reason in
    `judge_error`: a failure says nothing of the completion. More failures than the share
    `judge_max_failed` of the rows asked raise `JudgeFailed`. With `quality.curate` false,
    every row is kept (the columns are still filled in).
    """
    n = frame.height
    completions = [c or "" for c in frame["completion"]]
    prompts = list(frame["prompt"])
    dropped: list[str | None] = [None] * n
    why: list[str | None] = [None] * n

    def drop(i: int, rule: str, reason: str) -> None:
        if dropped[i] is None:
            dropped[i], why[i] = rule, reason

    finish = frame["finish_reason"] if "finish_reason" in frame.columns else [None] * n
    for i, rejected in enumerate(_text_rules(completions, finish, quality)):
        if rejected:
            drop(i, *rejected)

    verified: list[bool | None] = [None] * n
    if verifier is not None:
        verified = list(verify(frame.with_columns(completion=pl.Series(completions)), verifier))
        for i, ok in enumerate(verified):
            if not ok:
                drop(i, "verifier", "the verifier rejected it")

    scores: list[float | None] = [None] * n
    judge_errors: list[str | None] = [None] * n
    if judge is not None:
        todo = [i for i in range(n) if dropped[i] is None]
        scores, judge_errors = _apply_judge(judge, prompts, completions, todo, judge_threshold, drop)
        check_judge_failures(judge_errors, len(todo), judge_max_failed)

    for i, (kind, j, similarity) in duplicates(prompts, completions, quality, [d is None for d in dropped]).items():
        if kind == "exact":
            drop(i, "exact_duplicate", f"repeats row {j} ({frame['prompt_id'][j]})")
        else:
            drop(i, "near_duplicate", f"Jaccard {similarity:.2f} with row {j} ({frame['prompt_id'][j]})")

    if not quality.curate:
        dropped, why = [None] * n, [None] * n
    return frame.with_columns(
        verified=pl.Series(verified, dtype=pl.Boolean),
        judge_score=pl.Series(scores, dtype=pl.Float64),
        judge_error=pl.Series(judge_errors, dtype=pl.String),
        dropped_by=pl.Series(dropped, dtype=pl.String),
        why=pl.Series(why, dtype=pl.String),
    )


def check_judge_failures(errors: Sequence[str | None], asked: int, max_failed: float) -> None:
    """Raise `JudgeFailed` when more than the share `max_failed` of the `asked` judge requests failed."""
    failed = [e for e in errors if e is not None]
    if failed and len(failed) > max_failed * asked:
        raise JudgeFailed(
            f"{len(failed)} of {asked} judge requests failed after their retries (first: {failed[0]!r}), more "
            f"than judge.max_failed_fraction={max_failed:g} allows. Rerun to send only these again (answered "
            "ones come from the generation cache), or raise the task's judge.max_failed_fraction to keep "
            "such rows unjudged."
        )


def curate_partition(
    completions: Frame,
    references: pl.DataFrame | None,
    quality: QualitySpec,
    verifier: Verifier | None = None,
    judge: Judge | None = None,
    judge_threshold: float = 7.0,
    judge_max_failed: float = 0.0,
) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """(A partition's rows, top-k columns included, with `reference` and curation's columns added, lazily;
    the same without the top-k columns, in memory, for counts and examples).

    The decisions are made on the light columns in memory (`curate_completions`); the top-k
    columns are carried through chunk by chunk beside them, so they are never held whole.
    `references` is the task's (prompt_id, reference), or None when there are none.
    """
    rows = light(completions)
    if references is not None:
        references = references.select("prompt_id", "reference")
        joined = rows.join(references, on="prompt_id", how="left", maintain_order="left")
        if joined.height != rows.height:  # the top-k columns are placed beside the rows by position
            raise ValueError("curation: a prompt_id has several references; curated_inputs must have unique ids")
        rows = joined
    curated = curate_completions(rows, quality, verifier, judge, judge_threshold, judge_max_failed)
    added = [c for c in curated.columns if c not in lazy(completions).collect_schema()]
    return beside(completions, curated.select(added)), curated


def dedup_across(frame: Frame, quality: QualitySpec) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """Exact and near-duplicate removal over the merged training set, across teachers and tasks.

    Returns (kept rows, lazily, top-k columns included; dropped rows' light columns with
    `dropped_by` and `why`). The duplicates are found on the light columns in memory.
    """
    rows = light(frame)
    if not quality.curate or rows.height == 0:
        return lazy(frame), rows.head(0).with_columns(dropped_by=pl.lit(None, pl.String), why=pl.lit(None, pl.String))
    rule: list[str | None] = [None] * rows.height
    why: list[str | None] = [None] * rows.height
    completions = [c or "" for c in rows["completion"]]
    for i, (kind, j, similarity) in duplicates(list(rows["prompt"]), completions, quality).items():
        source = f"{rows['teacher'][j]}/{rows['task'][j]}"
        if kind == "exact":
            rule[i], why[i] = "exact_duplicate_across", f"repeats {source}"
        else:
            rule[i], why[i] = "near_duplicate_across", f"Jaccard {similarity:.2f} with {source} {rows['prompt_id'][j]}"
    marked = rows.with_columns(dropped_by=pl.Series(rule, dtype=pl.String), why=pl.Series(why, dtype=pl.String))
    return rows_where(frame, marked["dropped_by"].is_null()), marked.filter(pl.col("dropped_by").is_not_null())


def kept(curated: Frame) -> Frame:
    """The rows curation kept (lazily for a lazy frame)."""
    return where(curated, pl.col("dropped_by").is_null())


def summary(curated: pl.DataFrame, examples: int = 3) -> dict:
    """generated, kept, dropped per rule, rows the judge could not judge, and a few dropped examples per rule."""
    counts = {rule: 0 for rule in RULES}
    for rule, count in curated.group_by("dropped_by").len().iter_rows():
        if rule is not None:
            counts[rule] = count
    dropped = curated.filter(pl.col("dropped_by").is_not_null())
    shown = [
        {"rule": r["dropped_by"], "prompt": r["prompt"], "completion": r["completion"], "why": r["why"]}
        for rule in RULES
        for r in dropped.filter(pl.col("dropped_by") == rule).head(examples).iter_rows(named=True)
    ]
    verified = curated["verified"].drop_nulls() if "verified" in curated.columns else pl.Series([], dtype=pl.Boolean)
    judge_failed = curated["judge_error"].is_not_null().sum() if "judge_error" in curated.columns else 0
    return {
        "generated": curated.height,
        "kept": curated.height - dropped.height,
        "dropped": counts,
        "judge_failed": int(judge_failed),  # kept unjudged: the judge request failed
        "verifier_pass_rate": round(float(verified.mean()), 4) if verified.len() else None,
        "examples": shown,
    }
