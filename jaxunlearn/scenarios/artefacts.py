"""The artefacts of an experiment: originals, oracles and U-LiRA shadow models.

Each is an ensemble of models trained from scratch by the registered ``retrain`` rule with the
plan's training recipe: the originals on the whole training set, the oracles on a scenario's
retain set, the shadows on the retain set plus a random half of the audited forget examples. They
are built once, checkpointed under ``workdir/checkpoints`` (a rerun restores them) and shared by
the runner, the sweep, the benchmarks and the notebooks through :class:`Artefacts`.

Every model's PRNG key derives from one root, ``jax.random.key(plan.root_seed)``: the key of model
``m`` in role ``r`` is ``fold_in(fold_in(root, ROLES[r]), m)`` (:func:`role_keys`). Model ``m`` has
the same key in an ensemble of any size, and no two roles can share a key by a clash of offsets.
Oracles of different scenarios share keys (as the unlearning runs of different rules do): a seed's
models differ across scenarios and rules only by their data and rule.

Each artefact's checkpoint directory holds ``fingerprint.json``: the config fields that determine
it and their digest (:mod:`jaxunlearn.scenarios.fingerprint`). A rerun resumes or restores the
checkpoints only when the digest matches; otherwise it removes them, retrains, and says which
fields changed (one line per artefact).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import ensemble as ensemble_lib
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array
from jaxunlearn.data import augment as augment_lib
from jaxunlearn.ensemble import Shadows
from jaxunlearn.scenarios import fingerprint as fp_lib
from jaxunlearn.scenarios.plan import (
    ORIGINAL,
    RETRAIN,
    Plan,
    build_rule,
    build_run,
    retrain_entry,
)
from jaxunlearn.train import FitResult, Progress, multihost, records

FINGERPRINT_FILE = "fingerprint.json"

# The roles a model key can have; the value is folded into the root key.
ROLES = {
    "original": 0,
    "oracle": 1,
    "unlearn": 2,  # unlearning runs (every rule of a seed shares its key)
    "shadow": 3,  # U-LiRA shadow models, training
    "shadow_unlearn": 4,  # U-LiRA shadow models, unlearning
}


def role_keys(root_seed: int, role: str, count: int, *, start: int = 0) -> Array:
    """``[count]`` PRNG keys of models ``start ... start + count - 1`` in ``role``.

    Model ``m``'s key is ``fold_in(fold_in(key(root_seed), ROLES[role]), m)``.
    """
    if role not in ROLES:
        raise ValueError(f"Unknown key role {role!r}; valid: {sorted(ROLES)}")
    count = check_count(count, "count", 1)
    base = jax.random.fold_in(jax.random.key(int(root_seed)), ROLES[role])
    return jax.vmap(lambda m: jax.random.fold_in(base, m))(jnp.arange(start, start + count))


class Artefacts:
    """Originals, oracles and shadows of a plan: built on first use, checkpointed, cached.

    >>> art = Artefacts(plan(config), workdir)                       # doctest: +SKIP
    >>> originals = art.originals().variables                        # [N, ...]
    >>> oracles = art.oracles("class_0").variables                   # [N, ...]

    Args:
      p: the plan.
      workdir: checkpoints go to ``workdir/checkpoints``; ``None`` keeps everything in memory.
      verbose: print training progress.
      log: where the one line per artefact (restored, trained, retrained because its config
        changed) goes; default: stderr when ``verbose`` (process 0 only).
    """

    def __init__(
        self,
        p: Plan,
        workdir: str | None = None,
        *,
        verbose: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        self.plan = p
        self._ckpt = None if workdir is None else os.path.join(workdir, "checkpoints")
        self.verbose = verbose
        if log is None:
            on = verbose and multihost.is_primary()
            log = (lambda m: print(m, file=sys.stderr, flush=True)) if on else (lambda m: None)
        self.log = log
        self._cache: dict[tuple, object] = {}
        self._trainers: dict[str, tuple] = {}

    def _trainer(self, entry: dict):
        """``(retrain rule, batch size, compiled init)`` of a ``retrain`` entry, built once per
        distinct entry: every ensemble trained with it reuses the compiled ``init`` (which draws
        a whole network; ``fit`` would compile it again on every call)."""
        key = json.dumps(entry, sort_keys=True, default=str)
        if key not in self._trainers:
            # The data size only sets steps per epoch, which ensemble.train recomputes.
            sizes = {"retain": len(self.plan.dataset.y_train)}
            rule, batch_sizes, _ = build_rule(RETRAIN, self.plan.network, entry, sizes)
            self._trainers[key] = (rule, batch_sizes["retain"], ensemble_lib.rule_initializer(rule))
        return self._trainers[key]

    def train_from_scratch(
        self,
        index,
        keys: Array,
        *,
        entry: dict | None = None,
        label: str = "",
        checkpoint_dir: str | None = None,
    ) -> FitResult:
        """One model per key trained from scratch on ``index`` by the ``retrain`` rule, in one
        vmapped program (:func:`jaxunlearn.ensemble.train`); not cached (see :meth:`originals`,
        :meth:`oracles` for the cached artefacts).

        Args:
          index: int ``[n]`` (every model) or ``[N, n]`` (one set per model) training indices.
          keys: ``[N]`` keys (:meth:`keys`): initialisation, batch order.
          entry: the ``retrain`` entry to use (default: the plan's training recipe).
          label, checkpoint_dir: progress label, orbax checkpoints.
        """
        p = self.plan
        entry = retrain_entry(p.train, {}) if entry is None else entry
        rule, batch_size, init_program = self._trainer(entry)
        return ensemble_lib.train(
            p.network,
            rule,
            p.dataset.x_train,
            p.dataset.y_train,
            index,
            keys=keys,
            epochs=int(entry["epochs"]),
            batch_size=batch_size,
            mesh=p.mesh,
            chunk_size=int(p.train["chunk_size"]) or None,
            checkpoint_dir=checkpoint_dir,
            progress=Progress(label, enabled=self.verbose),
            min_models=1,
            init_program=init_program,
            augment=augment_lib.get(p.augmentation),
        )

    def keys(self, role: str, count: int | None = None, *, start: int = 0) -> Array:
        """``[count]`` (default: the plan's seeds) keys of ``role`` (see :func:`role_keys`)."""
        return role_keys(self.plan.root_seed, role, count or self.plan.seeds, start=start)

    def _dir(self, *parts: str) -> str | None:
        return None if self._ckpt is None else os.path.join(self._ckpt, *parts)

    def checked_dir(self, label: str, fields: dict, *parts: str) -> str | None:
        """The checkpoint directory ``parts`` of the artefact ``label`` determined by ``fields``:
        kept when its stored fingerprint matches, emptied (with a line saying which fields
        changed) when not; the fingerprint is written before training starts."""
        directory = self._dir(*parts)
        if directory is None:
            return None
        digest = fp_lib.digest(fields)
        path = os.path.join(directory, FINGERPRINT_FILE)
        state, stored = 0, None  # 0: nothing there, 1: matches, 2: stale
        if multihost.is_primary() and os.path.isdir(directory) and os.listdir(directory):
            try:
                stored = records.read_json(path, default=None)
            except (records.DamagedFileError, OSError):
                stored = None
            ok = isinstance(stored, dict) and stored.get("fingerprint") == digest
            state = 1 if ok else 2
        state = int(multihost.agree(state))
        if state == 1:
            self.log(f"  {label}: fingerprint {digest} matches; restoring or resuming {directory}")
        elif state == 2:
            old = stored.get("fields") if isinstance(stored, dict) else None
            self.log(
                f"  {label}: config changed ({fp_lib.changes(old, fields)}); retraining "
                f"(stale checkpoints in {directory} removed)"
            )
            multihost.sync(f"jaxunlearn_stale_{directory}")
            if multihost.is_primary():
                shutil.rmtree(directory)
        else:
            self.log(f"  {label}: training (fingerprint {digest})")
        multihost.sync(f"jaxunlearn_checked_{directory}")
        if state != 1 and multihost.is_primary():
            records.write_json(path, {"fingerprint": digest, "fields": fp_lib.canonical(fields)})
        multihost.sync(f"jaxunlearn_fingerprinted_{directory}")
        return directory

    def _cached(self, key: tuple, build: Callable):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def originals(self) -> FitResult:
        """The N original models, trained on the whole training set.

        With the plan's ``originals == "shared"`` (the NeurIPS 2023 competition's protocol) only
        original 0 is trained, and the result holds N copies of it, so that every unlearning run
        and every per-seed audit starts from the same model."""
        p = self.plan
        count = 1 if p.originals == "shared" else p.seeds

        def build():
            res = self.train_from_scratch(
                np.arange(len(p.dataset.y_train), dtype=np.int32),
                self.keys("original", count),
                label="original",
                checkpoint_dir=self.checked_dir("originals", fp_lib.original_fields(p), "original"),
            )
            if count == p.seeds:
                return res
            copies = lambda tree: jax.tree.map(
                lambda x: jnp.broadcast_to(x[:1], (p.seeds, *x.shape[1:])), tree
            )
            # Records report run time per model (total / N): N copies of one model's cost.
            return res._replace(
                variables=copies(res.variables),
                state=copies(res.state),
                diverged=np.broadcast_to(np.asarray(res.diverged)[:1], (p.seeds,)),
                runtime_s=res.runtime_s * p.seeds,
            )

        return self._cached(("original",), build)

    def oracles(self, scenario: str) -> FitResult:
        """The N oracles of ``scenario``: the ``retrain`` rule's entry run on its retain set."""
        p = self.plan
        return self._cached(
            ("oracle", scenario),
            lambda: self.train_from_scratch(
                p.splits[scenario].retain,
                self.keys("oracle"),
                entry=p.entry(scenario, RETRAIN),
                label=f"{scenario}/{RETRAIN}",
                checkpoint_dir=self.checked_dir(
                    f"{scenario}/oracles", fp_lib.oracle_fields(p, scenario), scenario, RETRAIN
                ),
            ),
        )

    def shadows(self, scenario: str) -> Shadows | None:
        """U-LiRA's trained shadow models of ``scenario``, or ``None`` where U-LiRA is off."""
        p = self.plan
        if not p.ulira or scenario not in p.ulira["scenarios"]:
            return None

        def build():
            split = p.splits[scenario]
            targets = ensemble_lib.choose_targets(split.forget, p.ulira["targets"] or None)
            entry = retrain_entry(p.train, {})
            rule, batch_size, init_program = self._trainer(entry)
            shadows, _ = ensemble_lib.ulira.train_shadows(
                p.network,
                rule,
                p.dataset.x_train,
                p.dataset.y_train,
                split.retain,
                targets,
                keys=self.keys("shadow", p.ulira["shadows"]),
                epochs=int(entry["epochs"]),
                batch_size=batch_size,
                mesh=p.mesh,
                chunk_size=int(p.train["chunk_size"]) or None,
                checkpoint_dir=self.checked_dir(
                    f"{scenario}/ulira_shadows",
                    fp_lib.shadow_fields(p, scenario),
                    scenario,
                    "ulira_shadows",
                ),
                init_program=init_program,
                progress=Progress(f"{scenario}/ulira_shadows", enabled=self.verbose),
                augment=augment_lib.get(p.augmentation),
            )
            return shadows

        return self._cached(("shadow", scenario), build)

    def shadows_after(self, scenario: str, method: str) -> Shadows | None:
        """The shadows of ``scenario`` as U-LiRA audits ``method``: as trained for the original
        (the attack's full strength), after each ran ``method`` on its in set for the config's
        ``ulira_rules``; ``None`` for other methods or where U-LiRA is off."""
        p = self.plan
        shadows = self.shadows(scenario)
        if shadows is None or method == RETRAIN:
            return None
        if method == ORIGINAL:
            return shadows
        if method not in p.ulira["rules"]:
            return None

        def build():
            # Each shadow forgets its in set with the base as retain set, drawn as the method's
            # run draws them (plan.rule_index: a rule's own sets, validation parts); the
            # scenario's forgotten classes describe what a class-wise shadow forgets.
            rule, index, bs, num_steps = build_run(
                method,
                p.network,
                p.entry(scenario, method),
                p.dataset.y_train,
                shadows.in_sets().astype(np.int32),
                np.asarray(shadows.base, np.int32),
                forget_classes=p.splits[scenario].classes,
                retain_available=p.retain_available.get(scenario, True),
                num_devices=p.num_devices,
            )
            unlearned, _ = ensemble_lib.ulira.unlearn_shadows(
                shadows,
                rule,
                p.dataset.x_train,
                p.dataset.y_train,
                keys=self.keys("shadow_unlearn", p.ulira["shadows"]),
                batch_sizes=bs,
                num_steps=num_steps,
                index=index,
                mesh=p.mesh,
                progress=Progress(f"{scenario}/{method}/ulira", enabled=self.verbose),
                augment=augment_lib.get(p.augmentation),
            )
            return unlearned

        return self._cached(("shadow_after", scenario, method), build)
