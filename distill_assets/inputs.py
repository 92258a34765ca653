"""Curated inputs: load a task's prompts from any supported file, validate, dedup, split.

Every row of a user's file is checked on its own (valid UTF-8, valid JSON, the prompt a
non-empty string that fits the teacher's context, the reference a string or number, the
id unique). A bad row either fails the load with a message naming the file, line and
field, or is quarantined (set aside with its problem, and counted), as the task's
`on_bad_input` says. Plain functions, polars in and out; `curated_inputs` is a thin shell.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from distill_assets.spec import QualitySpec, TaskSpec
from resources.backends import Prompt, encode_prompt

PROMPT_SCHEMA = {"prompt_id": pl.String, "task": pl.String, "prompt": pl.String, "reference": pl.String}
_WHITESPACE = re.compile(r"\s+")


class InputError(ValueError):
    """An input file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class BadRow:
    """One unusable row: where it is, which field, what is wrong, and the raw text."""

    source: str
    line: int  # 1-based line (JSONL, CSV) or row (Parquet, datasets)
    field: str | None  # None when the row as a whole is unreadable
    problem: str
    raw: str

    def message(self) -> str:
        where = f"{self.source}:{self.line}"
        return f"{where}: field {self.field!r}: {self.problem}" if self.field else f"{where}: {self.problem}"


@dataclass(frozen=True)
class PromptBudget:
    """How many tokens a prompt may take: the teacher's context less the tokens it generates."""

    limit: int
    count: Callable[[str], int]  # tokens of the prompt as the teacher sees it (chat template included)
    owner: str  # who sets the limit, for messages


# Reading: raw rows with their line numbers -------------------------------------------


def _raw_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    """(line, row dict) per row of the file, or (line, BadRow) where a row cannot be read at all."""
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if path.is_dir():
        yield from enumerate(_datasets_rows(path), start=1)
        return
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path)
    elif suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except pl.exceptions.PolarsError as err:
            raise InputError(f"{path}: could not be read as parquet: {err}") from None
        yield from enumerate(frame.to_dicts(), start=1)
    else:
        raise InputError(
            f"{path}: unsupported input format {suffix!r}; use .jsonl, .parquet, .csv or a datasets directory"
        )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # spreadsheets and Windows editors write one
            if not raw.strip():
                continue  # blank lines are not rows
            shown = raw.decode("utf-8", errors="backslashreplace").rstrip("\n")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1].hex()
                yield (
                    line_no,
                    BadRow(
                        str(path), line_no, None, f"not valid UTF-8 (byte 0x{bad} at column {err.start + 1})", shown
                    ),
                )
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                yield (
                    line_no,
                    BadRow(str(path), line_no, None, f"not valid JSON ({err.msg} at column {err.colno})", shown),
                )
                continue
            if not isinstance(row, dict):
                yield (
                    line_no,
                    BadRow(str(path), line_no, None, f"a line must be a JSON object, got {type(row).__name__}", shown),
                )
                continue
            yield line_no, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    with path.open("rb") as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")  # a BOM is dropped
        reader = csv.DictReader(text)
        for row in reader:
            line_no = reader.line_num
            undecodable = [k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)]
            if undecodable:
                shown = json.dumps({k: _escape(v) for k, v in row.items()}, ensure_ascii=False)
                yield line_no, BadRow(str(path), line_no, undecodable[0], "not valid UTF-8", shown)
                continue
            yield line_no, row


def _escape(value):
    """Undecodable bytes as \\xNN, so the raw row can be written out as UTF-8."""
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _datasets_rows(path: Path) -> list[dict]:
    import datasets

    if _saved_without_rows(path):
        return []
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise InputError(f"{path}: not a `datasets` directory saved with save_to_disk ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise InputError(f"{path}: DatasetDict without a 'train' split (has {list(ds)})")
        ds = ds["train"]
    return pl.from_arrow(ds.data.table).to_dicts()


def _saved_without_rows(path: Path) -> bool:
    """A dataset of no rows is saved without a data file, and `load_from_disk` then fails with an IndexError."""
    for state in (path / "state.json", path / "train" / "state.json"):
        if state.is_file():
            return not json.loads(state.read_text()).get("_data_files")
    return False


def read_table(path: Path) -> pl.DataFrame:
    """Read JSONL, Parquet, CSV or a `datasets` directory whole; unreadable rows raise InputError."""
    rows = []
    for _, row in _raw_rows(path):
        if isinstance(row, BadRow):
            raise InputError(row.message())
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


# Validating: one row at a time -----------------------------------------------------------


def prompt_id(task: str, prompt: str) -> str:
    """A stable id: the same prompt of the same task has the same id in every run."""
    return hashlib.sha256(f"{task}\x00{prompt}".encode()).hexdigest()[:16]


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _validate(
    row: dict, task: TaskSpec, quality: QualitySpec, need_reference: bool
) -> tuple[dict | None, str | None, str | None]:
    """(clean row, None, None), or (None, field, problem)."""
    field = task.prompt_field
    if field not in row:
        return None, field, "missing"
    prompt = row[field]
    if not isinstance(prompt, str):
        return None, field, f"must be a string, got {_type_name(prompt)}"
    prompt = prompt.strip()
    if not prompt:
        return None, field, "is empty or only whitespace"
    if len(prompt) < quality.min_prompt_chars:
        return None, field, f"is {len(prompt)} characters; quality.min_prompt_chars is {quality.min_prompt_chars}"
    if len(prompt) > quality.max_prompt_chars:
        return None, field, f"is {len(prompt)} characters; quality.max_prompt_chars is {quality.max_prompt_chars}"
    reference = None
    if task.reference_field:
        reference = row.get(task.reference_field)
        if isinstance(reference, bool) or not isinstance(reference, str | int | float | type(None)):
            return None, task.reference_field, f"must be a string or a number, got {_type_name(reference)}"
        if reference is not None:
            reference = str(reference)
        if need_reference and (reference is None or not reference.strip()):
            return None, task.reference_field, "an eval prompt needs a reference answer"
    if task.id_field:
        if task.id_field not in row:
            return None, task.id_field, "missing"
        ident = row[task.id_field]
        if isinstance(ident, bool) or not isinstance(ident, str | int):
            return None, task.id_field, f"must be a string or an integer, got {_type_name(ident)}"
        ident = str(ident)
    else:
        ident = prompt_id(task.name, prompt)
    return {"prompt_id": ident, "task": task.name, "prompt": prompt, "reference": reference}, None, None


def _raw_text(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


def load_prompts(
    task: TaskSpec,
    path: Path,
    quality: QualitySpec | None = None,
    budget: PromptBudget | None = None,
    need_reference: bool = False,
) -> tuple[pl.DataFrame, list[BadRow], int]:
    """The file's usable prompts (exact duplicate prompts dropped), its bad rows, and how many duplicates.

    Raises InputError when the file has no rows, and on the first bad rows when the task's
    `on_bad_input` is `fail`.
    """
    good, bad = _validated_rows(task, path, quality or QualitySpec(), need_reference)
    if budget is not None:
        good = _within_budget(task, path, budget, good, bad)
    kept, duplicates = _drop_duplicates(task, path, good, bad)
    bad.sort(key=lambda b: b.line)
    if bad and task.on_bad_input == "fail":
        raise _bad_rows_error(task, path, bad)
    frame = pl.DataFrame(kept, schema=PROMPT_SCHEMA) if kept else pl.DataFrame(schema=PROMPT_SCHEMA)
    return frame, bad, duplicates


Numbered = list[tuple[dict, int]]  # clean rows with the line each came from


def _validated_rows(
    task: TaskSpec, path: Path, quality: QualitySpec, need_reference: bool
) -> tuple[Numbered, list[BadRow]]:
    """Every row of the file checked on its own: (clean rows with their lines, bad rows)."""
    good: Numbered = []
    bad: list[BadRow] = []
    fields_seen: set[str] = set()
    rows = 0
    for line_no, row in _raw_rows(path):
        rows += 1
        if isinstance(row, BadRow):
            bad.append(row)
            continue
        fields_seen.update(row)
        clean, field, problem = _validate(row, task, quality, need_reference)
        if clean is None:
            bad.append(BadRow(str(path), line_no, field, problem, _raw_text(row)))
        else:
            good.append((clean, line_no))
    if rows == 0:
        raise InputError(
            f"{path}: has no rows (the file is empty, or holds only a header or blank lines); "
            f"task {task.name!r} needs prompts: fill the file or point the spec at another one"
        )
    # A column absent from every row is a spec mismatch, not a bad row.
    missing = [f for f in (task.prompt_field, task.reference_field, task.id_field) if f and f not in fields_seen]
    if fields_seen and missing:
        raise InputError(
            f"{path}: no row has the field(s) {missing} for task {task.name!r}; fields are {sorted(fields_seen)} "
            f"(set prompt_field/reference_field/id_field of tasks.{task.name} in the spec)"
        )
    return good, bad


def _within_budget(task: TaskSpec, path: Path, budget: PromptBudget, good: Numbered, bad: list[BadRow]) -> Numbered:
    """The rows whose prompt fits the teacher's budget; the others join `bad`."""
    keep: Numbered = []
    for row, line_no in good:
        tokens = budget.count(row["prompt"])
        if tokens <= budget.limit:
            keep.append((row, line_no))
        else:
            problem = f"is {tokens} tokens; {budget.owner} leaves {budget.limit} for the prompt"
            bad.append(BadRow(str(path), line_no, task.prompt_field, problem, row["prompt"]))
    return keep


def _drop_duplicates(task: TaskSpec, path: Path, good: Numbered, bad: list[BadRow]) -> tuple[list[dict], int]:
    """Exact duplicate prompts: keep the first, count the rest; an id reused for another prompt joins `bad`."""
    kept: list[dict] = []
    first_line_of_id: dict[str, int] = {}
    seen_prompts: set[str] = set()
    duplicates = 0
    for row, line_no in good:
        if row["prompt"] in seen_prompts:
            duplicates += 1
            continue
        if (first_line := first_line_of_id.get(row["prompt_id"])) is not None:
            problem = f"id {row['prompt_id']!r} is already used on line {first_line} for another prompt"
            bad.append(BadRow(str(path), line_no, task.id_field or "prompt_id", problem, _raw_text(row)))
            continue
        first_line_of_id[row["prompt_id"]] = line_no
        seen_prompts.add(row["prompt"])
        kept.append(row)
    return kept, duplicates


def _bad_rows_error(task: TaskSpec, path: Path, bad: list[BadRow]) -> InputError:
    shown = "\n".join(f"  {b.message()}" for b in bad[:5])
    more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
    return InputError(
        f"{path}: {len(bad)} bad row(s) for task {task.name!r}:\n{shown}{more}\n"
        f"Fix the file, or set tasks.{task.name}.on_bad_input: quarantine to set bad rows aside."
    )


def write_quarantine(bad: list[BadRow], path: Path) -> Path:
    """Bad rows as JSONL (source, line, field, problem, raw), so a person can fix and re-add them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in bad:
            f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
    return path


def problem_counts(bad: list[BadRow]) -> dict[str, int]:
    """How many bad rows per (field, kind of problem), for metadata."""
    counts: dict[str, int] = {}
    for row in bad:
        kind = re.sub(r"\d+", "N", row.problem.split(" (")[0].split(";")[0])
        key = f"{row.field or 'row'}: {kind}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# Normalisation and the eval split ------------------------------------------------------


def normalise_text(text: str) -> str:
    """Case-folded with runs of whitespace collapsed: the form prompts are compared in."""
    return _WHITESPACE.sub(" ", text).strip().casefold()


def split_rank(prompt_id: str) -> str:
    """Where a prompt falls in the held-out order: the sha256 of its id, the same in every library version."""
    return hashlib.sha256(prompt_id.encode()).hexdigest()


def split_eval(frame: pl.DataFrame, eval_size: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out the `eval_size` prompts whose ids rank first by `split_rank`: a pure function of the ids.

    Polars' own hash is not used: its values may change between polars versions, and with them
    which prompts are held out.
    """
    if eval_size >= frame.height:
        raise InputError(f"eval_size {eval_size} leaves no training prompts out of {frame.height}")
    ranks = pl.Series("_rank", [split_rank(p) for p in frame["prompt_id"]], dtype=pl.String)
    held = frame.with_columns(ranks).sort("_rank", "prompt_id").head(eval_size).drop("_rank")
    return frame.filter(~pl.col("prompt_id").is_in(held["prompt_id"].implode())), held


def _normalised(frame: pl.DataFrame) -> pl.Series:
    return frame["prompt"].map_elements(normalise_text, return_dtype=pl.String)


def curate(
    task: TaskSpec,
    source: Path,
    eval_source: Path | None,
    quality: QualitySpec | None = None,
    budget: PromptBudget | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict, list[BadRow]]:
    """The task's training prompts and held-out eval prompts, disjoint after normalisation.

    Returns (train, eval, counts for metadata, bad rows to quarantine).
    """
    train, bad, dropped = load_prompts(task, source, quality, budget)
    if eval_source is None:
        if task.needs_reference() and train["reference"].null_count():
            missing = train.filter(pl.col("reference").is_null()).height
            raise InputError(
                f"{source}: {missing} prompt(s) without a reference ({task.reference_field!r}); the eval split "
                f"needs references: give them, or set tasks.{task.name}.eval_source"
            )
        train, held = split_eval(train, task.eval_size)
    else:
        held, eval_bad, _ = load_prompts(task, eval_source, quality, budget, need_reference=task.needs_reference())
        bad += eval_bad
        held = held.head(task.eval_size)
    if held.height == 0:
        raise InputError(f"{eval_source or source}: no usable eval prompts for task {task.name!r}")
    eval_prompts = _normalised(held).implode()
    overlap = train.filter(_normalised(train).is_in(eval_prompts))
    train = train.filter(~_normalised(train).is_in(eval_prompts))
    if task.max_train_prompts is not None:
        train = train.head(task.max_train_prompts)
    if train.height == 0:
        raise InputError(f"{source}: no usable training prompts for task {task.name!r}")
    stats = {
        "duplicates_dropped": dropped,
        "eval_overlap_dropped": overlap.height,
        "bad_rows": len(bad),
    }
    return train, held, stats, bad


def teacher_prompt_budget(
    model: str, max_new_tokens: int, render: Callable[[str], Prompt], owner: str
) -> PromptBudget | None:
    """The prompt budget a local teacher checkpoint allows, or None when its files are not on disk.

    The limit is the context (the smaller of the config's `max_position_embeddings` and the
    tokenizer's `model_max_length`) less the tokens the teacher is asked to generate; a prompt
    is counted as `render` asks it (`generation.teacher_prompt`: template, mode, system prompt).
    """
    from transformers import AutoTokenizer

    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        return None
    context = json.loads(config_file.read_text()).get("max_position_embeddings")
    tokenizer = AutoTokenizer.from_pretrained(model)
    limits = [n for n in (context, tokenizer.model_max_length) if isinstance(n, int) and n < 10**9]
    if not limits:
        return None

    def count(prompt: str) -> int:
        return len(encode_prompt(tokenizer, render(prompt)))

    limit = min(limits) - max_new_tokens
    return PromptBudget(
        limit=limit, count=count, owner=f"{owner}'s context of {min(limits)} tokens less {max_new_tokens} to generate"
    )
