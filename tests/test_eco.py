"""ECO prompts: the classifier's threshold, corruption of flagged inputs only, weights untouched,
the zeroth-order step, and generation through the guarded network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import tiny_lm_problem

from jaxunlearn import rules
from jaxunlearn.models import eco, generation


def _blobs():
    rng = np.random.default_rng(0)
    forget = rng.normal(size=(20, 6)) + np.array([4.0, 0, 0, 0, 0, 0])
    retain = rng.normal(size=(30, 6)) - np.array([4.0, 0, 0, 0, 0, 0])
    return forget, retain


def test_classifier_threshold():
    forget, retain = _blobs()
    clf = eco.fit_prompt_classifier(forget, retain, threshold=0.5)
    p_f, p_r = eco.forget_probability(clf, forget), eco.forget_probability(clf, retain)
    assert float(p_f.min()) > 0.5 > float(p_r.max())  # separable along the first axis
    assert bool(eco.flagged(clf, forget).all()) and not bool(eco.flagged(clf, retain).any())
    # The threshold is a cut on P(forget): 1 flags nothing, 0 everything with P > 0.
    assert not bool(eco.flagged(clf._replace(threshold=1.0), forget).any())
    assert bool(eco.flagged(clf._replace(threshold=0.0), retain).all())
    cut = float(np.median(np.asarray(p_f)))
    assert int(eco.flagged(clf._replace(threshold=cut), forget).sum()) == 10
    for bad in (1.5, -0.1, True):
        with pytest.raises(ValueError, match="threshold"):
            eco.fit_prompt_classifier(forget, retain, threshold=bad)


def test_zeroth_order_step_by_hand():
    # f = (sigma - 3)^2 from 1 with eps 0.5: g = (f(1.5) - f(0.5)) / 1 = 2.25 - 6.25 = -4, so
    # sigma <- 1 - 0.25 * (-4) = 2, and f falls from 4 to 1.
    history = eco.zeroth_order_sigma(
        lambda s: (s - 3.0) ** 2, 1.0, learning_rate=0.25, steps=1, eps=0.5
    )
    np.testing.assert_allclose(history["sigma"], [1.0, 2.0])
    np.testing.assert_allclose(history["objective"], [4.0, 1.0])
    # ECO's floor: sigma never drops below its start (sigma_min defaults to it).
    down = eco.zeroth_order_sigma(lambda s: s, 1.0, learning_rate=10.0, steps=2, eps=0.5)
    assert down["sigma"] == [1.0, 1.0, 1.0]
    stopped = eco.zeroth_order_sigma(lambda s: -s, 1.0, learning_rate=1.0, steps=5, stop_below=0)
    assert len(stopped["sigma"]) == 1


@functools.cache
def _fitted():
    net, variables, stream = tiny_lm_problem(trained=True)
    f, r = stream.index["forget"], stream.index["retain"]
    before = jax.tree.map(np.array, variables)
    fit = eco.fit_eco(
        net,
        variables,
        (stream.x[f], stream.y[f]),
        (stream.x[r], stream.y[r]),
        sigma=0.05,
        learning_rate=0.5,
        steps=2,
    )
    return net, variables, stream, fit, before


def test_fit_eco_guards_flagged_inputs_only_and_leaves_the_weights():
    net, variables, stream, fit, before = _fitted()
    x = jnp.asarray(stream.x)
    # The zeroth-order steps lowered the forget answers' log-probability.
    assert fit.history["objective"][-1] < fit.history["objective"][0]
    assert fit.history["sigma"][-1] > fit.history["sigma"][0]
    assert fit.history["flag_rate_forget"] > fit.history["flag_rate_retain"]
    spec = net.spec
    features = net.apply(variables, x).features
    flags = np.asarray(eco.flagged(fit.guard.classifier, features))
    assert flags.any() and not flags.all()
    offset = np.asarray(fit.network.apply.prompt_embed_offset(variables, x))
    assert np.all(offset[~flags] == 0)
    # Flagged rows: every non-pad position but the last is corrupted.
    lengths = (np.asarray(x) != spec.pad_id).sum(1)
    for row in np.flatnonzero(flags):
        corrupted = np.any(offset[row] != 0, -1)
        assert corrupted[: lengths[row] - 1].all() and not corrupted[lengths[row] - 1 :].any()
    plain = jax.jit(net.apply)(variables, x).logits
    guarded = jax.jit(fit.network.apply)(variables, x).logits
    np.testing.assert_allclose(guarded[~flags], plain[~flags], atol=1e-5)
    assert float(jnp.abs(guarded[flags] - plain[flags]).max()) > 1e-2
    # The weights are bitwise those the guard was fitted on, and ECO is no registered rule.
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(before), strict=True):
        assert np.array_equal(np.asarray(a), b)
    assert not any("eco" in name for name in rules.names())


def test_generation_applies_the_corruption_in_the_prefill():
    net, variables, stream, fit, _ = _fitted()
    prompts = eco.prompts_of(stream.x, stream.y)[:, :4]
    kwargs = {"key": jax.random.key(0), "max_new_tokens": 3}
    offset = fit.network.apply.prompt_embed_offset(variables, prompts)
    guarded = generation.generate(fit.network, variables, prompts, **kwargs).tokens
    explicit = generation.generate(net, variables, prompts, prompt_embed_offset=offset, **kwargs)
    plain = generation.generate(net, variables, prompts, **kwargs).tokens
    np.testing.assert_array_equal(guarded, explicit.tokens)
    flags = np.asarray(jnp.any(offset != 0, (1, 2)))
    np.testing.assert_array_equal(guarded[~flags], plain[~flags])
    # Greedy decoding of the guarded model = teacher-forced argmax of its apply on the prompt.
    first = jax.jit(fit.network.apply)(variables, jnp.asarray(prompts)).logits[:, 3].argmax(-1)
    np.testing.assert_array_equal(guarded[:, 0, 0], first)
    with pytest.raises(ValueError, match="prompt_embed_offset"):
        generation.generate(net, variables, prompts, prompt_embed_offset=offset[:, :2], **kwargs)


def test_bad_settings():
    net, variables, stream, _, _ = _fitted()
    f = stream.index["forget"]
    part = (stream.x[f], stream.y[f])
    with pytest.raises(ValueError, match="threshold"):
        eco.fit_eco(net, variables, part, part, threshold=2.0)
    with pytest.raises(ValueError, match="dims"):
        eco.fit_eco(net, variables, part, part, dims=net.spec.d_model + 1)
