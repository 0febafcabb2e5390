"""Shared helpers so that each rule's smoke test is one line.

``smoke_test_rule("scrub", alpha=0.5)`` builds the rule through the registry on a small `digits`
problem (an MLP trained for a few epochs, class-0 forgetting), runs it jitted through
:func:`jaxunlearn.train.fit` for a few steps, for two seeds at once with ``vmap``, and checks that
the parameters stay finite, change, and that the metrics are finite.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import data, models, rules
from jaxunlearn.core import losses
from jaxunlearn.core.types import Network, Outputs
from jaxunlearn.train import fit, make_stream


@functools.cache
def tiny_problem(kind: str = "class", dataset: str = "digits"):
    """``(dataset, split, network, trained variables)`` for a quick, real unlearning problem."""
    ds = data.load(dataset)
    if kind == "class":
        spec = data.ForgetSpec("class", classes=(0,))
    else:
        spec = data.ForgetSpec("random", fraction=0.1)
    split = data.make_split(ds, spec, seed=0)
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(64,)
    )
    train = rules.finetune(net.apply, learning_rate=0.05)
    stream = make_stream(ds.x_train, ds.y_train, {"retain": np.arange(len(ds.y_train))})
    res = fit(
        train,
        net.init(jax.random.key(0)),
        stream,
        batch_sizes={"retain": 64},
        num_steps=300,
        key=jax.random.key(1),
    )
    return ds, split, net, res.variables


def run_rule(
    name: str,
    *,
    steps: int = 8,
    seeds: int = 2,
    kind: str = "class",
    dataset: str = "digits",
    batch_size: int = 32,
    **hparams,
):
    """Runs registered rule ``name`` for ``steps`` steps on ``seeds`` models (vmapped)."""
    ds, split, net, variables = tiny_problem(kind, dataset)
    info = rules.get(name)
    fraction = len(split.forget) / (len(split.forget) + len(split.retain))
    rule = rules.make(
        name,
        net,
        num_steps=steps,
        steps_per_epoch=steps,
        forget_fraction=fraction,
        forget_classes=split.classes or None,
        **hparams,
    )
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    return fit_seeds(rule, variables, stream, info.parts, batch_size, steps, seeds)


def fit_seeds(rule, variables, stream, parts, batch_size: int, steps: int, seeds: int):
    """``rule`` run for ``steps`` steps on ``seeds`` copies of ``variables`` as one vmapped
    ensemble (seed i keyed ``key(i)``); returns ``(start, FitResult)``."""
    start = jax.tree.map(lambda x: jnp.stack([x] * seeds), variables)
    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
    res = fit(
        rule,
        start,
        stream,
        batch_sizes={p: batch_size for p in parts},
        num_steps=steps,
        key=keys,
        ensemble=True,
    )
    return start, res


def smoke_test_rule(name: str, *, expect_change: bool = True, **kwargs):
    """Asserts rule ``name`` runs jitted and vmapped, stays finite and changes the model."""
    start, res = run_rule(name, **kwargs)
    assert res.steps == kwargs.get("steps", 8)
    assert not np.any(res.diverged), f"{name} diverged"
    for leaf in jax.tree.leaves(res.variables):
        assert np.all(np.isfinite(np.asarray(leaf))), f"{name} produced non-finite parameters"
    for key, values in res.metrics.items():
        assert np.all(np.isfinite(values)), f"{name} metric {key} is not finite"
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(res.variables["params"]), jax.tree.leaves(start["params"]), strict=True
        )
    )
    if expect_change:
        assert moved > 0, f"{name} did not change the parameters"
    return res


def forget_accuracy(variables, name_or_kind: str = "class") -> float:
    """Accuracy (fraction) of ``variables`` on the tiny problem's forget set."""
    ds, split, net, _ = tiny_problem(name_or_kind)
    logits = net.apply(variables, jnp.asarray(ds.x_train[split.forget])).logits
    return float(losses.accuracy(logits, jnp.asarray(ds.y_train[split.forget])))


def linear_network(in_dim: int, num_classes: int) -> Network:
    """logits = x @ w + b, features = x: a model whose gradients are easy to reason about."""

    def init(key):
        return {
            "params": {
                "w": jax.random.normal(key, (in_dim, num_classes)),
                "b": jnp.zeros((num_classes,)),
            },
            "batch_stats": {},
        }

    def apply(variables, x, *, train=False):
        del train
        p = variables["params"]
        return Outputs(logits=x @ p["w"] + p["b"], features=x)

    return Network(init, apply, "linear", num_classes, (in_dim,))


# ------------------------------------------------------------------------------ language models

LM_VOCAB, LM_LEN, LM_PROMPT, LM_ANSWER = 32, 8, 4, 3


def tiny_lm_network(
    vocab_size: int = LM_VOCAB, max_len: int = LM_LEN, d_model: int = 16, num_layers: int = 2
) -> Network:
    """The library's transformer at test size (2 heads; token 0 pads)."""
    return models.make_network(
        "transformer",
        vocab_size=vocab_size,
        max_len=max_len,
        d_model=d_model,
        num_layers=num_layers,
        num_heads=2,
    )


def _qa_rows(rng, prompts, answers):
    """Tokens ``[n, T]`` (prompt, answer, padding) and shifted labels on the answer tokens."""
    n = prompts.shape[0]
    tokens = np.zeros((n, LM_LEN), np.int32)
    tokens[:, :LM_PROMPT] = prompts
    tokens[:, LM_PROMPT : LM_PROMPT + LM_ANSWER] = answers
    labels = np.full((n, LM_LEN), losses.IGNORE_INDEX, np.int32)
    span = slice(LM_PROMPT - 1, LM_PROMPT + LM_ANSWER - 1)  # labels[t] = tokens[t + 1]
    labels[:, span] = tokens[:, LM_PROMPT : LM_PROMPT + LM_ANSWER]
    return tokens, labels


@functools.cache
def tiny_lm_problem(trained: bool = True, num_forget: int = 8, num_retain: int = 40):
    """``(network, variables, stream)`` of a tiny question-answering corpus.

    Each row is a 4-token prompt and a 3-token random answer (token 0 pads); the first
    ``num_forget`` rows are the forget set. The stream carries the rows' "I don't know" answers
    (``idk_x``/``idk_y``, one fixed answer), alternate answers (``alt_x``/``alt_y``) and
    anti-sample answers (``anti_x``/``anti_y``, random wrong answers). With
    ``trained`` the model is trained on every row (100 Adam steps) until it has memorised the
    answers; otherwise it is freshly initialised.
    """
    rng = np.random.default_rng(0)
    n = num_forget + num_retain
    prompts = rng.integers(1, LM_VOCAB, (n, LM_PROMPT))
    x, y = _qa_rows(rng, prompts, rng.integers(1, LM_VOCAB - 3, (n, LM_ANSWER)))
    idk = np.broadcast_to(np.arange(LM_VOCAB - 3, LM_VOCAB), (n, LM_ANSWER))
    idk_x, idk_y = _qa_rows(rng, prompts, idk)
    alt_x, alt_y = _qa_rows(rng, prompts, rng.integers(1, LM_VOCAB - 3, (n, LM_ANSWER)))
    anti_x, anti_y = _qa_rows(rng, prompts, rng.integers(1, LM_VOCAB - 3, (n, LM_ANSWER)))
    net = tiny_lm_network()
    extra = {"idk_x": idk_x, "idk_y": idk_y, "alt_x": alt_x, "alt_y": alt_y}
    extra |= {"anti_x": anti_x, "anti_y": anti_y}
    variables = net.init(jax.random.key(0))
    if trained:
        variables = fit(
            rules.finetune(net.apply, learning_rate=0.02, optimizer={"name": "adam"}),
            variables,
            make_stream(x, y, {"retain": np.arange(n)}),
            batch_sizes={"retain": 16},
            num_steps=100,
            key=jax.random.key(1),
        ).variables
    index = {"forget": np.arange(num_forget), "retain": np.arange(num_forget, n)}
    return net, variables, make_stream(x, y, index, extra=extra)


def lm_batch(stream, part: str = "forget", size: int | None = None) -> dict:
    """The first ``size`` rows of index set ``part`` as a batch part (with every extra field)."""
    rows = stream.index[part][:size]
    return {
        "x": stream.x[rows],
        "y": stream.y[rows],
        "index": rows,
        **{k: v[rows] for k, v in stream.extra.items()},
    }


def run_lm_rule(name: str, *, steps: int = 8, seeds: int = 2, batch_size: int = 8, **hparams):
    """Runs registered rule ``name`` on :func:`tiny_lm_problem` for ``steps`` steps on ``seeds``
    models (vmapped, jitted); returns ``(start, FitResult)``."""
    net, variables, stream = tiny_lm_problem()
    info = rules.get(name)
    rule = rules.make(
        name,
        net,
        num_steps=steps,
        steps_per_epoch=steps,
        forget_steps_per_epoch=max(1, steps // 2),
        forget_fraction=0.2,
        **hparams,
    )
    return fit_seeds(rule, variables, stream, info.parts, batch_size, steps, seeds)


def forget_log_prob(variables, part: str = "forget") -> float:
    """Mean log pi(y | x) of the tiny LM problem's ``part`` rows under ``variables``."""
    net, _, stream = tiny_lm_problem(False)
    batch = lm_batch(stream, part)
    logits = net.apply(variables, batch["x"]).logits
    return float(jnp.mean(losses.sequence_log_prob(logits, batch["y"])))
