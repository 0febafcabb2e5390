"""UnSTAR's anti-sample rule on the tiny memorised QA model."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import lm_batch, tiny_lm_problem

from jaxunlearn import rules
from jaxunlearn.core import losses

# The module (``rules.anti_sample`` is the factory it registers).
anti = importlib.import_module("jaxunlearn.rules.anti_sample")


def test_still_known_and_row_nll_hand_computed():
    # Two rows, vocabulary 3; row 0's targets (2, 1) are the argmax, row 1's second is not.
    logits = jnp.log(jnp.array([
        [[0.1, 0.2, 0.7], [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]],
        [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]],
    ]))  # fmt: skip
    ignore = losses.IGNORE_INDEX
    labels = jnp.array([[2, 1, ignore], [2, 1, ignore]])
    np.testing.assert_array_equal(anti.still_known(logits, labels), [True, False])
    nll, has = anti.row_nll(logits, labels)
    np.testing.assert_allclose(nll, [-(np.log(0.7) + np.log(0.5)) / 2,
                                     -(np.log(0.7) + np.log(0.3)) / 2], rtol=1e-5)  # fmt: skip
    empty = jnp.full((1, 3), ignore)
    assert not bool(anti.still_known(logits[:1], empty)[0])
    assert not bool(anti.row_nll(logits[:1], empty)[1][0])


def _run(rule, variables, batch, steps):
    state = rule.init(variables, key=jax.random.key(0))
    update = jax.jit(rule.update)
    history = []
    for i in range(steps):
        variables, state, metrics = update(variables, state, batch, key=jax.random.key(i))
        history.append({k: float(v) for k, v in metrics.items()})
    return variables, {k: np.array([m[k] for m in history]) for k in history[0]}


def test_anti_samples_replace_the_forget_answers_and_the_filter_stops_the_pull():
    net, variables, stream = tiny_lm_problem()
    batch = {"forget": lm_batch(stream, "forget"), "retain": lm_batch(stream, "retain", 8)}
    f = batch["forget"]
    rule = rules.anti_sample(net.apply, learning_rate=0.02, optimizer={"name": "adam"})
    new, metrics = _run(rule, variables, batch, 12)
    # Step 0: every forget answer is still known, so the loss is the plain mean row NLL.
    nll, _ = anti.row_nll(net.apply(variables, f["anti_x"]).logits, f["anti_y"])
    assert metrics["still_known"][0] == pytest.approx(1.0)
    assert metrics["forget_loss"][0] == pytest.approx(float(jnp.mean(nll)), rel=1e-5)
    # The model learns the anti answers and loses the true ones; once misled, rows stop counting.
    assert metrics["anti_nll"][-1] < metrics["anti_nll"][0] - 1.0
    assert metrics["still_known"][-1] < 0.5
    true_after = anti.still_known(net.apply(new, f["x"]).logits, f["y"])
    assert float(jnp.mean(true_after)) < 0.5
    assert metrics["forget_nll"][-1] > metrics["forget_nll"][0] + 1.0
    # Without the filter the pull continues on every row: the anti answers are learnt further.
    plain = rules.anti_sample(
        net.apply, learning_rate=0.02, optimizer={"name": "adam"}, until_misled=False
    )
    _, unfiltered = _run(plain, variables, batch, 12)
    assert unfiltered["anti_nll"][-1] < metrics["anti_nll"][-1]


def test_missing_fields_and_bad_settings_are_errors():
    net, variables, stream = tiny_lm_problem()
    forget = {k: v for k, v in lm_batch(stream, "forget").items() if not k.startswith("anti")}
    batch = {"forget": forget, "retain": lm_batch(stream, "retain", 8)}
    rule = rules.anti_sample(net.apply, learning_rate=0.02)
    state = rule.init(variables, key=jax.random.key(0))
    with pytest.raises(ValueError, match="anti_x"):
        rule.update(variables, state, batch, key=jax.random.key(0))
    with pytest.raises(ValueError, match="until_misled"):
        rules.anti_sample(net.apply, until_misled=1)
    with pytest.raises(ValueError, match="forget_weight"):
        rules.anti_sample(net.apply, forget_weight=-1.0)
