"""Token-level losses: the language-model conventions every LM rule and audit reads."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core import losses

IGN = losses.IGNORE_INDEX


def _case():
    logits = jax.random.normal(jax.random.key(0), (2, 4, 5))
    labels = jnp.array([[IGN, 1, 2, IGN], [3, IGN, IGN, IGN]])
    return logits, labels


def test_token_log_probs_pick_targets_and_zero_ignored_positions():
    logits, labels = _case()
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    got = np.asarray(losses.token_log_probs(logits, labels))
    want = np.zeros((2, 4))
    want[0, 1], want[0, 2], want[1, 0] = logp[0, 1, 1], logp[0, 2, 2], logp[1, 0, 3]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(losses.sequence_log_prob(logits, labels), want.sum(-1), rtol=1e-6)
    np.testing.assert_array_equal(losses.answer_lengths(labels), [2.0, 1.0])


def test_supervised_losses_on_tokens_are_hugging_face_means():
    logits, labels = _case()
    logp = np.asarray(losses.token_log_probs(logits, labels))
    np.testing.assert_allclose(losses.supervised(logits, labels), -logp.sum() / 3, rtol=1e-6)
    per = losses.per_example_supervised(logits, labels)
    np.testing.assert_allclose(per, [-logp[0].sum() / 2, -logp[1].sum() / 1], rtol=1e-6)


def test_token_accuracy_counts_target_tokens_only():
    labels = jnp.array([[IGN, 1, 2, IGN]])
    logits = jax.nn.one_hot(jnp.array([[0, 1, 0, 4]]), 5)  # right at t=1, wrong at t=2
    assert float(losses.accuracy(logits, labels)) == 0.5
