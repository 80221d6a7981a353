"""Confident learning (Northcutt et al., JAIR 2021) through cleanlab, as a scoring method beside
the influence methods: ``--method confident-learning``.

cleanlab needs every sample's predicted class probabilities from a model that did not train on
it. Here they come from K-fold cross-validated multinomial logistic regression (scikit-learn)
on the training images' pixels, independent of the run's network: the baseline the issue
measured ("5-fold cross-validated logistic regression on the same pixels"). The score of a
sample is cleanlab's label quality (self-confidence: the predicted probability of the given
label, in [0, 1]); the samples cleanlab's ``find_label_issues`` flags get 1 subtracted, so they
come first in the ranking, in the order of their quality. Low = likely mislabelled = harmful,
as for the influence methods.
"""
import warnings

import numpy as np

from common.errors import UserError

FOLDS = 5


def cross_validated_probabilities(x, labels, n_classes, folds=FOLDS, seed=0):
    """Out-of-fold predicted probabilities (N, n_classes) of logistic regression on pixels."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=n_classes)
    folds = min(folds, int(counts[counts > 0].min()))
    if folds < 2:
        raise UserError("confident learning needs at least 2 training samples of every class "
                        "it scores (for cross-validation)")
    features = x.reshape(len(x), -1)
    probs = np.zeros((len(x), n_classes))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, held_out in splitter.split(features, labels):
        classifier = LogisticRegression(max_iter=200)
        with warnings.catch_warnings():   # a few hundred iterations rank well enough
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier.fit(features[train], labels[train])
        probs[np.ix_(held_out, classifier.classes_)] = classifier.predict_proba(
            features[held_out])
    return probs


def confident_learning_scores(x, labels, n_classes, folds=FOLDS, seed=0):
    """Score per sample: cleanlab's label quality, minus 1 for the label issues it finds."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels)
    probs = cross_validated_probabilities(x, labels, n_classes, folds, seed)
    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(labels, probs)
    issues = find_label_issues(labels, probs, n_jobs=1)   # one process, as everything here
    return quality - issues.astype(float)
