"""95% percentile bootstrap intervals over eval prompts: of a mean, and of a paired difference or ratio.

Every resample is drawn at once as an index matrix (resamples x prompts), so the cost is a
few numpy operations, not a Python loop over resamples; a large eval set is drawn in blocks
of resamples that keep the matrix near `_BLOCK` cells. Seeded: the same values give the same
interval. A paired comparison resamples prompts once for both models, so what the two share
(an easy prompt is easy for both) cancels out of the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
_BLOCK = 4_000_000  # index-matrix cells drawn at once


class Interval(NamedTuple):
    """An estimate with its bootstrap interval; NaNs when there is nothing to estimate from."""

    estimate: float
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def rounded(self, digits: int = 4) -> dict[str, float | None]:
        """For report.json: each bound rounded, NaN as None."""
        return {k: None if np.isnan(v) else round(float(v), digits) for k, v in self._asdict().items()}


_NONE = Interval(float("nan"), float("nan"), float("nan"))


def _values(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _resampled_means(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of each column (prompts x k) over `resamples` bootstrap draws of the rows: resamples x k."""
    rng = np.random.default_rng(seed)
    n = columns.shape[0]
    block = max(1, _BLOCK // max(n, 1))
    means = [
        columns[rng.integers(0, n, size=(min(block, resamples - start), n))].mean(axis=1)
        for start in range(0, resamples, block)
    ]
    return np.concatenate(means)


def _bounds(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(
    values: Sequence[float | None] | np.ndarray, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Interval:
    """The mean of the values (None and NaN left out) with its percentile bootstrap interval."""
    x = _values(values)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return _NONE
    draws = _resampled_means(x[:, None], resamples, seed)[:, 0]
    return Interval(float(x.mean()), *_bounds(draws, level))


def paired_bootstrap(
    a: Sequence[float | None] | np.ndarray,
    b: Sequence[float | None] | np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[Interval, Interval]:
    """mean(a) - mean(b) and mean(a) / mean(b) on the same prompts, each with a paired bootstrap interval.

    `a[i]` and `b[i]` are two models' scores on prompt i; a prompt missing either score is left
    out of both. The ratio (retention, a student over its teacher) is NaN where mean(b) is 0.
    """
    x, y = _values(a), _values(b)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need one pair per prompt: {x.size} and {y.size} values")
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if x.size == 0:
        return _NONE, _NONE
    draws = _resampled_means(np.stack([x, y], axis=1), resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(draws[:, 1] > 0, draws[:, 0] / draws[:, 1], np.nan)
        ratio = x.mean() / y.mean() if y.mean() > 0 else float("nan")
    difference = Interval(float(x.mean() - y.mean()), *_bounds(draws[:, 0] - draws[:, 1], level))
    return difference, Interval(float(ratio), *_bounds(ratios, level))


def measurable(difference: Interval) -> bool:
    """Whether a difference's interval excludes zero; where it covers zero there is no measurable difference."""
    return not np.isnan(difference.low) and not difference.covers(0.0)


def stratified_mean(
    groups: Sequence[Sequence[float | None] | np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """The mean of the groups' means (a model's mean over tasks), each group resampled on its own."""
    arrays = [x[~np.isnan(x)] for x in map(_values, groups)]
    if not arrays or any(x.size == 0 for x in arrays):
        return _NONE
    draws = np.mean([_resampled_means(x[:, None], resamples, seed + i)[:, 0] for i, x in enumerate(arrays)], axis=0)
    return Interval(float(np.mean([x.mean() for x in arrays])), *_bounds(draws, level))
