"""Shadow models for U-LiRA: models that trained on an example and unlearned it, and models that
never saw it, all trained and unlearned as single vmapped programs.

U-LiRA (Hayes et al.) asks, per example, whether an unlearned model's confidence on it looks more
like that of a model which trained on the example and then unlearned it, or like that of a model
which never trained on it. Answering needs both kinds of models for every audited ("target")
example. The design here: every shadow model trains on a shared base set (the scenario's retain
set) plus a random half of the targets, its *in* set, and then runs the unlearning rule to forget
exactly that in set (the base is its retain set). The other half of the targets it never sees. In
sets all have ``k / 2`` examples, so training and unlearning are each one program with per-model
index sets.

Shadows come in complementary pairs (one holds a random half, the other the rest), so every target
is "in" for exactly half of the models: with any one model left out as the attacked target, each
example still has both kinds of shadows. The attack itself (Gaussian likelihood ratios, ROC) is
:func:`jaxunlearn.audit.ensemble_audits.ulira_attack`; this module only builds and runs the models.

References:
  Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
  Privacy", arXiv 2403.01218 (SaTML 2025).
  Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022 (LiRA's
  shadow models on random halves of the data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
from jax.sharding import Mesh

from jaxunlearn.core.types import Network, UnlearningRule, Variables
from jaxunlearn.ensemble import vmapped
from jaxunlearn.train import FitResult

MIN_SHADOWS = 6


class Shadows(NamedTuple):
    """Shadow models of a U-LiRA audit and what each one trained on.

    Attributes:
      variables: the models, leading axis ``[N]`` (after training, or after unlearning).
      member: bool ``[N, k]``; ``member[m, j]``: model ``m`` trained on ``targets[j]`` (and has to
        unlearn it).
      targets: int ``[k]`` indices into the training set: the audited examples.
      base: int ``[n]`` indices every shadow trains on and keeps (no target among them).
    """

    variables: Variables
    member: np.ndarray
    targets: np.ndarray
    base: np.ndarray

    def in_sets(self) -> np.ndarray:
        """``[N, k / 2]`` the targets each model trained on, in the order of ``targets``."""
        return np.stack([self.targets[row] for row in self.member])


def membership_design(num_shadows: int, num_targets: int, *, seed: int = 0) -> np.ndarray:
    """Which shadow trains on which target: bool ``[num_shadows, num_targets]``.

    Every row holds exactly half of the targets and models ``2i`` and ``2i + 1`` hold
    complementary halves, so every column holds exactly ``num_shadows / 2`` members. Pairs are
    shuffled over the rows.

    Raises:
      ValueError: if ``num_shadows`` is odd or below ``MIN_SHADOWS`` (with one model left out as
        the target, every example must keep at least two shadows of each kind, or the spread of
        a kind is 0), or ``num_targets`` is odd or below 2.
    """
    if int(num_shadows) != num_shadows or num_shadows < MIN_SHADOWS or num_shadows % 2:
        raise ValueError(
            f"`num_shadows` must be an even number >= {MIN_SHADOWS}; got {num_shadows}"
        )
    if int(num_targets) != num_targets or num_targets < 2 or num_targets % 2:
        raise ValueError(f"`num_targets` must be an even number >= 2; got {num_targets}")
    rng = np.random.default_rng(seed)
    member = np.zeros((num_shadows, num_targets), bool)
    for pair in range(num_shadows // 2):
        half = rng.permutation(num_targets)[: num_targets // 2]
        member[2 * pair, half] = True
        member[2 * pair + 1] = ~member[2 * pair]
    return member[rng.permutation(num_shadows)]


def choose_targets(
    forget: np.ndarray, num_targets: int | None = None, *, seed: int = 0
) -> np.ndarray:
    """The audited examples: ``num_targets`` of the forget set (all of it, rounded down to an even
    count, when ``None``), in a fixed random order."""
    forget = np.asarray(forget)
    limit = len(forget) - len(forget) % 2
    count = limit if num_targets is None else int(num_targets)
    if count < 2 or count % 2 or count > len(forget):
        raise ValueError(
            f"`num_targets` must be an even number in [2, {limit}] (the forget set "
            f"has {len(forget)} examples); got {count}"
        )
    return np.random.default_rng(seed).permutation(forget)[:count]


def train_shadows(
    network: Network,
    rule: UnlearningRule,
    x,
    y,
    base,
    targets,
    *,
    keys,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    checkpoint_dir: str | None = None,
    progress: Callable | None = None,
    init_program: Callable | None = None,
    augment: Callable | None = None,
) -> tuple[Shadows, FitResult]:
    """Trains ``num_shadows`` models from scratch, model ``m`` on ``base`` plus its in set.

    Args:
      network: the functional model.
      rule: the training rule (as for the originals and oracles).
      x, y: the training inputs and targets.
      base: int ``[n]`` indices every shadow trains on (the scenario's retain set).
      targets: int ``[k]`` indices of the audited examples, disjoint from ``base``, ``k`` even.
      keys: ``[N]`` typed PRNG keys, one per shadow (N even and at least ``MIN_SHADOWS``);
        the experiment derives them from its root key (``scenarios.artefacts.role_keys``).
      epochs, batch_size: the training recipe (as for the originals).
      seed: seeds the membership design.
      mesh, chunk_size, checkpoint_dir, progress, init_program, augment: as in
        :func:`vmapped.train` (the originals' augmentation, so shadows train as they did).

    Returns:
      ``(shadows, fit_result)``.
    """
    base, targets = np.asarray(base), np.asarray(targets)
    if np.intersect1d(base, targets).size:
        raise ValueError(
            "`targets` must not overlap `base` (a target in the base set is "
            "trained on by every shadow)"
        )
    num_shadows = vmapped.num_models(keys)
    member = membership_design(num_shadows, len(targets), seed=seed)
    shadows = Shadows(None, member, targets, base)
    index = np.concatenate(
        [np.broadcast_to(base, (num_shadows, len(base))), shadows.in_sets()], axis=1
    ).astype(np.int32)
    res = vmapped.train(
        network,
        rule,
        x,
        y,
        index,
        keys=keys,
        epochs=epochs,
        batch_size=batch_size,
        mesh=mesh,
        chunk_size=chunk_size,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        init_program=init_program,
        augment=augment,
    )
    return shadows._replace(variables=res.variables), res


def unlearn_shadows(
    shadows: Shadows,
    rule: UnlearningRule,
    x,
    y,
    *,
    keys,
    batch_sizes: Mapping[str, int],
    num_steps: int,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    progress: Callable | None = None,
    index: Mapping | None = None,
    augment: Callable | None = None,
) -> tuple[Shadows, FitResult]:
    """Each shadow runs ``rule`` to forget its in set, with ``base`` as its retain set.

    The rule is built for forget sets of ``k / 2`` examples and a retain set of ``len(base)``
    (e.g. ``num_steps`` from epochs over those sizes). ``keys``: ``[N]`` PRNG keys of the runs.
    ``index``: the index sets of the batch parts, when the rule draws them otherwise (e.g.
    :func:`jaxunlearn.scenarios.plan.rule_index` of ``in_sets()`` and ``base``); by default
    ``{"forget": in_sets(), "retain": base}``. ``augment``: the batches' augmentation, as the
    audited runs use it.

    Returns:
      ``(unlearned shadows, fit_result)``.
    """
    if index is None:
        index = {
            "forget": shadows.in_sets().astype(np.int32),
            "retain": np.asarray(shadows.base, np.int32),
        }
    res = vmapped.unlearn(
        rule,
        shadows.variables,
        x,
        y,
        {part: index[part] for part in batch_sizes},
        keys=keys,
        batch_sizes=batch_sizes,
        num_steps=num_steps,
        mesh=mesh,
        chunk_size=chunk_size,
        progress=progress,
        augment=augment,
    )
    return shadows._replace(variables=res.variables), res
