"""SalUn and WAGLE: a scored mask over any inner rule object, built with the outer rule's context.

Everything runs jitted on a tiny untrained MLP and hand-made batches (no training).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models, rules
from jaxunlearn.rules.random_label import random_label_num_steps
from jaxunlearn.rules.salun import masked_num_steps

NUM_CLASSES, IN_DIM = 4, 6
NET = models.make_network("mlp", input_shape=(IN_DIM,), num_outputs=NUM_CLASSES, hidden=(8,))
VARIABLES = NET.init(jax.random.key(0))
KEY = jax.random.key(1)


def _batches(num: int, forget_class: int = 0, size: int = 8):
    """``num`` batches: forget examples of one class, retain examples of the others."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(num):
        xf = rng.normal(size=(size, IN_DIM)) + 2.0
        xr = rng.normal(size=(2 * size, IN_DIM))
        yr = rng.integers(1, NUM_CLASSES, 2 * size)
        out.append(
            {
                "forget": {
                    "x": jnp.asarray(xf, jnp.float32),
                    "y": jnp.full((size,), forget_class, jnp.int32),
                },
                "retain": {"x": jnp.asarray(xr, jnp.float32), "y": jnp.asarray(yr, jnp.int32)},
            }
        )
    return out


def _run(rule, batches, variables=VARIABLES, key=KEY):
    """Runs ``rule`` jitted over ``batches``; returns the variables, state and metrics."""
    state = rule.init(variables, key=key)
    update = jax.jit(rule.update)
    history = []
    for i, batch in enumerate(batches):
        variables, state, metrics = update(variables, state, batch, key=jax.random.fold_in(key, i))
        history.append(metrics)
    return variables, state, history


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_equal(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


CONTEXT = {"forget_fraction": 0.02, "forget_classes": (0,)}


@pytest.mark.parametrize(
    "inner",
    [
        {"name": "finetune", "hparams": {"learning_rate": 0.05}},  # SGD, momentum, weight decay
        {
            "name": "finetune",
            "hparams": {"learning_rate": 0.01, "optimizer": {"name": "adam", "weight_decay": 5e-4}},
        },
    ],
)
def test_salun_holds_masked_weights_bit_identical(inner):
    rule = rules.make("salun", NET, num_steps=10, mask_steps=2, mask_fraction=0.3, inner=inner)
    variables, state, history = _run(rule, _batches(10))
    mask = _leaves(state.phases[1].mask)
    assert sum(m.sum() for m in mask) == int(0.3 * sum(m.size for m in mask))
    for m, before, after in zip(
        mask, _leaves(VARIABLES["params"]), _leaves(variables["params"]), strict=True
    ):
        np.testing.assert_array_equal(before[~m], after[~m])
        assert np.any(before[m] != after[m])
    assert [float(h["phase"]) for h in history] == [0, 0] + [1] * 8


def test_salun_with_full_mask_equals_random_label_at_salun_rate():
    # The default inner rule is SalUn's random labelling at lr 0.013, started after scoring.
    batches = _batches(6)
    salun = rules.make("salun", NET, num_steps=6, mask_fraction=1.0, mask_steps=2)
    s_vars, _, history = _run(salun, batches)
    assert [float(h["phase"]) for h in history] == [0, 0, 1, 1, 1, 1]
    plain = rules.random_label(NET.apply, num_classes=NUM_CLASSES, learning_rate=0.013)
    state = plain.init(VARIABLES, key=None)
    p_vars, update = VARIABLES, jax.jit(plain.update)
    for i, batch in enumerate(batches[2:], start=2):
        p_vars, state, _ = update(p_vars, state, batch, key=jax.random.fold_in(KEY, i))
    _assert_equal(s_vars, p_vars)


def _unmasked_equals_plain(name: str, steps: int = 3, mask_steps: int = 2, **hparams):
    """SalUn over inner rule ``name`` with a full mask, against the plain rule after scoring."""
    batches = _batches(mask_steps + steps)
    salun = rules.make(
        "salun",
        NET,
        num_steps=mask_steps + steps,
        mask_fraction=1.0,
        mask_steps=mask_steps,
        inner={"name": name, "hparams": hparams} if hparams else name,
        **CONTEXT,
    )
    s_vars, _, history = _run(salun, batches)
    plain = rules.make(name, NET, num_steps=steps, **CONTEXT, **hparams)
    p_vars, _, plain_history = _run(plain, batches[mask_steps:])
    _assert_equal(s_vars, p_vars)
    return history, plain_history


def test_salun_over_ssd_gets_the_forget_fraction():
    # Raised "needs `forget_fraction`" when SalUn looked its inner rule up by name.
    history, _ = _unmasked_equals_plain("ssd")
    assert float(history[-1]["dampened_fraction"]) > 0  # selection needs alpha * rho < 1


def test_salun_over_influence_unlearning_gets_the_forget_fraction():
    history, _ = _unmasked_equals_plain("influence_unlearning")
    assert float(history[-1]["step_norm"]) > 0


def test_salun_over_unsir_gets_its_context():
    # UNSIR needs the schedule and the input shape, which the builder carries from the network.
    rule = rules.make(
        "salun",
        NET,
        num_steps=6,
        steps_per_epoch=2,
        mask_steps=2,
        inner="unsir",
        **CONTEXT,
    )
    variables, state, history = _run(rule, _batches(4))
    assert "noise_loss" in history[-1]
    assert all(np.all(np.isfinite(x)) for x in _leaves(variables))
    # UNSIR's first updates learn noise and leave the model alone.
    _assert_equal(variables, VARIABLES)


def test_salun_over_fisher_forgetting_keeps_the_class_wise_edit():
    # The edit resets the forgotten class's output weights to mean 0 (variance 1e-3); with a tiny
    # alpha the Fisher noise of every other weight is negligible. SalUn used to drop the edit.
    c = CONTEXT["forget_classes"][0]
    rule = rules.make(
        "salun",
        NET,
        num_steps=3,
        mask_steps=2,
        mask_fraction=1.0,
        inner={"name": "fisher_forgetting", "hparams": {"alpha": 1e-8}},
        **CONTEXT,
    )
    variables, _, _ = _run(rule, _batches(3))
    delta = np.abs(
        np.asarray(variables["params"]["head"]["kernel"])
        - np.asarray(VARIABLES["params"]["head"]["kernel"])
    )
    others = np.delete(delta, c, axis=-1)
    assert delta[:, c].mean() > 10 * others.max()


def test_salun_takes_a_rule_object():
    ssd = rules.ssd(NET.apply, forget_fraction=0.02)
    rule = rules.salun(NET.apply, num_classes=NUM_CLASSES, inner=ssd, mask_steps=1)
    _, _, history = _run(rule, _batches(2))
    assert float(history[-1]["dampened_fraction"]) > 0
    with pytest.raises(ValueError, match="builder"):
        rules.salun(NET.apply, num_classes=NUM_CLASSES, inner="ssd")


def test_weight_attribution_mask_default_inner_is_grad_diff_with_equal_weights():
    # WAGLE's configs run GradDiff, -L_forget + 1.0 * L_retain; the old default was NegGrad+
    # with beta = 0.999, which barely forgets.
    batches = _batches(5)
    wagle = rules.make("weight_attribution_mask", NET, num_steps=5, mask_fraction=1.0, mask_steps=2)
    w_vars, _, _ = _run(wagle, batches)
    plain = rules.make("grad_diff", NET)
    p_vars, _, history = _run(plain, batches[2:])
    _assert_equal(w_vars, p_vars)
    np.testing.assert_allclose(
        float(history[0]["loss"]),
        float(history[0]["retain_loss"] - history[0]["forget_loss"]),
        rtol=1e-6,
    )


def test_weight_attribution_mask_keeps_wagles_fraction_of_weights():
    rule = rules.make("weight_attribution_mask", NET, num_steps=4, mask_steps=2)
    _, state, _ = _run(rule, _batches(4))
    mask = _leaves(state.phases[1].mask)
    assert sum(m.sum() for m in mask) == int(0.95 * sum(m.size for m in mask))


@pytest.mark.parametrize("name", ["salun", "weight_attribution_mask"])
def test_mask_is_scored_over_one_pass_of_the_forget_set_by_default(name):
    # The references score the whole forget set; the old default was 8 batches whatever its size.
    rule = rules.make(name, NET, num_steps=6, forget_steps_per_epoch=3, **CONTEXT)
    _, _, history = _run(rule, _batches(6))
    assert [float(h["phase"]) for h in history] == [0, 0, 0, 1, 1, 1]
    fallback = rules.make(name, NET, num_steps=10, **CONTEXT)
    _, _, history = _run(fallback, _batches(10))
    assert [float(h["phase"]) for h in history] == [0] * 8 + [1, 1]


def test_masked_num_steps_adds_the_scoring_pass_to_the_inner_run():
    assert masked_num_steps(100, forget_steps_per_epoch=9) == 109
    assert masked_num_steps(100, forget_steps_per_epoch=9, mask_steps=2) == 102
    assert masked_num_steps(100) == 108  # no context: 8 scoring batches
    assert masked_num_steps(random_label_num_steps(2, 2, 1), forget_steps_per_epoch=1) == 7


def test_salun_sequential_mode_runs_the_reference_epoch_after_scoring():
    # One scoring pass over the forget set (1 update), then two sequential RL epochs of a forget
    # pass (1 update) and a retain pass (2 updates), with the full mask equal to plain RL.
    context = dict(steps_per_epoch=2, forget_steps_per_epoch=1, **CONTEXT)
    batches = _batches(7)
    salun = rules.make("salun", NET, num_steps=7, mask_fraction=1.0, mode="sequential", **context)
    s_vars, _, history = _run(salun, batches)
    assert [float(h["forget_pass"]) for h in history[1:]] == [1, 0, 0, 1, 0, 0]
    plain = rules.make("random_label", NET, num_steps=6, mode="sequential",
                       learning_rate=0.013, **context)  # fmt: skip
    state = plain.init(VARIABLES, key=None)
    p_vars, update = VARIABLES, jax.jit(plain.update)
    for i, batch in enumerate(batches[1:], start=1):
        p_vars, state, _ = update(p_vars, state, batch, key=jax.random.fold_in(KEY, i))
    _assert_equal(s_vars, p_vars)
    with pytest.raises(ValueError, match="whole number of epochs"):
        rules.make("salun", NET, num_steps=8, mode="sequential", **context)


def test_default_inner_options_are_rejected_next_to_an_explicit_inner():
    with pytest.raises(ValueError, match="default inner rule"):
        rules.make("salun", NET, num_steps=10, inner="finetune", mode="sequential")
    with pytest.raises(ValueError, match="default inner rule"):
        rules.make("weight_attribution_mask", NET, num_steps=10, inner="finetune", train_mode=False)


def test_bad_settings_are_rejected():
    for fraction in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="mask_fraction"):
            rules.make("salun", NET, num_steps=10, mask_fraction=fraction)
    with pytest.raises(ValueError, match="mask_steps"):
        rules.make("salun", NET, num_steps=4, mask_steps=4)
    with pytest.raises(ValueError, match="mask_steps"):
        rules.make("weight_attribution_mask", NET, num_steps=10, mask_steps=0)
    with pytest.raises(ValueError, match="hessian_scale"):
        rules.make("weight_attribution_mask", NET, num_steps=10, hessian_scale=0.0)
    with pytest.raises(ValueError, match="no hyperparameter"):
        rules.make("salun", NET, num_steps=10, inner={"name": "ssd", "hparams": {"lr": 1.0}})
