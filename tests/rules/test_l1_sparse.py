"""l1-sparse: the l1 penalty's linear decay per epoch."""

import jax
import jax.numpy as jnp
import numpy as np
from rule_testing import tiny_problem

from jaxunlearn import rules
from jaxunlearn.train import make_stream
from jaxunlearn.train.loop import sample_batch


def test_l1_sparse_alpha_decays_per_epoch():
    ds, split, net, variables = tiny_problem()
    rule = rules.l1_sparse(net.apply, num_steps=6, steps_per_epoch=2, alpha=0.3)
    stream = make_stream(ds.x_train, ds.y_train, {"retain": split.retain})
    update = jax.jit(rule.update)
    state, alphas = rule.init(variables, key=None), []
    for step in range(6):
        b = sample_batch(stream, {"retain": 16}, jax.random.key(0), jnp.asarray(step))
        variables, state, m = update(variables, state, b, key=jax.random.key(0))
        alphas.append(float(m["alpha"]))
    np.testing.assert_allclose(alphas, [0.3, 0.3, 0.2, 0.2, 0.1, 0.1], rtol=1e-6)
