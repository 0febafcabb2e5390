"""Parameters and optimizer state sharded over a (data, model) mesh of 8 fake CPU devices: the
placement follows the logical axes, and training matches one device."""

import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxunlearn import models, rules
from jaxunlearn.core import losses
from jaxunlearn.models import hf_llama
from jaxunlearn.train import fit, make_stream, sharding

P = PartitionSpec


def _net(vocab_size=64):
    return models.make_network(
        "transformer",
        vocab_size=vocab_size,
        max_len=16,
        d_model=32,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        d_ff=48,
    )


def _spec(shardings, *path):
    node = shardings["params"]
    for key in path:
        node = node[key]
    return node.spec


def test_param_shardings_follow_logical_axes_and_skip_indivisible_dims():
    mesh = sharding.make_mesh(data=2, model=4)
    assert dict(mesh.shape) == {"data": 2, "model": 4}
    s = sharding.param_shardings(_net(), mesh)
    attn, mlp = ("layers", "0", "self_attn"), ("layers", "0", "mlp")
    assert _spec(s, *attn, "q_proj", "kernel") == P("data", "model")  # [32, 32]
    assert _spec(s, *attn, "k_proj", "kernel") == P("data", "model")  # [32, 2 * 8]
    assert _spec(s, *attn, "o_proj", "kernel") == P("model", "data")
    assert _spec(s, *mlp, "down_proj", "kernel") == P("model", "data")  # [48, 32]
    assert _spec(s, "embed_tokens", "embedding") == P("model", "data")  # [64, 32]
    assert _spec(s, "lm_head", "kernel") == P("data", "model")
    assert _spec(s, "norm", "scale") == P(None)
    # A vocabulary of 61 does not split over 4 devices: that dimension stays whole.
    odd = sharding.param_shardings(_net(61), mesh)
    assert _spec(odd, "embed_tokens", "embedding") == P(None, "data")
    # Tensor parallelism only.
    tp = sharding.param_shardings(_net(), mesh, rules={**sharding.DEFAULT_RULES, "embed": None})
    assert _spec(tp, *mlp, "gate_proj", "kernel") == P(None, "model")
    # Classifiers declare no logical axes: replicated.
    mlp_net = models.make_network("mlp", input_shape=(4,), num_outputs=3, hidden=(8,))
    assert not sharding.is_sharded(sharding.param_shardings(mlp_net, mesh))


def test_bad_meshes_and_rules_are_rejected():
    with pytest.raises(ValueError, match="needs 16 devices"):
        sharding.make_mesh(data=4, model=4)
    with pytest.raises(ValueError, match="`model`"):
        sharding.make_mesh(model=0)
    with pytest.raises(ValueError, match="'fsdp'"):
        sharding.param_shardings(_net(), sharding.make_mesh(model=2), rules={"embed": "fsdp"})


def _lm_stream(net, n=32, seed=0):
    rng = np.random.default_rng(seed)
    t, v = net.input_shape[0], net.num_outputs
    tokens = rng.integers(1, v, (n, t)).astype(np.int32)
    lengths = rng.integers(6, t + 1, n)
    tokens[np.arange(t)[None, :] >= lengths[:, None]] = 0  # right padding
    labels = np.full_like(tokens, losses.IGNORE_INDEX)
    labels[:, :-1] = np.where(tokens[:, 1:] != 0, tokens[:, 1:], losses.IGNORE_INDEX)
    labels[:, :3] = losses.IGNORE_INDEX  # a "prompt" that is not predicted
    return make_stream(tokens, labels, {"retain": np.arange(n)})


def test_fit_on_a_2x4_mesh_matches_one_device_and_stays_sharded():
    assert jax.device_count() == 8, "tests/conftest.py should force 8 CPU devices"
    net = _net()
    stream = _lm_stream(net)
    rule = rules.finetune(net.apply, optimizer=optax.adamw(3e-3, weight_decay=0.01))
    variables = net.init(jax.random.key(0))
    kw = dict(batch_sizes={"retain": 8}, num_steps=8, key=jax.random.key(1), chunk_size=4)

    one = fit(rule, variables, stream, **kw)
    mesh = sharding.make_mesh(data=2, model=4)
    sharded = sharding.shard_variables(net, variables, mesh)
    assert sharded["params"]["layers"]["0"]["mlp"]["up_proj"]["kernel"].sharding.spec == P(
        "data", "model"
    )
    many = fit(rule, sharded, stream, mesh=mesh, **kw)

    # Same loss trajectory (float32 sums in another order: rtol 1e-5).
    assert one.metrics["loss"].shape == (8,)
    assert one.metrics["loss"][-1] < one.metrics["loss"][0]
    np.testing.assert_allclose(many.metrics["loss"], one.metrics["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(many.variables), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)

    # Parameters and Adam's moments keep the parameters' sharding; the step count is replicated.
    kernel = many.variables["params"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"]
    assert isinstance(kernel.sharding, NamedSharding)
    assert kernel.sharding.spec == P("data", "model")
    assert len({s.data.shape for s in kernel.addressable_shards}) == 1
    assert kernel.addressable_shards[0].data.shape == (16, 8)
    adam = many.state.opt_state[0]
    mu = adam.mu["embed_tokens"]["embedding"]
    assert mu.sharding.spec == P("model", "data")
    assert adam.count.sharding.spec == P()


def test_state_shardings_follow_the_parameter_paths():
    net = _net()
    mesh = sharding.make_mesh(data=2, model=4)
    var_sh = sharding.param_shardings(net, mesh)
    params = jax.eval_shape(net.init, jax.random.key(0))["params"]
    state = {
        "adam": optax.adam(1e-3).init(params),  # moments over params alone
        "reference": {"params": params, "batch_stats": {}},  # a frozen copy of the variables
        "step": jax.ShapeDtypeStruct((), np.int32),
    }
    state_sh = sharding.state_shardings(state, var_sh, mesh)
    down = ("layers", "0", "mlp", "down_proj", "kernel")

    def at(tree, path):
        for key in path:
            tree = tree[key]
        return tree.spec

    assert at(state_sh["adam"][0].nu, down) == P("model", "data")
    assert at(state_sh["reference"]["params"], down) == P("model", "data")
    assert state_sh["adam"][0].count.spec == P() and state_sh["step"].spec == P()


def test_load_hf_llama_places_each_tensor_on_the_mesh(tmp_path):
    net = _net()
    variables = net.init(jax.random.key(0))
    hf_llama.save_hf_llama(tmp_path, net, variables)
    mesh = sharding.make_mesh(data=2, model=4)
    loaded_net, loaded = hf_llama.load_hf_llama(
        tmp_path, shardings=lambda n: sharding.param_shardings(n, mesh)
    )
    embedding = loaded["params"]["embed_tokens"]["embedding"]
    assert embedding.sharding.spec == P("model", "data")
    tokens = np.asarray(_lm_stream(net).x[:4])
    np.testing.assert_allclose(
        np.asarray(jax.jit(loaded_net.apply)(loaded, tokens).logits),
        np.asarray(net.apply(variables, tokens).logits),
        rtol=1e-5,
        atol=1e-5,
    )
