"""How ``cleanse.py`` turns cross-validated models into one ranking of a whole image folder.

Every image is held out once per repeat (``folds`` class-stratified folds, a new assignment
per repeat), so each image gets an out-of-fold prediction from a model that never saw it,
and, for the influence methods, K-1 scores from the models that trained on it. The per-fold
scores of influence methods are not comparable between folds (each fold's validation loss
has its own scale), so each fold's scores become percentile ranks first; the repeats are then
averaged. Every score here is "lower = more harmful".
"""
import numpy as np

from common.errors import UserError

FLAG_FRACTION = 0.1   # "flagged": the most harmful 10 % (what the agreement is measured on)


def fold_assignment(labels, folds, seed):
    """Fold number of every image: each class dealt round-robin over the folds in a seeded
    random order, so every fold holds about the same share of every class."""
    labels = np.asarray(labels)
    if len(labels) < folds:
        raise UserError(f"{len(labels)} images cannot be split into {folds} folds; use "
                        f"--folds {max(2, len(labels))} or fewer")
    rng = np.random.default_rng([seed, 7])
    out = np.empty(len(labels), np.int64)
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out[idx] = (start + np.arange(len(idx))) % folds
        start += len(idx)    # the next class continues where this one stopped
    return out


def percentiles(scores):
    """Rank of every score as a fraction in [0, 1]: 0 the lowest (most harmful), 1 the
    highest; ties keep the given order."""
    scores = np.asarray(scores)
    if len(scores) < 2:
        return np.full(len(scores), 0.5)
    out = np.empty(len(scores))
    out[np.argsort(scores, kind="stable")] = np.arange(len(scores)) / (len(scores) - 1)
    return out


def label_quality(labels, probs):
    """Confident learning's label-quality score (cleanlab, ``self_confidence``): the
    out-of-fold probability of the given label; low = probably mislabelled."""
    from cleanlab.rank import get_label_quality_scores
    return get_label_quality_scores(np.asarray(labels), np.asarray(probs),
                                    method="self_confidence")


def rank(scores):
    """Image indices from the most harmful (lowest score) to the most helpful; ties keep the
    folder order."""
    return np.argsort(np.asarray(scores), kind="stable")


def flagged_count(n):
    return max(1, int(round(FLAG_FRACTION * n)))


def seed_votes(per_repeat):
    """How many repeats put each image among their own most harmful 10 %."""
    per_repeat = np.atleast_2d(per_repeat)
    k = flagged_count(per_repeat.shape[1])
    votes = np.zeros(per_repeat.shape[1], np.int64)
    for scores in per_repeat:
        votes[rank(scores)[:k]] += 1
    return votes


def agreement(per_repeat):
    """Share of the images some repeat flags (its most harmful 10 %) that every repeat flags:
    1 = the repeats flag the same images; 1 for a single repeat."""
    per_repeat = np.atleast_2d(per_repeat)
    k = flagged_count(per_repeat.shape[1])
    sets = [set(rank(s)[:k].tolist()) for s in per_repeat]
    return len(set.intersection(*sets)) / len(set.union(*sets))
