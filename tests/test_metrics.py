"""Threshold selection and intervals on hand-computed cases."""
import numpy as np
import pytest

from pneumo_models import metrics


def test_recall_constrained_accuracy_hand_computed():
    # 4 pneumonia (1) and 4 normal (0). Sorted by probability:
    # p: .95(1) .90(1) .80(0) .70(1) .60(0) .40(1) .30(0) .10(0)
    y = [1, 1, 0, 1, 0, 1, 0, 0]
    p = [.95, .90, .80, .70, .60, .40, .30, .10]
    # thr .70: TP3 FN1 -> recall .75, TN 3 FP1 -> acc 6/8 (best unconstrained)
    # thr .40: TP4 -> recall 1.0, FP 2 -> acc 6/8 too... TN 2 -> (4+2)/8 = .75
    rc = metrics.recall_constrained_accuracy(y, p, min_recall=0.95)
    assert rc.accuracy == pytest.approx(0.75)
    assert rc.threshold == pytest.approx(0.40)
    assert rc.metrics.recall == 1.0
    assert rc.metrics.specificity == pytest.approx(0.5)
    # with a floor of .75, thr .70 reaches .75 too, and so does .40: the lower threshold wins ties
    rc75 = metrics.recall_constrained_accuracy(y, p, min_recall=0.75)
    assert rc75.accuracy == pytest.approx(0.75)
    assert rc75.threshold == pytest.approx(0.40)
    # with a floor of .5, thr .90 gives TP2 TN4 -> 6/8 and thr .70 also 6/8: lowest is .40 again (6/8)
    # a floor of .25 allows thr .95: TP1 TN4 = 5/8 (worse): best stays .75
    assert metrics.recall_constrained_accuracy(y, p, min_recall=0.25).accuracy == pytest.approx(0.75)


def test_floor_forces_a_lower_threshold_and_lower_accuracy():
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [.1, .2, .3, .65, .5, .7, .8, .9, .95, .99]
    # thr .7 -> TP5 FN1 TN4 -> 9/10 (recall .83); thr .5 -> TP6 TN3 FP1 -> 9/10 (recall 1): a tie,
    # and the lower threshold (more recall) wins it
    assert metrics.recall_constrained_accuracy(y, p, min_recall=0.8).accuracy == pytest.approx(0.9)
    assert metrics.recall_constrained_accuracy(y, p, min_recall=0.8).threshold == pytest.approx(0.5)
    # a floor of .5 admits thr .8: TP4 FN2 TN4 -> 8/10, still below .9
    assert metrics.recall_constrained_accuracy(y, p, min_recall=0.5).accuracy == pytest.approx(0.9)
    # recall 1.0 needs thr <= .5: TP6, FP1 (.65) -> TN3 -> 9/10
    rc = metrics.recall_constrained_accuracy(y, p, min_recall=1.0)
    assert rc.threshold == pytest.approx(0.5)
    assert rc.accuracy == pytest.approx(0.9)
    assert rc.metrics.recall == 1.0


def test_metrics_at_threshold():
    m = metrics.metrics_at([1, 1, 0, 0], [.9, .4, .6, .1], 0.5)
    assert (m.accuracy, m.recall, m.precision, m.specificity) == (0.5, 0.5, 0.5, 0.5)


def test_bootstrap_intervals_bracket_the_point_and_are_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.6 + rng.normal(0.2, 0.2, 300), 0, 1)
    a = metrics.bootstrap_intervals(y, p, 0.5, resamples=200, seed=1)
    b = metrics.bootstrap_intervals(y, p, 0.5, resamples=200, seed=1)
    assert a == b
    for name, entry in a.items():
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi, name
        assert hi - lo < 0.2, name
    assert 0.9 < a["auc"]["value"] <= 1.0


def test_single_class_is_an_error():
    with pytest.raises(ValueError):
        metrics.recall_constrained_accuracy([1, 1], [0.2, 0.3])


def test_bootstrap_threshold_keeps_the_floor_on_new_patients_more_often():
    rng = np.random.default_rng(3)

    def sample(n):  # a fixed "population": pneumonia scores ~ Beta(5,2), normal ~ Beta(2,5)
        y = rng.random(n) < 0.3  # many normals: the recall floor binds
        return y.astype(int), np.where(y, rng.beta(5, 2, n), rng.beta(2, 5, n))

    y, p = sample(600)
    plain = metrics.choose_threshold(y, p, 0.95, rule="validation")
    boot = metrics.choose_threshold(y, p, 0.95, rule="bootstrap", seed=0)
    assert boot <= plain
    assert metrics.metrics_at(y, p, boot).recall >= 0.95
    kept_plain = kept_boot = 0
    for _ in range(200):
        yn, pn = sample(600)
        kept_plain += metrics.metrics_at(yn, pn, plain).recall >= 0.95
        kept_boot += metrics.metrics_at(yn, pn, boot).recall >= 0.95
    assert kept_boot >= 170           # ~95% of new samples keep the floor
    assert kept_boot > kept_plain     # the plain validation threshold keeps it far less often


def test_bootstrap_threshold_hand_case():
    # all positives score 0.9 except one at 0.2: any resample's 95%-recall threshold is <= 0.9
    y = [1] * 20 + [0] * 5
    p = [0.9] * 19 + [0.2] + [0.1] * 5
    t = metrics.bootstrap_recall_threshold(y, p, 0.95, resamples=500, seed=0)
    assert t in (0.2, 0.9)
    # with ~1/20 of positives at 0.2, many resamples hold 2+ of them, forcing the threshold down to 0.2
    assert t == 0.2


def test_umbrella_threshold_keeps_the_floor_with_its_stated_probability():
    rng = np.random.default_rng(5)

    def sample(n, normal_shift=0.0):  # pneumonia ~ Beta(5,2); normal ~ Beta(2,5), optionally scoring higher
        y = rng.random(n) < 0.6
        normal = np.clip(rng.beta(2, 5, n) + normal_shift, 0, 1)
        return y.astype(int), np.where(y, rng.beta(5, 2, n), normal)

    kept, thresholds = 0, []
    for _ in range(300):
        y, p = sample(500)
        t = metrics.umbrella_threshold(y, p, 0.95)
        thresholds.append(t)
        yn, pn = sample(4000)
        kept += metrics.metrics_at(yn, pn, t).recall >= 0.95
    assert 0.93 * 300 <= kept             # the guarantee: >= 95% of new samples keep the floor
    # only the pneumonia scores set it: moving every normal score up changes nothing
    y, p = sample(500)
    shifted = np.where(y == 1, p, np.clip(p + 0.3, 0, 1))
    assert metrics.umbrella_threshold(y, p, 0.95) == metrics.umbrella_threshold(y, shifted, 0.95)


def test_umbrella_threshold_by_hand_and_against_the_bootstrap_rule():
    # 100 pneumonia scores 0.01..1.00: P(Binomial(100, .05) <= k-1) <= .05 holds up to k = 2
    y = np.r_[np.ones(100, int), np.zeros(50, int)]
    p = np.r_[np.arange(1, 101) / 100, np.full(50, 0.001)]
    assert metrics.umbrella_threshold(y, p, 0.95) == pytest.approx(0.02)
    # too few cases for any guarantee: the lowest pneumonia score
    assert metrics.umbrella_threshold([1] * 10 + [0], [0.5] * 9 + [0.3, 0.1], 0.95) == 0.3
    # normals far below: the best-accuracy threshold sits at the lowest of many ties, far under umbrella's
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(600, int), np.zeros(200, int)]
    p = np.r_[rng.beta(8, 1, 600), rng.beta(1, 60, 200)]
    assert metrics.choose_threshold(y, p, 0.95, rule="umbrella") > metrics.choose_threshold(y, p, 0.95, rule="bootstrap")
