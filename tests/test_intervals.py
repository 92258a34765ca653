"""The bootstrap intervals: about 95% of them cover the truth over repeated draws, paired ones too."""

import numpy as np
import pytest

from distill_assets.intervals import bootstrap_mean, measurable, paired_bootstrap


def test_the_interval_of_a_mean_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    p, draws = 0.8, 400  # 200 prompts each right with probability 0.8, as a task's eval set
    covered = sum(bootstrap_mean(rng.random(200) < p, resamples=1000, seed=i).covers(p) for i in range(draws))
    assert 0.92 <= covered / draws <= 0.98


def test_the_paired_interval_of_a_difference_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    covered, draws = 0, 400
    for i in range(draws):  # two models on 200 shared prompts: a per-prompt difficulty both see
        difficulty = rng.normal(0.0, 1.0, 200)
        a = difficulty + rng.normal(0.30, 0.5, 200)
        b = difficulty + rng.normal(0.0, 0.5, 200)
        covered += paired_bootstrap(a, b, resamples=1000, seed=i)[0].covers(0.30)
    assert 0.92 <= covered / draws <= 0.98


def test_pairing_narrows_the_interval_where_the_prompts_are_shared():
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0.0, 1.0, 200)
    a, b = difficulty + rng.normal(0.1, 0.2, 200), difficulty + rng.normal(0.0, 0.2, 200)
    paired = paired_bootstrap(a, b)[0]
    ia, ib = bootstrap_mean(a), bootstrap_mean(b)
    assert paired.high - paired.low < (ia.high - ia.low) / 3  # unpaired, the difficulty swamps the difference
    assert measurable(paired) and not ia.covers(ib.estimate + 10)


def test_estimates_ratio_missing_scores_and_the_seed():
    difference, ratio = paired_bootstrap([1, 1, 0, None, 1], [1, 0, 0, 1, 1])  # the 4th prompt is left out
    assert difference.estimate == pytest.approx(0.75 - 0.5) and ratio.estimate == pytest.approx(1.5)
    assert difference.low <= difference.estimate <= difference.high
    assert bootstrap_mean([0.2, 0.9, 0.4], seed=5) == bootstrap_mean([0.2, 0.9, 0.4], seed=5)
    assert bootstrap_mean([1.0] * 50) == (1.0, 1.0, 1.0)
    empty = bootstrap_mean([None, None])
    assert np.isnan(empty.estimate) and empty.rounded() == {"estimate": None, "low": None, "high": None}
    same = paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0])[0]
    assert same == (0.0, 0.0, 0.0) and not measurable(same)
    assert np.isnan(paired_bootstrap([1, 1], [0, 0])[1].estimate)  # a teacher scoring 0: no retention
    with pytest.raises(ValueError, match="one pair per prompt"):
        paired_bootstrap([1, 0], [1])


def test_the_mean_over_tasks_resamples_each_task_on_its_own():
    from distill_assets.intervals import stratified_mean

    rng = np.random.default_rng(5)
    covered, draws = 0, 300
    for i in range(draws):  # two tasks of different sizes and accuracies: the truth is (0.9 + 0.5) / 2
        interval = stratified_mean([rng.random(200) < 0.9, rng.random(50) < 0.5], resamples=1000, seed=i)
        covered += interval.covers(0.7)
    assert 0.92 <= covered / draws <= 0.98
    assert stratified_mean([[1.0, 1.0], [0.0]]).estimate == 0.5  # the mean of means, not of all prompts
    assert np.isnan(stratified_mean([[1.0], []]).estimate)
