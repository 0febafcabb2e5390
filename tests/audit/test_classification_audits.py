"""Accuracy, SVC MIA-Efficacy, loss-based membership AUC and Avg. Gap."""

import numpy as np
import pytest
from sklearn.svm import SVC

from jaxunlearn import audit


def test_mia_efficacy_matches_the_salun_recipe():
    rng = np.random.default_rng(0)
    retain = rng.beta(8, 1, 500)  # confident on training data
    test = rng.beta(3, 2, 200)  # less confident on unseen data
    forget_member_like = rng.beta(8, 1, 100)
    forget_unseen_like = rng.beta(3, 2, 100)
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.concatenate([retain[:200], test])[:, None], np.r_[np.ones(200), np.zeros(200)]
    )
    expected = 100 * (1 - clf.predict(forget_member_like[:, None]).mean())
    assert audit.mia_efficacy(retain, test, forget_member_like) == pytest.approx(expected)
    assert (
        audit.mia_efficacy(retain, test, forget_unseen_like)
        > 50
        > audit.mia_efficacy(retain, test, forget_member_like)
    )


def test_mia_rejects_bad_input():
    with pytest.raises(ValueError, match="forget_conf"):
        audit.mia_efficacy([0.9, 0.8], [0.1, 0.2], [np.nan])
    with pytest.raises(ValueError, match="test_conf"):
        audit.mia_efficacy([0.9], [], [0.5])


def test_loss_auc_extremes_and_accuracy():
    assert audit.loss_membership_auc([0.0, 0.1], [1.0, 2.0]) == 100.0
    assert audit.loss_membership_auc([1.0, 2.0], [0.0, 0.1]) == 0.0
    assert audit.loss_membership_auc([1.0, 1.0], [1.0, 1.0]) == 50.0
    logits = np.eye(3)[[0, 1, 2, 0]]
    assert audit.accuracy_percent(logits, np.array([0, 1, 0, 0])) == 75.0
    p = audit.true_class_probability(np.array([[0.0, 0.0], [1000.0, 0.0]]), np.array([1, 0]))
    np.testing.assert_allclose(p, [0.5, 1.0])


def test_avg_gap():
    m = {"UA": 10, "RA": 90, "TA": 80, "MIA_efficacy": 20}
    ref = {"UA": 12, "RA": 100, "TA": 82, "MIA_efficacy": 24}
    assert audit.avg_gap(m, ref) == pytest.approx((2 + 10 + 2 + 4) / 4)


def test_avg_gap_needs_every_metric_on_both_sides():
    m = {"UA": 10, "RA": 90, "TA": 80}
    ref = {"UA": 12, "RA": 100, "TA": 82, "MIA_efficacy": 24}
    with pytest.raises(ValueError, match="missing \\['MIA_efficacy'\\]"):
        audit.avg_gap(m, ref)
    assert audit.avg_gap(m, ref, keys=("UA", "RA")) == pytest.approx(6.0)


@pytest.mark.parametrize(
    "logits,labels,match",
    [
        (np.full((2, 3), np.nan), np.array([0, 1]), "NaN or inf"),
        (np.eye(3)[:2], np.array([0, 3]), "out of range"),
        (np.eye(3)[:2], np.array([0.0, 1.0]), "integers"),
        (np.eye(3)[:2], np.array([-1, 1]), "integers"),
        (np.eye(3)[:2], np.array([0, 1, 2]), "labels \\[n\\]"),
        (np.ones(3), np.array([0, 1, 2]), "logits \\[n, classes\\]"),
    ],
)
def test_accuracy_rejects_non_finite_logits_and_bad_labels(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        audit.accuracy_percent(logits, labels)


@pytest.mark.parametrize(
    "args,match",
    [
        (([[[0.9, 0.8]]], [0.1, 0.2], [0.5]), "retain_conf.*1-D"),
        (([[0.9, 0.8]], [0.1, 0.2], [0.5]), "test_conf.*like the other"),
        (([[0.9, 0.8]], [[0.1, 0.2], [0.3, 0.4]], [[0.5]]), "different numbers of models"),
        (([0.9, 0.8], [0.1, 1.2], [0.5]), "test_conf.*\\[0, 1\\]"),
        (([0.9, 0.8], [0.1, 0.2], [-0.5]), "forget_conf.*\\[0, 1\\]"),
    ],
)
def test_mia_efficacy_needs_probabilities_with_one_model_axis(args, match):
    with pytest.raises(ValueError, match=match):
        audit.mia_efficacy(*args)


# A leading model axis: N models at once, each row as if alone.


def test_vectorised_metrics_equal_the_per_row_definitions():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 1000, 5)) * 3
    labels = rng.integers(0, 5, 1000)
    acc = audit.accuracy_percent(logits, labels)
    assert acc.shape == (3,)
    np.testing.assert_array_equal(acc, [audit.accuracy_percent(z, labels) for z in logits])
    prob = audit.true_class_probability(logits, labels)
    np.testing.assert_array_equal(prob, [audit.true_class_probability(z, labels) for z in logits])
    # Losses rounded to produce ties, which count one half as in roc_auc.
    forget, test = (
        np.round(rng.exponential(size=(3, 30)), 1),
        np.round(rng.exponential(size=(3, 50)), 1),
    )
    auc = audit.loss_membership_auc(forget, test)
    np.testing.assert_array_equal(
        auc, [audit.loss_membership_auc(f, t) for f, t in zip(forget, test, strict=True)]
    )
    members = np.r_[np.ones(30), np.zeros(50)]
    published = [
        100 * audit.roc_auc(-np.r_[f, t], members) for f, t in zip(forget, test, strict=True)
    ]
    np.testing.assert_allclose(auc, published, rtol=1e-12)
    conf = {
        p: rng.beta(a, b, size=(3, n))
        for p, (a, b, n) in {"r": (8, 1, 60), "t": (3, 2, 40), "f": (5, 1, 30)}.items()
    }
    mia = audit.mia_efficacy(conf["r"], conf["t"], conf["f"])
    expected = [audit.mia_efficacy(conf["r"][i], conf["t"][i], conf["f"][i]) for i in range(3)]
    np.testing.assert_array_equal(mia, expected)
    assert len(set(mia.tolist())) > 1  # three models, three attacks


def test_loss_auc_per_model_by_hand():
    # Row 0: scores -loss, members {0, -1} vs non-members {-1, -2}: 3 wins and a tie of 4 pairs.
    # Row 1: every loss equal, every pair a tie.
    auc = audit.loss_membership_auc([[0.0, 1.0], [1.0, 1.0]], [[1.0, 2.0], [1.0, 1.0]])
    np.testing.assert_array_equal(auc, [87.5, 50.0])
    assert audit.loss_membership_auc([0.0, 1.0], [1.0, 2.0]) == 87.5  # 1-D: a float
    acc = audit.accuracy_percent(
        np.stack([np.eye(3)[[0, 1, 2, 0]], np.eye(3)[[1, 1, 1, 1]]]), np.array([0, 1, 0, 0])
    )
    np.testing.assert_array_equal(acc, [75.0, 25.0])
    assert np.isnan(audit.accuracy_percent(np.zeros((2, 0, 3)), np.zeros(0, int))).all()
