"""Data-quality suites: great-expectations (GX Core 1.x, in-process) over polars frames.

Each suite is a list of named checks; a check is one or more GX expectations. The result
of a suite is one plain dict per check (passed, what was observed against which bound,
and failing examples), which the Dagster asset checks turn into `AssetCheckResult`s and
tests read directly. GX validates pandas frames, so frames are converted on the way in.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import polars as pl

from distill_assets.spec import QualitySpec

PROMPT_COLUMNS = ["prompt_id", "task", "prompt", "reference"]
COMPLETION_COLUMNS = ["task", "prompt_id", "prompt", "completion", "teacher", "teacher_version"]
EXAMPLES = 5
_names = itertools.count()


@dataclass
class Expect:
    """One GX expectation, with the check it belongs to and the bound a person should read."""

    check: str
    expectation: object
    bound: str


@dataclass
class CheckOutcome:
    check: str
    passed: bool
    description: str
    observed: dict = field(default_factory=dict)
    failing_examples: list = field(default_factory=list)


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return gx, context


def run_suite(frame: pl.DataFrame, expects: list[Expect], descriptions: dict[str, str]) -> list[CheckOutcome]:
    """Validate `frame` against the expectations in one GX batch; one outcome per named check."""
    gx, context = _context()
    n = next(_names)
    source = context.data_sources.add_pandas(f"frame_{n}")
    batch = (
        source.add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    )
    suite = gx.ExpectationSuite(name=f"suite_{n}")
    for i, e in enumerate(expects):
        e.expectation.meta = {"check": e.check, "index": i}
        suite.add_expectation(e.expectation)
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES})
    outcomes = {name: CheckOutcome(name, True, descriptions[name]) for name in dict.fromkeys(e.check for e in expects)}
    for r in result.results:
        meta = r.expectation_config.meta
        outcome = outcomes[meta["check"]]
        outcome.passed &= bool(r.success)
        details = r.result or {}
        observed = {"bound": expects[meta["index"]].bound}
        if details.get("observed_value") is not None:
            value = details["observed_value"]
            observed["observed"] = round(float(value), 4) if isinstance(value, int | float) else str(value)
        if details.get("unexpected_count") is not None:
            observed["unexpected"] = int(details["unexpected_count"])
            observed["unexpected_percent"] = round(float(details.get("unexpected_percent") or 0.0), 2)
        outcome.observed[r.expectation_config.type] = observed
        if not r.success:
            outcome.failing_examples += [_plain(v) for v in details.get("partial_unexpected_list") or []]
    return list(outcomes.values())


def _plain(value):
    return None if value != value else str(value)[:200]  # NaN -> None


def _mostly(max_rate: float) -> float:
    return round(1.0 - max_rate, 6)


def prompt_suite(frame: pl.DataFrame, quality: QualitySpec, need_reference: bool = False) -> list[CheckOutcome]:
    """Curated inputs or an eval set: schema, prompts present and non-empty, unique ids, lengths."""
    import great_expectations.expectations as gxe

    expects = [
        Expect("schema", gxe.ExpectTableColumnsToMatchSet(column_set=PROMPT_COLUMNS, exact_match=True), "exact"),
        Expect("schema", gxe.ExpectTableRowCountToBeBetween(min_value=1), ">= 1 row"),
        Expect("prompts_present", gxe.ExpectColumnValuesToNotBeNull(column="prompt"), "no nulls"),
        Expect("prompts_present", gxe.ExpectColumnValuesToMatchRegex(column="prompt", regex=r"\S"), "no blanks"),
        Expect("unique_prompt_ids", gxe.ExpectColumnValuesToBeUnique(column="prompt_id"), "unique"),
        Expect("unique_prompt_ids", gxe.ExpectColumnValuesToNotBeNull(column="prompt_id"), "no nulls"),
        Expect(
            "prompt_length",
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="prompt", min_value=quality.min_prompt_chars, max_value=quality.max_prompt_chars
            ),
            f"{quality.min_prompt_chars}..{quality.max_prompt_chars} chars",
        ),
    ]
    descriptions = {
        "schema": "columns are exactly prompt_id, task, prompt, reference; at least one row",
        "prompts_present": "every prompt is present and not blank",
        "unique_prompt_ids": "prompt ids are present and unique",
        "prompt_length": "prompt lengths are within the quality bounds",
    }
    if need_reference:
        expects.append(Expect("references_present", gxe.ExpectColumnValuesToNotBeNull(column="reference"), "no nulls"))
        descriptions["references_present"] = "every eval prompt has a reference answer"
    return run_suite(frame, expects, descriptions)


COMPLETION_CHECKS = {
    "schema": "the completion columns are there; at least one row",
    "non_empty_completions": "completions are not empty or blank",
    "completion_length": "completions are within the length bound",
    "no_refusals": "completions are not refusals",
    "no_template_leaks": "no chat special tokens, role headers or template syntax in the text",
    "verifier_pass_rate": "the task's verifier accepts enough completions",
}


def completion_suite(frame: pl.DataFrame, quality: QualitySpec, verified: pl.Series | None) -> list[CheckOutcome]:
    """One teacher x task partition: non-empty, bounded, no refusals or leaks, few duplicates, verified.

    `verified` (one bool per row) is given where the task has a verifier.
    """
    frame = frame.with_columns(pl.col("completion").fill_null(""))
    expects = _completion_expectations(quality)
    descriptions = {k: v for k, v in COMPLETION_CHECKS.items() if k != "verifier_pass_rate"}
    if verified is not None:
        import great_expectations.expectations as gxe

        frame = frame.with_columns(verified=verified.cast(pl.Int8))
        bound = gxe.ExpectColumnMeanToBeBetween(column="verified", min_value=quality.min_verifier_pass_rate)
        expects.append(Expect("verifier_pass_rate", bound, f">= {quality.min_verifier_pass_rate:.0%}"))
        descriptions["verifier_pass_rate"] = COMPLETION_CHECKS["verifier_pass_rate"]
    # Duplicates are counted across prompts: several samples of one prompt agreeing is not a duplicate.
    first = frame.unique(subset=["prompt_id"], keep="first", maintain_order=True)
    outcomes = run_suite(frame.drop([c for c in frame.columns if frame[c].dtype.is_nested()]), expects, descriptions)
    outcomes.insert(4, _duplicate_outcome(first, quality))
    return outcomes


def _completion_expectations(quality: QualitySpec) -> list[Expect]:
    import great_expectations.expectations as gxe

    def not_matching(patterns: list[str], rate: float):
        return gxe.ExpectColumnValuesToNotMatchRegexList(column="completion", regex_list=patterns, mostly=_mostly(rate))

    return [
        Expect("schema", gxe.ExpectTableColumnsToMatchSet(column_set=COMPLETION_COLUMNS, exact_match=False), "has"),
        Expect("schema", gxe.ExpectTableRowCountToBeBetween(min_value=1), ">= 1 row"),
        Expect(
            "non_empty_completions",
            gxe.ExpectColumnValuesToMatchRegex(
                column="completion", regex=r"\S", mostly=_mostly(quality.max_empty_rate)
            ),
            f"empty <= {quality.max_empty_rate:.0%}",
        ),
        Expect(
            "completion_length",
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="completion", min_value=0, max_value=quality.max_completion_chars
            ),
            f"<= {quality.max_completion_chars} chars",
        ),
        Expect(
            "no_refusals",
            not_matching(quality.refusal_patterns, quality.max_refusal_rate),
            f"refusals <= {quality.max_refusal_rate:.0%}",
        ),
        Expect(
            "no_template_leaks",
            not_matching(quality.leak_patterns, quality.max_leak_rate),
            f"chat tokens or template leaks <= {quality.max_leak_rate:.0%}",
        ),
    ]


def _duplicate_outcome(first: pl.DataFrame, quality: QualitySpec) -> CheckOutcome:
    import great_expectations.expectations as gxe

    (outcome,) = run_suite(
        first.select("completion"),
        [
            Expect(
                "duplicate_rate",
                gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                    column="completion", min_value=round(1.0 - quality.max_duplicate_rate, 6)
                ),
                f"duplicates <= {quality.max_duplicate_rate:.0%}",
            )
        ],
        {"duplicate_rate": "few prompts share the same completion"},
    )
    if not outcome.passed:
        common = first.group_by("completion").len().sort("len", descending=True).head(EXAMPLES)
        outcome.failing_examples = [f"{c!r} x{n}" for c, n in common.iter_rows()]
    return outcome


def outcomes_table(outcomes: list[CheckOutcome]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "check": [o.check for o in outcomes],
            "passed": [o.passed for o in outcomes],
            "observed": [str(o.observed) for o in outcomes],
            "failing examples": [", ".join(repr(x) for x in o.failing_examples[:EXAMPLES]) for o in outcomes],
        }
    )
