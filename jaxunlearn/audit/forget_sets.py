"""Does unlearning with a forget set the model wrote itself forget as much as the true one?

Zhu et al. (COLM 2025, "LLM Unlearning Without an Expert Curated Dataset", arXiv 2508.06595)
compare unlearning with a synthetic forget set against unlearning with the expert-curated one, on
the curated benchmark's own forget and retain evaluations. :func:`compare_forget_sets` does the
same on token data: the same registered rule, the same retain set, steps and key, once per forget
set (:func:`jaxunlearn.data.synthetic_forget.synthetic_forget_set` builds the synthetic one), and
for each resulting model (and the original) the teacher-forced accuracy on the *true* forget
facts (key-fact tokens when a ``key_mask`` is given: :func:`~jaxunlearn.audit.lm_robust.
key_fact_accuracy`) and on retain facts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np

from jaxunlearn.audit.lm_robust import key_fact_accuracy
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.losses import IGNORE_INDEX
from jaxunlearn.core.types import Array, Network, Variables


def _pad(x: np.ndarray, width: int, value: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=value)


def _check_pair(name: str, pair) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pair, tuple | list) or len(pair) < 2:
        raise ValueError(f"`{name}` must be a (tokens, labels) pair.")
    x, y = np.asarray(pair[0]), np.asarray(pair[1])
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] == 0:
        raise ValueError(
            f"`{name}` must hold non-empty [n, T] tokens and labels of one shape; got "
            f"{x.shape} and {y.shape}."
        )
    return x, y


def compare_forget_sets(
    network: Network,
    variables: Variables,
    forget_sets: Mapping[str, tuple],
    *,
    retain: tuple,
    eval_forget: tuple,
    eval_retain: tuple,
    rule: str = "npo",
    hparams: Mapping | None = None,
    steps: int,
    batch_size: int,
    key: Array,
    pad_id: int = 0,
) -> dict[str, dict[str, float]]:
    """Unlearns with each forget set under the same rule; accuracies on the true facts.

    Args:
      network, variables: the trained model.
      forget_sets: ``{name: (tokens, labels)}``, e.g. ``{"true": ..., "synthetic": ...}``.
      retain: ``(tokens, labels)`` the rule's retain part (the same for every forget set).
      eval_forget: ``(tokens, labels)`` or ``(tokens, labels, key_mask)`` of the true forget
        facts (what should be forgotten).
      eval_retain: ``(tokens, labels)`` or with a key mask, of retain facts (what should stay).
      rule: a registered rule reading ``forget`` (and ``retain``) parts and no extras (``npo``,
        ``gradient_ascent``, ``grad_diff``, ``simnpo``, ...).
      hparams: the rule's hyperparameters.
      steps: updates per run.
      batch_size: batch size of each part (capped at the part's size).
      key: PRNG key (the same batch order for every forget set).
      pad_id: the padding id (rows of different widths are padded to the widest).

    Returns:
      ``{"original" | name: {"forget_accuracy", "retain_accuracy"}}`` (fractions) plus, per
      forget set, ``"rows"``.

    Raises:
      ValueError: no forget set, a malformed pair, ``steps``/``batch_size`` < 1.
    """
    from jaxunlearn import rules
    from jaxunlearn.train.loop import fit, make_stream

    if not forget_sets:
        raise ValueError("`forget_sets` is empty: give at least one (tokens, labels) pair.")
    steps = check_count(steps, "steps", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    sets = {name: _check_pair(f"forget_sets[{name!r}]", p) for name, p in forget_sets.items()}
    rx, ry = _check_pair("retain", retain)
    evals = {"forget": eval_forget, "retain": eval_retain}
    for part, pair in evals.items():
        _check_pair(f"eval_{part}", pair)

    def accuracies(v) -> dict[str, float]:
        out = {}
        for part, pair in evals.items():
            mask = pair[2] if len(pair) > 2 else None
            correct = key_fact_accuracy(network, v, pair[0], pair[1], mask)
            out[f"{part}_accuracy"] = float(np.mean(correct))
        return out

    results = {"original": accuracies(variables)}
    info = rules.get(rule)
    for name, (fx, fy) in sets.items():
        width = max(fx.shape[1], rx.shape[1])
        x = np.concatenate([_pad(fx, width, pad_id), _pad(rx, width, pad_id)])
        y = np.concatenate([_pad(fy, width, IGNORE_INDEX), _pad(ry, width, IGNORE_INDEX)])
        n_f = fx.shape[0]
        index = {"forget": np.arange(n_f), "retain": np.arange(n_f, len(x))}
        sizes = {p: min(batch_size, len(index[p])) for p in info.parts}
        epoch = sizes[info.epoch_part]
        built = rules.make(
            rule,
            network,
            num_steps=steps,
            steps_per_epoch=max(1, len(index[info.epoch_part]) // epoch),
            forget_steps_per_epoch=math.ceil(n_f / sizes.get("forget", batch_size)),
            forget_fraction=n_f / len(x),
            **dict(hparams or {}),
        )
        res = fit(
            built,
            variables,
            make_stream(x, y, {p: index[p] for p in info.parts}),
            batch_sizes=sizes,
            num_steps=steps,
            key=key,
        )
        results[name] = {**accuracies(jax.device_get(res.variables)), "rows": float(n_f)}
    return results
