"""Artefacts: keys by role, oracles trained by the registered retrain rule, checkpoints reused."""

import jax
import numpy as np
import pytest

from experiments.configs import default
from jaxunlearn import ensemble, rules
from jaxunlearn.scenarios import Artefacts, build_rule, fingerprint, plan, role_keys, runner
from jaxunlearn.scenarios.artefacts import ROLES


def test_role_keys_are_per_model_and_never_shared_between_roles():
    data = lambda k: np.asarray(jax.random.key_data(k))
    keys = {role: data(role_keys(0, role, 4)) for role in ROLES}
    # Model m has the same key in an ensemble of any size, or counted from any start.
    np.testing.assert_array_equal(data(role_keys(0, "oracle", 2)), keys["oracle"][:2])
    np.testing.assert_array_equal(data(role_keys(0, "oracle", 2, start=2)), keys["oracle"][2:])
    every = np.concatenate(list(keys.values()))
    assert len(np.unique(every, axis=0)) == len(every) == 4 * len(ROLES)
    assert not np.array_equal(data(role_keys(1, "oracle", 4)), keys["oracle"])  # another root
    with pytest.raises(ValueError, match="Unknown key role 'teacher'"):
        role_keys(0, "teacher", 1)


def test_originals_are_the_retrain_rule_and_restore_from_their_checkpoint(tmp_path):
    c = default.get_config("smoke")
    c.seeds, c.data_parallel, c.train.chunk_size = 2, False, 0
    p = plan(c)
    art = Artefacts(p, str(tmp_path))
    originals = art.originals()
    assert art.originals() is originals  # built once
    assert (tmp_path / "checkpoints" / "original").is_dir()
    # The registered `retrain` rule with the recipe is exactly the old hand-written fine-tune
    # from the same initialisation (it discards the given variables for network.init(key)).
    t = p.train
    finetune = rules.finetune(
        p.network.apply,
        learning_rate=t["learning_rate"],
        optimizer={"momentum": t["momentum"], "weight_decay": t["weight_decay"]},
        train_mode=True,
    )
    by_hand = ensemble.train(
        p.network,
        finetune,
        p.dataset.x_train,
        p.dataset.y_train,
        np.arange(len(p.dataset.y_train), dtype=np.int32),
        keys=art.keys("original"),
        epochs=t["epochs"],
        batch_size=t["batch_size"],
    )
    jax.tree.map(np.testing.assert_array_equal, originals.variables, by_hand.variables)
    # A second provider over the same workdir restores them instead of training.
    again = Artefacts(p, str(tmp_path)).originals()
    assert again.steps == originals.steps and again.runtime_s == originals.runtime_s
    jax.tree.map(np.testing.assert_array_equal, originals.variables, again.variables)
    assert art.shadows("class_0") is None and art.shadows_after("class_0", "original") is None


def test_shared_originals_protocol_unlearns_one_original_in_every_run(tmp_path):
    # `originals="shared"` (the NeurIPS 2023 competition: every run unlearns one original) against
    # the default "per_run" (run s unlearns original s, as KLoM's benchmark).
    c = default.get_config("smoke")
    c.seeds, c.data_parallel, c.train.chunk_size = 2, False, 0
    per_run = plan(c)
    c.originals = "shared"
    p = plan(c)
    assert (per_run.originals, p.originals) == ("per_run", "shared")
    assert fingerprint.digest(fingerprint.original_fields(p)) != fingerprint.digest(
        fingerprint.original_fields(per_run)
    )
    art = Artefacts(p, str(tmp_path))
    shared = art.originals()
    assert shared.steps == art.originals().steps and shared.diverged.shape == (2,)
    one = jax.tree.map(lambda x: x[0], shared.variables)
    for leaf in jax.tree.leaves(shared.variables):
        assert leaf.shape[0] == 2  # N copies: every per-seed audit reads the same model
        np.testing.assert_array_equal(leaf[0], leaf[1])
    # Model 0 of the per-run protocol: the one original trains with original 0's key.
    by_key = art.train_from_scratch(
        np.arange(len(p.dataset.y_train), dtype=np.int32), art.keys("original", 1)
    )
    jax.tree.map(np.testing.assert_array_equal, one, jax.tree.map(lambda x: x[0], by_key.variables))
    # The runner's unlearning runs start from the shared original, each with its own key.
    split = p.splits["class_0"]
    sizes = {"forget": len(split.forget), "retain": len(split.retain)}
    entry = p.entry("class_0", "neggrad_plus")
    rule, bs, num_steps = build_rule("neggrad_plus", p.network, entry, sizes)
    runs = runner._result(p, art, "class_0", "neggrad_plus", verbose=False)
    by_hand = ensemble.unlearn(
        rule,
        ensemble.replicate(one, 2),
        p.dataset.x_train,
        p.dataset.y_train,
        {"forget": split.forget, "retain": split.retain},
        keys=art.keys("unlearn"),
        batch_sizes=bs,
        num_steps=num_steps,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        runs.variables,
        by_hand.variables,
    )
    first = jax.tree.leaves(runs.variables)[0]
    assert not np.array_equal(first[0], first[1])  # two runs, two keys
