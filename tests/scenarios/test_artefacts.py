"""Artefacts: keys by role, oracles trained by the registered retrain rule, checkpoints reused."""

import jax
import numpy as np
import pytest

from experiments.configs import default
from jaxunlearn import ensemble, rules
from jaxunlearn.scenarios import Artefacts, plan, role_keys
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
