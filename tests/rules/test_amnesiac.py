"""Amnesiac: forget labels are wrong and drawn once per forget example (not per update)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import rules
from jaxunlearn.core.types import Outputs


def _batch(xf, yf, xr, yr):
    # Rows 0..nf-1 of a data set are the forget examples, the next ones the retain examples.
    nf, nr = len(yf), len(yr)
    return {
        "forget": {
            "x": jnp.asarray(xf, jnp.float32),
            "y": jnp.asarray(yf, jnp.int32),
            "index": jnp.arange(nf, dtype=jnp.int32),
        },
        "retain": {
            "x": jnp.asarray(xr, jnp.float32),
            "y": jnp.asarray(yr, jnp.int32),
            "index": jnp.arange(nf, nf + nr, dtype=jnp.int32),
        },
    }


def _scaled_onehot_apply(margin):
    def apply(variables, x, *, train=False):
        del train
        return Outputs(logits=margin * variables["params"]["s"] * x, features=x)

    return apply


def test_amnesiac_labels_are_never_the_true_label():
    # Inputs are one-hot labels and logits = margin * x, so an example's cross-entropy is ~0 if
    # its training label is the true one and ~margin otherwise; a loss of ~margin on the forget
    # half (retain half ~0) means every forget label was wrong.
    num_classes, margin, n = 3, 50.0, 256
    for fixed in (True, False):
        rule = rules.amnesiac(
            _scaled_onehot_apply(margin), num_classes=num_classes, fixed_labels=fixed
        )
        variables = {"params": {"s": jnp.ones(())}, "batch_stats": {}}
        y = jnp.arange(n) % num_classes
        onehot = jax.nn.one_hot(y, num_classes)
        batch = _batch(onehot, y, onehot, y)
        update = jax.jit(rule.update)
        for seed in range(3):
            state = rule.init(variables, key=jax.random.key(seed))
            _, _, metrics = update(variables, state, batch, key=jax.random.key(seed))
            assert float(metrics["loss"]) > margin / 2 - margin / (4 * n)


def _linear_problem():
    k = jax.random.split(jax.random.key(0), 3)
    variables = {"params": {"w": jax.random.normal(k[0], (6, 5))}, "batch_stats": {}}

    def apply(variables, x, *, train=False):
        del train
        return Outputs(logits=x @ variables["params"]["w"], features=x)

    x = jax.random.normal(k[1], (16, 6))
    y = jax.random.randint(k[2], (16,), 0, 5)
    return apply, variables, _batch(x[:8], y[:8], x[8:], y[8:])


def test_amnesiac_draws_each_examples_wrong_label_once():
    # The same forget batch at two updates (different update keys, shuffled order) gives the same
    # gradient step: the labels belong to the examples, not to the update. Before, the labels
    # were redrawn from the update key at every step.
    apply, variables, batch = _linear_problem()
    rule = rules.amnesiac(apply, num_classes=5, optimizer=optax.sgd(0.1))
    state = rule.init(variables, key=jax.random.key(7))
    update = jax.jit(rule.update)
    perm = jnp.asarray([3, 1, 7, 0, 2, 6, 5, 4])
    shuffled = {
        "forget": jax.tree.map(lambda a: a[perm], batch["forget"]),
        "retain": batch["retain"],
    }
    a, _, _ = update(variables, state, batch, key=jax.random.key(1))
    b, _, _ = update(variables, state, shuffled, key=jax.random.key(2))
    np.testing.assert_allclose(a["params"]["w"], b["params"]["w"], rtol=1e-5, atol=1e-6)
    # Another seed draws other labels; the redraw option reproduces the old per-update draws.
    other = rule.init(variables, key=jax.random.key(8))
    c, _, _ = update(variables, other, batch, key=jax.random.key(1))
    assert not np.allclose(a["params"]["w"], c["params"]["w"])
    redraw = rules.amnesiac(apply, num_classes=5, fixed_labels=False, optimizer=optax.sgd(0.1))
    r_state = redraw.init(variables, key=jax.random.key(7))
    d, _, _ = jax.jit(redraw.update)(variables, r_state, batch, key=jax.random.key(1))
    e, _, _ = jax.jit(redraw.update)(variables, r_state, batch, key=jax.random.key(2))
    assert not np.allclose(d["params"]["w"], e["params"]["w"])


def test_amnesiac_labels_belong_to_the_rows_of_the_batches_fit_draws():
    # Batches drawn from a stream carry each example's row ("index"); the wrong label is a
    # function of the row, not of the input: 64 forget examples with identical inputs get
    # independent labels (the reference relabels each example with its own draw), and an
    # augmented view of a row keeps its label. Before, the label was a hash of the input bits,
    # so equal inputs shared one label and an augmented input got another.
    from jaxunlearn.rules.amnesiac import fixed_wrong_labels
    from jaxunlearn.train import make_stream
    from jaxunlearn.train.loop import sample_batch

    n, num_classes = 64, 5
    x = np.zeros((2 * n, 3), np.float32)  # every input the same
    y = np.zeros((2 * n,), np.int32)
    stream = make_stream(x, y, {"forget": np.arange(n), "retain": np.arange(n, 2 * n)})
    key = jax.random.key(3)
    labels = jax.jit(fixed_wrong_labels, static_argnums=2)
    by_row = {}
    for step in range(3):  # three epochs of the forget part, each in another order
        part = sample_batch(stream, {"forget": 16, "retain": 16}, jax.random.key(0), step)["forget"]
        drawn = np.asarray(labels(key, part, num_classes))
        for row, label in zip(np.asarray(part["index"]), drawn, strict=True):
            assert by_row.setdefault(int(row), int(label)) == label
    assert len(by_row) == 48 and 0 not in set(by_row.values())
    assert len(set(by_row.values())) == num_classes - 1  # identical inputs, independent labels
    part = sample_batch(stream, {"forget": 16}, jax.random.key(0), 0)["forget"]
    augmented = {**part, "x": part["x"] + jax.random.normal(jax.random.key(1), part["x"].shape)}
    np.testing.assert_array_equal(labels(key, part, num_classes), labels(key, augmented, 5))


def test_amnesiac_needs_the_rows_of_a_hand_built_batch():
    apply, variables, batch = _linear_problem()
    rule = rules.amnesiac(apply, num_classes=5)
    state = rule.init(variables, key=jax.random.key(0))
    no_rows = {**batch, "forget": {k: v for k, v in batch["forget"].items() if k != "index"}}
    with pytest.raises(ValueError, match="no 'index'"):
        rule.update(variables, state, no_rows, key=jax.random.key(1))
    # The per-update redraw needs no rows.
    redraw = rules.amnesiac(apply, num_classes=5, fixed_labels=False)
    redraw.update(variables, redraw.init(variables, key=jax.random.key(0)), no_rows,
                  key=jax.random.key(1))  # fmt: skip
