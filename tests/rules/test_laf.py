"""Label-Agnostic Forgetting: its three phases, the VAE hand-off, the fixed head, no labels."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import smoke_test_rule

from jaxunlearn import data, models, rules
from jaxunlearn.core.combinators import PhasesState
from jaxunlearn.rules import laf


@functools.cache
def _untrained():
    """A tiny untrained MLP on `digits` and one (forget, retain) batch."""
    ds = data.load("digits")
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(8,)
    )
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    batch = {"forget": {"x": x[:16], "y": y[:16]}, "retain": {"x": x[16:48], "y": y[16:48]}}
    return net, net.init(jax.random.key(0)), batch


def _run(rule, variables, batch, steps):
    update = jax.jit(rule.update)
    state, history = rule.init(variables, key=jax.random.key(0)), []
    for i in range(steps):
        variables, state, metrics = update(variables, state, batch, key=jax.random.key(i))
        history.append((variables, state, metrics))
    return history


def _same(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_phases_vae_then_extractor_then_head_repair():
    net, variables, batch = _untrained()
    # 9 updates: 3 fit the VAEs, 4 unlearn the extractor, 2 repair the head.
    rule = rules.make(
        "label_agnostic_forgetting", net, num_steps=9, repair=True, repair_fraction=0.2
    )
    history = _run(rule, variables, batch, 9)
    assert [int(m["phase"]) for _, _, m in history] == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    for v, _, m in history[:3]:  # the VAE phase leaves the model alone and fits the VAEs
        assert _same(v, variables) and float(m["vae_loss"]) > 0
    assert float(history[2][2]["vae_loss"]) < float(history[0][2]["vae_loss"])
    state = history[-1][1]
    assert isinstance(state, PhasesState) and int(state.step.count) == 9
    vaes, extractor, _ = state.phases
    # The extractor phase got the fitted VAEs (not the ones drawn at init) and froze them.
    assert _same(extractor.vaes, vaes.vaes)
    assert not _same(extractor.vaes, rule.init(variables, key=jax.random.key(0)).phases[0].vaes)
    assert _same(extractor.reference, variables)
    after_extractor = history[6][0]["params"]
    assert _same(after_extractor["head"], variables["params"]["head"])
    assert not _same(after_extractor["layers"], variables["params"]["layers"])
    final = history[-1][0]["params"]  # the repair moves the head only
    assert _same(
        {k: v for k, v in final.items() if k != "head"},
        {k: v for k, v in after_extractor.items() if k != "head"},
    )
    assert not _same(final["head"], after_extractor["head"])


def test_head_stays_fixed_whatever_the_extractor_optimizer():
    net, variables, batch = _untrained()
    decayed = {"weight_decay": 0.5}  # decay alone would move the head
    rule = rules.make(
        "label_agnostic_forgetting", net, num_steps=4, ue_optimizer=decayed, ra_optimizer=decayed
    )
    final = _run(rule, variables, batch, 4)[-1][0]["params"]
    assert _same(final["head"], variables["params"]["head"])
    assert not _same(final["layers"], variables["params"]["layers"])


def test_never_reads_labels():
    net, variables, batch = _untrained()
    rule = rules.make("label_agnostic_forgetting", net, num_steps=4)
    garbage = {p: {"x": batch[p]["x"], "y": jnp.full_like(batch[p]["y"], -1)} for p in batch}
    with_labels = _run(rule, variables, batch, 4)[-1][0]  # 1 VAE step, then 3 extractor steps
    without_labels = _run(rule, variables, garbage, 4)[-1][0]
    assert float(optax.tree.norm(optax.tree.sub(with_labels["params"], variables["params"]))) > 0
    assert _same(with_labels, without_labels)


@pytest.mark.parametrize("output", ["sigmoid", "linear"])
def test_the_vae_phase_fits_the_references_sigmoid_decoder(output):
    # The default decoder ends in a sigmoid as the reference's; "linear" is the earlier one.
    net, variables, batch = _untrained()
    hparams = {} if output == "sigmoid" else {"decoder_output": "linear"}
    rule = rules.make("label_agnostic_forgetting", net, num_steps=4, **hparams)
    state = rule.init(variables, key=jax.random.key(0))
    key = jax.random.key(3)
    _, _, metrics = jax.jit(rule.update)(variables, state, batch, key=key)
    vaes = state.phases[0].vaes
    n_r = batch["retain"]["x"].shape[0]
    e = net.apply(variables, jnp.concatenate([batch["retain"]["x"], batch["forget"]["x"]]))
    noise = jax.random.normal(key, (e.features.shape[0], 8))
    want = laf.vae_loss(
        vaes["retain"], e.features[:n_r], noise[:n_r], 0.025, output
    ) + laf.vae_loss(vaes["forget"], e.features[n_r:], noise[n_r:], 0.025, output)
    np.testing.assert_allclose(float(metrics["vae_loss"]), float(want), rtol=1e-5)
    recon, _, _ = laf.apply_vae(vaes["retain"], e.features, noise, output)
    if output == "sigmoid":
        assert float(jnp.min(recon)) > 0 and float(jnp.max(recon)) < 1


def test_an_embedding_function_replaces_the_features():
    net, variables, batch = _untrained()

    def pre_activation(apply, variables, x, train):
        # The hidden layer's pre-activation of the one-layer MLP: x @ W + b.
        layer = variables["params"]["layers"]["0"]
        return x.reshape(x.shape[0], -1) @ layer["kernel"] + layer["bias"]

    rule = rules.make("label_agnostic_forgetting", net, num_steps=4, embedding=pre_activation)
    history = _run(rule, variables, batch, 4)
    assert all(np.isfinite(float(m["vae_loss"] + m["ue_loss"])) for _, _, m in history)
    assert not _same(history[-1][0], variables)


def test_vae_loss_and_reconstruction_energy_on_hand_made_inputs():
    params = laf.init_vae(jax.random.key(0), 4, hidden=(3,), latent_dim=2)
    x, noise = jnp.ones((5, 4)), jnp.zeros((5, 2))
    recon, mu, logvar = laf.apply_vae(params, x, noise)
    assert recon.shape == (5, 4) and mu.shape == logvar.shape == (5, 2)
    mse = float(jnp.sum(jnp.square(recon - x)) / 5)
    kl = float(-0.5 * jnp.sum(logvar + 1.0 - jnp.square(mu) - jnp.exp(logvar)) / 5)
    np.testing.assert_allclose(
        float(laf.vae_loss(params, x, noise, 0.5)), mse + 0.5 * kl, rtol=1e-5
    )
    # g(e, e) = n * exp(0); far reconstructions approach n * e.
    e = jnp.zeros((3, 4))
    np.testing.assert_allclose(float(laf.reconstruction_energy(e, e)), 3.0)
    assert 3 * np.e - 1e-3 < float(laf.reconstruction_energy(e + 1e3, e)) < 3 * np.e


@pytest.mark.parametrize(
    "hparams, match",
    [
        ({"vae_fraction": 1.0}, "vae_fraction"),
        ({"repair": True, "repair_fraction": 0.9}, "repair_fraction"),
        ({"temperature": 0.0}, "temperature"),
        ({"vae_learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_rejects_bad_settings(hparams, match):
    net, _, _ = _untrained()
    with pytest.raises(ValueError, match=match):
        rules.make("label_agnostic_forgetting", net, num_steps=10, **hparams)


def test_rejects_a_missing_head():
    net, variables, _ = _untrained()
    rule = rules.make("label_agnostic_forgetting", net, num_steps=10, head_key="fc2")
    with pytest.raises(ValueError, match="head"):
        rule.init(variables, key=jax.random.key(0))


def test_label_agnostic_forgetting_smoke_with_repair():
    smoke_test_rule("label_agnostic_forgetting", repair=True)
