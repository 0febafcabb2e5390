import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import ensemble
from jaxunlearn.core import losses
from jaxunlearn.unlearnable import evaluate


def test_protected_subsets_have_the_right_size_and_are_nested():
    key = jax.random.key(0)
    half = evaluate.protected_subset(10, 0.5, key=key)
    most = evaluate.protected_subset(10, 0.8, key=key)
    assert half.sum() == 5 and most.sum() == 8 and np.all(most[half])
    assert evaluate.protected_subset(10, 0.0, key=key).sum() == 0
    for bad in (-0.2, 1.2, float("nan")):
        with pytest.raises(ValueError, match="`fraction` must be"):
            evaluate.protected_subset(10, bad, key=key)


def test_mix_takes_protected_rows_where_the_mask_says():
    clean, prot = np.zeros((3, 2, 2, 1)), np.ones((3, 2, 2, 1))
    out = evaluate.mix(clean, prot, [True, False, True])
    np.testing.assert_array_equal(out[:, 0, 0, 0], [1, 0, 1])


def test_dct_is_orthonormal_and_jpeg_keeps_flat_images():
    d = evaluate.dct_matrix()
    np.testing.assert_allclose(d @ d.T, np.eye(8), atol=1e-6)
    # A flat block has only a DC coefficient; 128/255 maps to 0 after the level shift, and any
    # grey maps to a multiple of the DC step: exact for 0, 128/255 and 1 at quality 50 (DC step
    # 16 divides 8 * 128 = 1024 and 8 * (1 - 128/255) * 255 = 1016 rounds to 1024 -> clipped).
    flat = jnp.full((2, 8, 8, 1), 128 / 255)
    np.testing.assert_allclose(evaluate.jpeg_compress(flat, quality=50), flat, atol=1e-6)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    hi, lo = evaluate.jpeg_compress(x, quality=100), evaluate.jpeg_compress(x, quality=5)
    assert float(jnp.abs(hi - x).max()) < 3 / 255  # quality 100: quantisation step 1
    assert float(jnp.abs(lo - x).mean()) > 5 * float(jnp.abs(hi - x).mean())
    assert evaluate.jpeg_compress(jnp.zeros((1, 9, 10, 3))).shape == (1, 9, 10, 3)  # padded
    with pytest.raises(ValueError, match="quality"):
        evaluate.jpeg_table(0)


def test_augmentation_shifts_and_cuts_out():
    x = jnp.ones((4, 8, 8, 1))
    out = evaluate.augment(x, jax.random.key(0))
    assert out.shape == x.shape
    # Cutout blanks at most a 4x4 square (16 pixels) and the shift at most one row and column.
    zeros = np.asarray((out == 0).sum(axis=(1, 2, 3)))
    assert np.all(zeros >= 1) and np.all(zeros <= 16 + 15)


def test_adversarial_examples_raise_the_loss_within_the_budget(digits_small, tiny_net):
    x, y, _, _ = digits_small
    x, y = jnp.asarray(x), jnp.asarray(y)
    v = tiny_net.init(jax.random.key(0))
    adv = evaluate.pgd_max(tiny_net.apply, v, x, y, key=jax.random.key(1), epsilon=0.1, steps=5)
    assert float(jnp.abs(adv - x).max()) <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    before = losses.cross_entropy(tiny_net.apply(v, x).logits, y)
    assert float(losses.cross_entropy(tiny_net.apply(v, adv).logits, y)) > float(before)


def test_victims_train_per_dataset_and_seed_and_early_stopping_keeps_the_best(
    digits_small, tiny_net
):
    x, y, xt, yt = digits_small
    keys = ensemble.seed_keys(2)
    # Dataset 1 is the training set with every image blanked: nothing to learn there.
    rule = evaluate.victim_rule(tiny_net, "none", learning_rate=0.1)
    res = evaluate.train_victims(
        tiny_net, rule, [x, np.zeros_like(x)], y, keys=keys, epochs=8, batch_size=20
    )
    acc = evaluate.test_accuracy(tiny_net, res.variables, xt, yt).reshape(2, 2)
    assert acc[0].min() > 60 and acc[1].max() < 30
    spe = evaluate.victim_steps_per_epoch(len(y), 20)
    stop = evaluate.victim_rule(
        tiny_net, "early_stopping", learning_rate=0.1, validation=(xt, yt), steps_per_epoch=spe
    )
    best = evaluate.train_victims(tiny_net, stop, [x], y, keys=keys, epochs=8, batch_size=20)
    # The kept weights are an epoch's, scored on the validation set (here: the test data).
    assert evaluate.test_accuracy(tiny_net, best.variables, xt, yt).min() >= acc[0].min() - 5
    with pytest.raises(ValueError, match="Unknown countermeasure 'dropout'"):
        evaluate.victim_rule(tiny_net, "dropout")
    with pytest.raises(ValueError, match="needs `validation`"):
        evaluate.victim_rule(tiny_net, "early_stopping")
