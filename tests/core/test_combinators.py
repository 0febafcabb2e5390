"""The rule algebra: phases, masks and one-shot edits, on hand-built pytrees (no training)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn.core import (
    MaskScore,
    StepCounter,
    UnlearningRule,
    masked,
    one_shot,
    optim,
    phases,
    rule_from_loss,
    saliency_masked,
    top_fraction_mask,
)
from jaxunlearn.core.combinators import leaf_paths, path_mask
from jaxunlearn.train import fit, make_stream

VARIABLES = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}}
BATCH = {"forget": {"x": jnp.ones((2, 3)), "y": jnp.zeros(2, jnp.int32)}}
KEY = jax.random.key(0)


def _add(value: float, log: list | None = None) -> UnlearningRule:
    """Adds ``value`` to every parameter; counts its own updates (and its executions in ``log``)."""

    def init(variables, *, key=None):
        return StepCounter.zero()

    def update(variables, state, batch, *, key):
        if log is not None:
            jax.debug.callback(lambda: log.append(value))
        params = jax.tree.map(lambda p: p + value, variables["params"])
        return {**variables, "params": params}, state.next(), {f"add_{value:g}": state.count}

    return UnlearningRule(init, update)


def _run(rule, variables, steps, batch=BATCH):
    state = rule.init(variables, key=KEY)
    update = jax.jit(rule.update)
    history = []
    for i in range(steps):
        variables, state, metrics = update(variables, state, batch, key=jax.random.fold_in(KEY, i))
        history.append(jax.tree.map(np.asarray, metrics))
    return variables, state, history


def test_phases_run_each_rule_for_its_length_then_keep_the_last():
    rule = phases((2, _add(1.0)), (3, _add(10.0)))
    variables, state, history = _run(rule, VARIABLES, 7)
    np.testing.assert_array_equal(variables["params"]["b"], 1.0 + 2 * 1.0 + 5 * 10.0)
    assert [float(m["phase"]) for m in history] == [0, 0, 1, 1, 1, 1, 1]
    # The union of the phases' metrics, zero where a phase does not report one; each phase's
    # own counter starts at its first update (its state is re-initialised then).
    assert [int(m["add_10"]) for m in history] == [0, 0, 0, 1, 2, 3, 4]
    assert [int(m["add_1"]) for m in history] == [0, 1, 0, 0, 0, 0, 0]
    assert int(state.step.count) == 7


def test_phases_hand_the_previous_state_to_a_rule_that_asks_for_it():
    def summing():
        def init(variables, *, key=None):
            return jnp.zeros(())

        def update(variables, state, batch, *, key):
            return variables, state + jnp.sum(batch["forget"]["x"]), {}

        return UnlearningRule(init, update)

    def scale_by_previous():
        def init(variables, *, key=None, previous=None):
            return jnp.zeros(()) if previous is None else previous

        def update(variables, state, batch, *, key):
            return (
                {**variables, "params": jax.tree.map(lambda p: p * state, variables["params"])},
                state,
                {},
            )

        return UnlearningRule(init, update)

    variables, state, _ = _run(phases((2, summing()), (None, scale_by_previous())), VARIABLES, 3)
    np.testing.assert_array_equal(state.phases[1], 12.0)  # two batches of six ones
    np.testing.assert_array_equal(variables["params"]["b"], 12.0)


def test_phases_restart_false_keeps_the_state_from_init():
    variables, _, history = _run(
        phases((1, _add(1.0)), (None, _add(2.0)), restart=False), VARIABLES, 3
    )
    assert [int(m["add_2"]) for m in history] == [0, 0, 1]


@pytest.mark.parametrize(
    "schedule",
    [
        (),
        ((0, _add(1.0)), (None, _add(1.0))),
        ((None, _add(1.0)), (2, _add(1.0))),
        ((1.5, _add(1.0)),),
        ((2, "gradient_ascent"),),
    ],
)
def test_phases_reject_bad_schedules(schedule):
    with pytest.raises(ValueError, match="phase|rule|pair"):
        phases(*schedule)


def test_phases_in_an_ensemble_run_only_the_current_phase():
    log = []
    rule = phases((2, _add(1.0, log)), (None, _add(10.0, log)))
    x = np.zeros((8, 3), np.float32)
    stream = make_stream(x, np.zeros(8, np.int32), {"forget": np.arange(8)})
    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    start = jax.tree.map(lambda p: jnp.stack([p] * 3), VARIABLES)
    res = fit(rule, start, stream, batch_sizes={"forget": 2}, num_steps=5, key=keys, ensemble=True)
    jax.effects_barrier()
    # A real switch on the unbatched counter: 2 + 3 executions, not 5 of each phase.
    assert sorted(log) == [1.0, 1.0, 10.0, 10.0, 10.0]
    np.testing.assert_array_equal(res.variables["params"]["b"], np.full((3, 3), 33.0))
    np.testing.assert_array_equal(res.state.step.count, [5, 5, 5])


def test_one_shot_then_repair():
    edit = one_shot(
        lambda v, batch, *, key: ({"params": jax.tree.map(jnp.zeros_like, v["params"])}, {})
    )
    variables, _, _ = _run(phases((1, edit), (None, _add(1.0))), VARIABLES, 3)
    np.testing.assert_array_equal(variables["params"]["w"], np.full((2, 3), 2.0))


def _quadratic_rule(optimizer):
    def loss_fn(variables, batch, *, reference, step, key):
        p = variables["params"]
        return jnp.sum((p["w"] - 10.0) ** 2) + jnp.sum((p["b"] + 3.0) ** 2), {}

    return rule_from_loss(loss_fn, optimizer, keep_reference=False)


def test_masked_holds_masked_weights_exactly_whatever_the_optimizer():
    mask = {"w": jnp.array([[True, False, True], [False, True, False]]), "b": jnp.zeros(3, bool)}
    opt = optim.sgd(0.1, momentum=0.9, weight_decay=0.5)
    variables, state, _ = _run(masked(_quadratic_rule(opt), mask), VARIABLES, 5)
    w0, w = np.asarray(VARIABLES["params"]["w"]), np.asarray(variables["params"]["w"])
    np.testing.assert_array_equal(w[~np.asarray(mask["w"])], w0[~np.asarray(mask["w"])])
    np.testing.assert_array_equal(variables["params"]["b"], VARIABLES["params"]["b"])
    assert np.all(w[np.asarray(mask["w"])] != w0[np.asarray(mask["w"])])
    # Kept weights follow the unmasked run exactly (the optimizer is per-coordinate).
    free, _, _ = _run(_quadratic_rule(opt), VARIABLES, 5)
    np.testing.assert_array_equal(
        w[np.asarray(mask["w"])], np.asarray(free["params"]["w"])[np.asarray(mask["w"])]
    )


def test_masked_rejects_a_mask_of_another_structure():
    rule = masked(_quadratic_rule(optax.sgd(0.1)), {"w": jnp.ones((2, 3), bool)})
    with pytest.raises(ValueError, match="structure"):
        rule.init(VARIABLES, key=KEY)


def test_saliency_masked_scores_then_runs_the_rule_on_the_top_fraction():
    # Score = |sum of batch x| broadcast to the weights' shape: the largest `w` entries win.
    score = MaskScore(
        init=lambda params: jax.tree.map(jnp.zeros_like, params),
        accumulate=lambda v, batch, *, key: jax.tree.map(
            lambda p: p * jnp.sum(batch["forget"]["x"]), v["params"]
        ),
        finalize=lambda total, params: jax.tree.map(jnp.abs, total),
    )
    rule = saliency_masked(
        _quadratic_rule(optax.sgd(0.1)), score=score, fraction=4 / 9, score_steps=2
    )
    variables, state, history = _run(rule, VARIABLES, 2)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), variables, VARIABLES))
    variables, state, history = _run(rule, VARIABLES, 4)
    mask = state.phases[1].mask
    # Scores: w = 0..5 and b = 1,1,1; the top 4 of 9 are w = 5, 4, 3, 2.
    np.testing.assert_array_equal(mask["w"], [[False, False, True], [True, True, True]])
    np.testing.assert_array_equal(mask["b"], [False, False, False])
    np.testing.assert_array_equal(variables["params"]["b"], VARIABLES["params"]["b"])
    assert [float(m["phase"]) for m in history] == [0, 0, 1, 1]


@pytest.mark.parametrize("fraction,steps", [(0.0, 2), (1.5, 2), (0.5, 0), (0.5, 1.5)])
def test_saliency_masked_rejects_bad_settings(fraction, steps):
    score = MaskScore(lambda p: p, lambda v, b, *, key: v["params"], lambda t, p: t)
    with pytest.raises(ValueError):
        saliency_masked(_add(1.0), score=score, fraction=fraction, score_steps=steps)


def test_top_fraction_mask_keeps_exactly_k_with_ties_in_order():
    scores = {"a": jnp.array([3.0, 1.0, 3.0]), "b": jnp.array([jnp.nan, 3.0, 0.5])}
    mask = top_fraction_mask(scores, 0.5)  # k = 3 of 6: the three 3.0s
    np.testing.assert_array_equal(mask["a"], [True, False, True])
    np.testing.assert_array_equal(mask["b"], [False, True, False])


def test_path_mask_selects_leaves_by_dotted_path():
    params = {
        "layers": {
            str(i): {"mlp": {"down_proj": {"kernel": jnp.ones((2, 3))}, "up_proj": {"kernel": 1.0}}}
            for i in range(9)
        },
        "norm": {"scale": jnp.ones(3)},
    }
    assert leaf_paths(params)["layers"]["5"]["mlp"]["down_proj"]["kernel"] == (
        "layers.5.mlp.down_proj.kernel"
    )
    mask = path_mask({"params": params}, r"layers\.(5|6|7)\.mlp\.down_proj\.kernel")
    chosen = {i for i in range(9) if np.all(mask["layers"][str(i)]["mlp"]["down_proj"]["kernel"])}
    assert chosen == {5, 6, 7}
    assert mask["layers"]["5"]["mlp"]["down_proj"]["kernel"].shape == (2, 3)
    assert not np.any(mask["norm"]["scale"]) and not mask["layers"]["5"]["mlp"]["up_proj"]["kernel"]
    # fullmatch: "layers.1" does not select layers 10-19; several patterns are or-ed.
    either = path_mask(params, [r"norm\.scale", r"layers\.1\..*"])
    assert np.all(either["norm"]["scale"]) and not np.any(
        either["layers"]["2"]["mlp"]["down_proj"]["kernel"]
    )
    with pytest.raises(ValueError, match="matches no parameter"):
        path_mask(params, r"layers\.5")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        path_mask(params, "layers.(5")


def test_masked_takes_a_mask_function_evaluated_at_init():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}

    def init(variables, *, key):
        return ()

    def update(variables, state, batch, *, key):
        return jax.tree.map(lambda x: x + 1.0, variables), state, {}

    rule = masked(UnlearningRule(init, update), lambda v: path_mask(v, "b"))
    variables = {"params": params}
    state = rule.init(variables, key=jax.random.key(0))
    new, _, _ = rule.update(variables, state, {}, key=jax.random.key(1))
    np.testing.assert_array_equal(new["params"]["a"], [1.0, 1.0])
    np.testing.assert_array_equal(new["params"]["b"], [2.0, 2.0])
