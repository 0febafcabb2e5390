"""Ensembles: N models trained, unlearned and evaluated in one vmapped program each.

>>> keys = ensemble.seed_keys(32)                                            # doctest: +SKIP
>>> oracles = ensemble.train(net, train_rule, x, y, retain, keys=keys, epochs=30,
...                          batch_size=64)                                  # doctest: +SKIP
>>> runs = ensemble.unlearn(rule, ensemble.replicate(original, 32), x, y,
...                         {"forget": forget, "retain": retain}, keys=keys,
...                         batch_sizes={"forget": 32, "retain": 64},
...                         num_steps=200)                                   # doctest: +SKIP

Their outputs come from one cached, vmapped predict path (:class:`Predictor`,
:class:`Predictions`: ``[N, n, C]`` logits per model group and data part). U-LiRA's shadow
models (trained on random halves of the audited examples, then unlearned) are in
:mod:`jaxunlearn.ensemble.ulira`.
"""

from jaxunlearn.ensemble import ulira
from jaxunlearn.ensemble.predict import Predictions, Predictor, predictor_for
from jaxunlearn.ensemble.ulira import Shadows, choose_targets, membership_design
from jaxunlearn.ensemble.vmapped import (
    MIN_MODELS,
    num_models,
    replicate,
    rule_initializer,
    seed_keys,
    select,
    train,
    unlearn,
)

__all__ = [
    "MIN_MODELS",
    "Predictions",
    "Predictor",
    "Shadows",
    "choose_targets",
    "membership_design",
    "num_models",
    "predictor_for",
    "replicate",
    "rule_initializer",
    "seed_keys",
    "select",
    "train",
    "ulira",
    "unlearn",
]
