"""The target and retain models of an LM experiment: trained once, checkpointed, reused.

The *target* is trained from scratch on every training row (all non-holdout authors and the
utility facts) until it has memorised them; the *retain* models of a split train on that split's
retain rows only and never see its forget authors: the exact-unlearning oracle that TOFU's forget
quality compares with. The main split gets ``retain_seeds`` of them in one vmapped program
(:func:`jaxunlearn.ensemble.train`): seed 0 is the reference, seed 1 measures the noise floor
(the forget quality of a second exact oracle); the other splits get one.

With the config's ``train_passages``, the training data also holds the authors' passages (the
benchmark's ``passage_x`` windows, after its QA rows): the target trains on every training
author's, a retain model on its retain authors' only, so MUSE's verbatim memorisation of the
forget passages has something to measure.

All are trained by the registered ``retrain`` rule with the config's ``train`` recipe, in the one
loop (:func:`jaxunlearn.train.fit`), with orbax checkpoints under ``workdir/checkpoints/lm``. As
in :mod:`jaxunlearn.scenarios.artefacts` (whose fingerprint check this reuses), a checkpoint is
restored or resumed only when the fingerprint of the fields that determine it matches; else it
is removed and retrained with one line saying what changed. Keys derive from the plan's
``root_seed`` by role (:func:`~jaxunlearn.scenarios.artefacts.role_keys`): ``original`` for the
target, ``oracle`` for retain models, ``unlearn`` for the rules' runs.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxunlearn import ensemble as ensemble_lib
from jaxunlearn.scenarios import fingerprint as fp_lib
from jaxunlearn.scenarios.artefacts import Artefacts
from jaxunlearn.scenarios.plan import RETRAIN, build_rule
from jaxunlearn.train import FitResult, Progress

TARGET = "target"


def common_fields(p) -> dict:
    """The fields every LM artefact depends on: data, model, training recipe, root seed, code."""
    return {
        "track": "lm",
        "data": {"dataset": p.sources["dataset"], "data_kwargs": p.sources["data_kwargs"]},
        "model": {"model": p.sources["model"], "model_kwargs": p.sources["model_kwargs"]},
        "train": fp_lib.resolved_entry(p.entry(p.main_scenario, RETRAIN)),
        "root_seed": p.root_seed,
        "train_passages": p.train_passages,
        "versions": fp_lib.versions(),
    }


def target_fields(p) -> dict:
    return {**common_fields(p), "role": TARGET, "rows": int(len(p.benchmark.train))}


def retain_fields(p, split: str) -> dict:
    return {
        **common_fields(p),
        "role": "retain",
        "split": split,
        "forget_rows": int(len(p.benchmark.forget[split])),
        "retain_seeds": p.retain_count(split),
    }


def training_data(p, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, rows)`` a model trained on the QA ``rows`` sees: with ``p.train_passages``, the
    benchmark's QA arrays followed by its passage windows, and ``rows`` plus the windows of the
    authors of ``rows`` (so a retain model never sees its forget authors' passages, nor the
    target the holdout authors'); else the QA arrays and ``rows`` unchanged."""
    b = p.benchmark
    rows = np.asarray(rows, np.int32)
    if not p.train_passages:
        return b.x, b.y, rows
    authors = b.authors_of(rows)
    windows = b.passage_rows(authors[authors >= 0])
    x = np.concatenate([b.x, b.passage_x])
    y = np.concatenate([b.y, b.passage_y])
    return x, y, np.concatenate([rows, len(b.x) + windows]).astype(np.int32)


class LMArtefacts(Artefacts):
    """The target and retain models of an :class:`~jaxunlearn.scenarios.lm.plan.LMPlan`.

    >>> art = LMArtefacts(plan, workdir, verbose=True)            # doctest: +SKIP
    >>> target = art.target().variables                           # [1, ...]
    >>> retain = art.retain("forget10").variables                 # [retain_seeds, ...]
    """

    def _train(self, rows, keys, *, label: str, checkpoint_dir) -> FitResult:
        p = self.plan
        x, y, rows = training_data(p, rows)
        entry = p.entry(p.main_scenario, RETRAIN)
        sizes = {"retain": len(rows)}
        rule, bs, _ = build_rule(RETRAIN, p.network, entry, sizes)
        return ensemble_lib.train(
            p.network,
            rule,
            x,
            y,
            np.asarray(rows, np.int32),
            keys=keys,
            epochs=int(entry["epochs"]),
            batch_size=bs["retain"],
            mesh=p.mesh,
            chunk_size=int(p.train["chunk_size"]) or None,
            checkpoint_dir=checkpoint_dir,
            progress=Progress(label, enabled=self.verbose),
            min_models=1,
        )

    def checkpoint_path(self, *parts: str) -> str | None:
        """The checkpoint directory ``parts`` under ``workdir/checkpoints`` (``None`` when the
        artefacts are kept in memory); :meth:`checked_dir` fingerprints one before use."""
        return self._dir(*parts)

    def target(self) -> FitResult:
        """The target model (an ensemble of one): trained on every training row."""
        p = self.plan
        return self._cached(
            (TARGET,),
            lambda: self._train(
                p.benchmark.train,
                self.keys("original", 1),
                label=TARGET,
                checkpoint_dir=self.checked_dir(TARGET, target_fields(p), "lm", TARGET),
            ),
        )

    def retain(self, split: str) -> FitResult:
        """The retain models of ``split`` (``plan.retain_count(split)``), trained without its
        forget rows."""
        p = self.plan
        return self._cached(
            ("retain", split),
            lambda: self._train(
                p.benchmark.retain[split],
                self.keys("oracle", p.retain_count(split)),
                label=f"{split}/retain",
                checkpoint_dir=self.checked_dir(
                    f"{split}/retain", retain_fields(p, split), "lm", split, "retain"
                ),
            ),
        )


def model(variables, i: int = 0):
    """Model ``i`` of an ensemble's variables."""
    return jax.tree.map(lambda x: x[i], variables)
