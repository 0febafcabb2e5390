"""Hyperparameter sweeps: one compiled program over the grid, selection on validation, reports."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import tiny_problem

from jaxunlearn import rules
from jaxunlearn.scenarios import sweep as sweep_lib
from jaxunlearn.train import fit, make_stream, scan_steps


def _oracle(ds, split, net):
    train = rules.finetune(net.apply, learning_rate=0.05)
    stream = make_stream(ds.x_train, ds.y_train, {"retain": split.retain})
    return fit(
        train,
        net.init(jax.random.key(7)),
        stream,
        batch_sizes={"retain": 64},
        num_steps=150,
        key=jax.random.key(8),
    ).variables


def _stack(tree):
    return jax.tree.map(lambda x: x[None], tree)


def test_sweep_is_one_program_equal_to_separate_runs_and_picks_argmin(tmp_path):
    ds, split, net, original = tiny_problem("class")
    oracle = _oracle(ds, split, net)
    keys = jax.vmap(jax.random.key)(jnp.arange(1))
    values = [1e-3, 1e-2, 3e-2]
    config = {"epochs": 2, "forget_batch_size": 32}
    result = sweep_lib.sweep(
        net,
        ds,
        split,
        _stack(original),
        _stack(oracle),
        keys,
        rule="gradient_ascent",
        param="learning_rate",
        values=values,
        rule_config=config,
        return_variables=True,
    )
    assert result["mode"] == "vmap"
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    for k, value in enumerate(values):
        rule = rules.make("gradient_ascent", net, learning_rate=value)
        alone, _, _ = jax.jit(
            lambda v, r=rule: scan_steps(
                r, v, stream, batch_sizes={"forget": 32}, num_steps=result["num_steps"], key=keys[0]
            )
        )(original)
        for a, b in zip(
            jax.tree.leaves(alone["params"]),
            jax.tree.leaves(result["variables"]["params"]),
            strict=True,
        ):
            np.testing.assert_allclose(np.asarray(b[k, 0]), np.asarray(a), rtol=1e-4, atol=1e-5)
    gaps = [row["gap"] for row in result["grid"]]
    assert result["best"]["index"] == int(np.argmin(gaps))
    assert result["best"]["value"] == values[int(np.argmin(gaps))]
    assert {"UA", "RA", "TA_val", "MIA_efficacy"} <= set(result["grid"][0]["metrics"])
    assert {"UA", "RA", "TA", "MIA_efficacy", "Avg_gap"} <= set(result["best"]["test"])
    assert result["validation"]["size"] + result["validation"]["test_size"] == len(split.test)

    paths = sweep_lib.write_sweep(result, str(tmp_path))
    for path in paths.values():
        assert os.path.getsize(path) > 0
    with open(paths["json"]) as f:
        saved = json.load(f)
    assert saved["best"]["value"] == result["best"]["value"] and "variables" not in saved


def test_validation_split_is_stratified_disjoint_and_fixed():
    ds, split, _, _ = tiny_problem("class")
    val, test = sweep_lib.validation_split(ds, split, seed=0)
    assert not set(val) & set(test) and set(val) | set(test) == set(split.test)
    counts = lambda idx: np.bincount(ds.y_test[idx], minlength=10)
    assert np.all(np.abs(counts(val) - counts(test)) <= 1)
    again, _ = sweep_lib.validation_split(ds, split, seed=0)
    np.testing.assert_array_equal(val, again)


@pytest.mark.parametrize(
    "rule, param, values, mode",
    [
        # neggrad_plus checks `0 <= beta <= 1` only on concrete values: the grid is vmapped.
        ("neggrad_plus", "beta", [0.5, 0.9], "vmap"),
        # unsir's impair phase lasts round(impair_epochs * steps_per_epoch) steps, a Python int:
        # one program with one unrolled run per value.
        ("unsir", "impair_epochs", [0.0, 1.0], "unrolled"),
    ],
)
def test_grid_runs_in_one_program_vmapped_or_unrolled(rule, param, values, mode):
    ds, split, net, original = tiny_problem("class")
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    keys = jax.vmap(jax.random.key)(jnp.arange(1))
    config = {"epochs": 0.1, "forget_batch_size": 32, "retain_batch_size": 32}
    if rule == "unsir":
        # impair_epochs is the earlier schedule's (epochs over the retain set): the entry says so.
        config["hparams"] = {"noise_steps": 1, "impair_epochs": 1.0}
    variables, _, info = sweep_lib.grid_variables(
        net,
        stream,
        _stack(original),
        keys,
        rule=rule,
        param=param,
        values=values,
        rule_config=config,
    )
    assert info["mode"] == mode and info["finite"].shape == (2, 1)
    first = jax.tree.leaves(variables["params"])[0]
    assert first.shape[:2] == (2, 1) and not np.allclose(first[0], first[1])


@pytest.mark.parametrize(
    "rule, param, values, match",
    [
        ("no_such_rule", "learning_rate", [1e-3], "Unknown rule"),
        ("finetune", "lr", [1e-3], "valid: .*learning_rate"),
        ("finetune", "optimizer", [1e-3], "no numeric hyperparameter"),
        ("finetune", "learning_rate", [], "empty"),
        ("finetune", "learning_rate", [1e-3, 0.0], "positive"),
        ("finetune", "learning_rate", [-1e-3], "positive"),
        ("finetune", "learning_rate", ["fast"], "numbers"),
        ("finetune", "learning_rate", [float("nan")], "finite"),
    ],
)
def test_bad_requests_fail_before_compute(rule, param, values, match):
    with pytest.raises(ValueError, match=match):
        sweep_lib.check_grid(rule, param, values)


def test_run_sweep_from_config_checks_scenario(tmp_path):
    from experiments.configs.default import get_config

    with pytest.raises(ValueError, match="Unknown scenario"):
        sweep_lib.run_sweep(
            get_config(),
            str(tmp_path),
            scenario="class_9",
            rule="finetune",
            param="learning_rate",
            values=[1e-2],
            verbose=False,
        )
    with pytest.raises(ValueError, match="positive"):
        sweep_lib.run_sweep(
            get_config(),
            str(tmp_path),
            scenario="class_0",
            rule="finetune",
            param="learning_rate",
            values=[0.0],
            verbose=False,
        )


def test_a_merging_rule_sweeps_with_the_validation_parts_it_chooses_lambda_on():
    # The sweep draws the rule's batches from plan.rule_index's sets, so NegMerge gets validation
    # batches and chooses lambda on them (here 0.85 of the candidates 0, 0.05, ..., 1 for both
    # ratios). Before, no validation parts reached the rule and lambda was 1.
    from jaxunlearn.scenarios.plan import rule_index

    ds, split, net, original = tiny_problem("class")
    keys = jax.vmap(jax.random.key)(jnp.arange(1))
    config = {"epochs": 1, "forget_batch_size": 32, "hparams": {"learning_rates": (0.05, 0.1)}}
    index, entry = rule_index(
        "negmerge", config, split.forget, split.retain, labels=ds.y_train, num_classes=10
    )
    stream = make_stream(ds.x_train, ds.y_train, index)
    _, metrics, info = sweep_lib.grid_variables(
        net, stream, _stack(original), keys, rule="negmerge", param="min_control_ratio",
        values=[0.0, 1.0], rule_config=entry, forget_classes=split.classes,
    )  # fmt: skip
    chosen = np.asarray(metrics["scaling_coef"])[:, 0, -1]
    assert info["mode"] == "vmap" and "val_forget_acc" in metrics
    np.testing.assert_allclose(chosen, [0.85, 0.85])
    result = sweep_lib.sweep(
        net, ds, split, _stack(original), _stack(original), keys, rule="negmerge",
        param="min_control_ratio", values=[0.0, 1.0], rule_config=config,
    )  # fmt: skip
    assert result["mode"] == "vmap" and result["best"] is not None
    assert result["batch_sizes"] == {"forget": 32, "val_forget": 128, "val_control": 128}
