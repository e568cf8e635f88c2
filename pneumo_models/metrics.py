"""Recall-constrained accuracy, the metrics at a threshold, and their bootstrap intervals.

A case is called pneumonia when its probability is >= the threshold. The recall-constrained
accuracy is the best accuracy over all thresholds whose pneumonia recall stays >= a floor:
missing a sick child costs more than a false alarm.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import log_loss as _sk_log_loss
from sklearn.metrics import roc_auc_score, roc_curve


class ThresholdMetrics(NamedTuple):
    threshold: float
    accuracy: float
    recall: float          # sensitivity on pneumonia
    precision: float
    specificity: float
    f1: float


class RecallConstrained(NamedTuple):
    accuracy: float        # best accuracy among thresholds with recall >= floor
    threshold: float       # the threshold that reaches it (lowest one among ties: most recall)
    metrics: ThresholdMetrics


def _as_arrays(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} probabilities")
    return y, p


def metrics_at(y_true, y_prob, threshold: float) -> ThresholdMetrics:
    y, p = _as_arrays(y_true, y_prob)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ThresholdMetrics(float(threshold), (tp + tn) / len(y), recall, precision, specificity, f1)


def recall_constrained_accuracy(y_true, y_prob, min_recall: float = 0.95) -> RecallConstrained:
    """Best accuracy over thresholds whose recall >= ``min_recall``.

    Candidate thresholds are the distinct predicted probabilities (every distinct decision), so
    the answer is exact. Among thresholds with equal accuracy, the lowest (highest recall) wins.
    """
    y, p = _as_arrays(y_true, y_prob)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("recall-constrained accuracy needs both classes among the labels")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # roc_curve's first threshold is +inf (nothing called positive): recall 0, never feasible
    # for a floor > 0; it is kept so a floor of 0 is handled uniformly.
    accuracy = (tpr * n_pos + (1.0 - fpr) * n_neg) / len(y)
    feasible = tpr >= min_recall - 1e-12
    acc = np.where(feasible, accuracy, -1.0)
    best = float(acc.max())
    # thresholds decrease along the curve: the last index reaching ``best`` is the lowest threshold
    idx = int(np.flatnonzero(acc >= best - 1e-12)[-1])
    thr = float(min(thresholds[idx], 1.0))
    return RecallConstrained(best, thr, metrics_at(y, p, thr))


def auc(y_true, y_prob) -> float:
    y, p = _as_arrays(y_true, y_prob)
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def log_loss(y_true, y_prob) -> float:
    """Binary log-loss, probabilities clipped to [1e-7, 1 - 1e-7] (a 0 or 1 does not make it infinite)."""
    y, p = _as_arrays(y_true, y_prob)
    return float(_sk_log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))


HEADLINE = ("accuracy", "recall", "precision", "specificity", "f1", "auc")


def headline_metrics(y_true, y_prob, threshold: float) -> dict[str, float]:
    m = metrics_at(y_true, y_prob, threshold)._asdict()
    m.pop("threshold")
    m["auc"] = auc(y_true, y_prob)
    return {k: float(m[k]) for k in HEADLINE}


def bootstrap_intervals(y_true, y_prob, threshold: float, *, resamples: int = 1000,
                        seed: int = 0, level: float = 0.95, groups=None) -> dict[str, dict]:
    """Each headline metric at a fixed threshold with its percentile bootstrap interval.

    Cases are resampled with replacement, or, with ``groups`` (one patient id per case), whole
    patients are (a patient's images are not independent evidence). Resamples lacking a class are
    drawn again (AUC and recall need both). Returns ``{name: {"value": v, "ci95": [lo, hi]}}``.
    """
    y, p = _as_arrays(y_true, y_prob)
    rng = np.random.default_rng(seed)
    values = {k: [] for k in HEADLINE}
    members = None if groups is None else _group_members(groups, len(y))
    n = len(y) if members is None else len(members)
    while len(values["accuracy"]) < resamples:
        picked = rng.integers(0, n, n)
        idx = picked if members is None else np.concatenate([members[i] for i in picked])
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        for k, v in headline_metrics(yb, p[idx], threshold).items():
            values[k].append(v)
    point = headline_metrics(y, p, threshold)
    tail = (1.0 - level) / 2 * 100
    return {k: {"value": point[k],
                "ci95": [float(np.nanpercentile(values[k], tail)), float(np.nanpercentile(values[k], 100 - tail))]}
            for k in HEADLINE}


def _group_members(groups, n: int) -> list[np.ndarray]:
    """Case indices of each group, in first-seen order."""
    groups = list(groups)
    if len(groups) != n:
        raise ValueError(f"{n} cases but {len(groups)} group ids")
    index: dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.asarray(v) for v in index.values()]


THRESHOLD_RULES = ("umbrella", "bootstrap", "validation")


def bootstrap_recall_threshold(y_true, y_prob, min_recall: float, *, level: float = 0.95,
                               resamples: int = 2000, seed: int = 0) -> float:
    """A threshold that keeps recall >= ``min_recall`` in ``level`` of bootstrap resamples.

    Recall depends only on the pneumonia cases' scores. For each resample of those cases, the
    highest threshold that still reaches the floor is the k-th highest score (k = ceil(floor * n));
    the ``1 - level`` quantile of those thresholds is low enough that a new sample of patients
    like the validation ones would keep the floor with probability ~``level``.
    """
    y, p = _as_arrays(y_true, y_prob)
    pos = p[y == 1]
    if len(pos) == 0:
        raise ValueError("no pneumonia cases to set a recall threshold on")
    k = max(1, int(np.ceil(min_recall * len(pos) - 1e-9)))
    rng = np.random.default_rng(seed)
    samples = rng.choice(pos, size=(resamples, len(pos)), replace=True)
    kth_highest = -np.partition(-samples, k - 1, axis=1)[:, k - 1]
    return float(np.quantile(kth_highest, 1.0 - level, method="lower"))


def umbrella_threshold(y_true, y_prob, min_recall: float, *, delta: float = 0.05) -> float:
    """The highest threshold that keeps recall >= ``min_recall`` on new patients with probability
    >= 1 - ``delta``: the Neyman-Pearson umbrella algorithm (Tong, Feng & Li 2018, Science Advances),
    with the missed pneumonia rate as the controlled error.

    With the n pneumonia scores sorted, s_(1) <= ... <= s_(n), and the threshold at s_(k), the share
    of new pneumonia cases scoring below it is Beta(k, n - k + 1) distributed whatever the scores'
    distribution, so P(recall < floor) = P(Binomial(n, 1 - floor) <= k - 1). The largest k whose
    probability stays <= delta is taken. The guarantee reads only the pneumonia scores: the normal
    class, whose scores are what moves between sites and machines, cannot pull the threshold down
    (the best-accuracy threshold on validation sits at the lowest of many ties when normal children
    score near 0, and then flags most healthy children elsewhere). With fewer than
    log(delta) / log(floor) cases (59 at 0.95) no order statistic gives the guarantee: the lowest
    pneumonia score is used.
    """
    from scipy.stats import binom

    y, p = _as_arrays(y_true, y_prob)
    pos = np.sort(p[y == 1])
    n = len(pos)
    if n == 0:
        raise ValueError("no pneumonia cases to set a recall threshold on")
    k = np.arange(1, n + 1)
    ok = binom.cdf(k - 1, n, 1.0 - min_recall) <= delta
    return float(pos[int(k[ok].max()) - 1] if ok.any() else pos[0])


def choose_threshold(y_true, y_prob, min_recall: float, rule: str = "bootstrap", **kwargs) -> float:
    """The exported decision threshold.

    ``umbrella``: ``umbrella_threshold`` (recall >= the floor on new patients with 95% probability,
    as high as that allows).
    ``validation``: the recall-constrained threshold on validation (recall just reaches the floor
    there, so on new patients it falls below the floor about half the time).
    ``bootstrap``: the lower of that and ``bootstrap_recall_threshold`` (a margin sized by the
    number of validation pneumonia cases).
    """
    if rule == "umbrella":
        return umbrella_threshold(y_true, y_prob, min_recall)
    rc = recall_constrained_accuracy(y_true, y_prob, min_recall)
    if rule == "validation":
        return rc.threshold
    if rule == "bootstrap":
        return min(rc.threshold, bootstrap_recall_threshold(y_true, y_prob, min_recall, **kwargs))
    raise ValueError(f"unknown threshold rule {rule!r}; choose one of {THRESHOLD_RULES}")
