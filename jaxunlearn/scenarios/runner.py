"""One experiment: plan -> artefacts -> rules -> audits -> records.

Every seed is a member of an ensemble: the originals of all seeds train in one vmapped program,
so do the oracles of a scenario (the ``retrain`` rule, :mod:`jaxunlearn.scenarios.artefacts`) and
the unlearning runs of a rule. Every model of a scenario is evaluated through one
:class:`~jaxunlearn.ensemble.Predictions` (``[N, n, C]`` logits and features per method and data
part): the per-model audits of a method run once over its N models (one
:class:`~jaxunlearn.audit.AuditContext` over the rows that did not diverge, an ``[N]`` array per
metric), ensemble audits read the same arrays whole. Originals,
oracles and shadows are checkpointed under ``workdir``; each audited method writes its records so
a rerun skips it.

Nothing stale is reused: the records of each (scenario, method) are stored with the fingerprint of
the config fields that determine them (:mod:`jaxunlearn.scenarios.fingerprint`), and a rerun
restores them only when it matches; the artefacts' checkpoints are checked the same way
(:mod:`jaxunlearn.scenarios.artefacts`). One line per artefact and method says what was restored
and what is recomputed, and why. A damaged records file is recomputed with a warning naming it.
The workdir is locked for the run (:mod:`jaxunlearn.scenarios.lock`).

Nothing silent: every diverged (method, scenario, seeds) is printed, and marked in the table and
the plot. When an original diverges, its scenario's rules are not run (they would start from a
broken model): their records get the status ``skipped`` and the rest of the run finishes.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import jax
import numpy as np

from jaxunlearn import audit as audit_lib
from jaxunlearn import ensemble as ensemble_lib
from jaxunlearn.audit import classification as cls
from jaxunlearn.audit import ensemble_audits
from jaxunlearn.data import augment as augment_lib
from jaxunlearn.scenarios import fingerprint as fp_lib
from jaxunlearn.scenarios import report
from jaxunlearn.scenarios.artefacts import Artefacts
from jaxunlearn.scenarios.lock import workdir_lock
from jaxunlearn.scenarios.plan import ORIGINAL, RETRAIN, Plan, build_run, plan
from jaxunlearn.scenarios.report import Record
from jaxunlearn.train import FitResult, Progress, multihost
from jaxunlearn.train import records as records_lib

SKIPPED = "skipped"  # a rule not run because the original it would start from diverged


class DamagedRecordsWarning(UserWarning):
    """A records file could not be read and is recomputed."""


def run_experiment(config, workdir: str, *, verbose: bool = True) -> list[Record]:
    """Runs the experiment ``config`` in ``workdir`` and writes ``results.json``, table and plot.

    In a multi-process job (after ``jax.distributed.initialize()``) every process calls this with
    the same arguments and gets the records; only process 0 prints and writes files, and
    ``workdir`` must be shared by all processes (see :mod:`jaxunlearn.train.multihost`).

    Returns:
      The records: one per (scenario, method, seed), ``original`` and ``retrain`` included.

    Raises:
      ValueError: the config cannot run (before any compute; see :func:`plan`).
      WorkdirLockedError: (an ``OSError``) another live process runs in ``workdir``.
    """
    p = plan(config)
    verbose = verbose and multihost.is_primary()
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir):
        return _run(p, workdir, verbose)


def _run(p: Plan, workdir: str, verbose: bool) -> list[Record]:
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    log(
        f"jaxunlearn: {p.dataset.name} / {p.network.name}, {p.seeds} seeds, "
        f"scenarios {list(p.scenarios)}, rules {list(p.rules)}"
    )
    art = Artefacts(p, workdir, verbose=verbose, log=log)
    predictor = ensemble_lib.Predictor(p.network)
    records: list[Record] = []
    for sname, split in p.splits.items():
        log(f"scenario {sname}: forget {len(split.forget)}, retain {len(split.retain)}")
        records += _run_scenario(p, art, predictor, sname, workdir, log)
    for line in report.divergence_lines(records):
        log(f"diverged: {line}")
    if not multihost.is_primary():
        return records
    title = f"{p.dataset.name} / {p.network.name}"
    report.write_all(records, workdir, title=title)
    if p.ensemble_audits:
        path = report.per_example_plot(records, workdir, title=f"{title}, {p.seeds} models")
        if path:
            log(f"wrote {path}")
    return records


def _run_scenario(p: Plan, art: Artefacts, predictor, sname: str, workdir: str, log):
    """The records of every method of scenario ``sname``: the oracles (``retrain``) first, as
    every other method's reference, then the originals and the config's rules."""
    split = p.splits[sname]
    predictions = audit_lib.make_predictions(p.network, p.dataset, split, predictor=predictor)
    by_method: dict[str, list[Record]] = {}
    methods = (RETRAIN, ORIGINAL, *(n for n in p.rules if n != RETRAIN))
    for method in methods:
        cache = os.path.join(workdir, "records", sname, f"{method}.json")
        fields = fp_lib.record_fields(p, sname, method)
        digest = fp_lib.digest(fields)
        stored, why = _stored_records(cache, digest, fields)
        broken = [] if method in (ORIGINAL, RETRAIN) else _diverged_seeds(by_method[ORIGINAL])
        if multihost.agree(stored is not None):  # all processes restore, or none
            recs = by_method[method] = stored
            log(f"  {method}: fingerprint {digest} matches; restored its records")
        elif broken:  # every rule starts from the originals: none runs from a broken model
            log(f"  {method}: not run, the original diverged on seeds {broken}")
            by_method[method] = [
                Record(sname, method, s, SKIPPED, {}, digest) for s in range(p.seeds)
            ]
            continue
        else:
            log(f"  {method}: {why}")
            recs = by_method[method] = _compute(
                p, art, predictions, sname, method, digest, by_method, workdir
            )
            if multihost.is_primary():
                records_lib.write_json(
                    cache,
                    {
                        "fingerprint": digest,
                        "fields": fp_lib.canonical(fields),
                        "records": [r.to_json() for r in recs],
                    },
                )
        bad = _diverged_seeds(recs)
        if bad:
            log(f"  DIVERGED: {method} on {sname}, seeds {bad}")
        if method == RETRAIN and bad:
            log(
                f"  scenario {sname}: the oracle (retrain) diverged on seeds {bad}; the rules "
                "still run from the originals, but Avg. Gap and the ensemble audits leave those "
                "seeds out (no reference); check the oracle's recipe (`train`, `rules.retrain`)"
            )
        if method == ORIGINAL and bad and methods[2:]:
            log(
                f"  scenario {sname}: the original diverged on seeds {bad}, so its rules "
                f"{list(methods[2:])} are not run (status {SKIPPED!r}); check the training "
                "recipe (`train`)"
            )
    records = [r for m in (ORIGINAL, RETRAIN, *methods[2:]) for r in by_method[m]]
    for r in records:  # the config's current note, also on records restored from an older run
        r.note = str(p.entry(sname, r.method).get("note", "")) if r.method != ORIGINAL else ""
    _add_gaps(records, audit_lib.gap_metrics(p.dataset.task))
    return records


def _compute(p, art, predictions, sname, method, digest, by_method, workdir) -> list[Record]:
    """Runs ``method`` on ``sname`` (or takes the originals/oracles) and audits it."""
    result = _result(p, art, sname, method, verbose=art.verbose)
    for name, res in ((ORIGINAL, art.originals()), (RETRAIN, art.oracles(sname))):
        if not predictions.has_group(name):
            predictions.add_group(name, res.variables)
    if not predictions.has_group(method):
        predictions.add_group(method, result.variables)
    recs = _audit_all(p, sname, method, result, art, predictions, digest)
    if method != RETRAIN:  # the oracles are the ensemble audits' reference
        _add_ensemble_metrics(
            p, art, sname, method, recs, result, predictions, by_method[RETRAIN], workdir
        )
    if method not in (ORIGINAL, RETRAIN):
        predictions.drop_group(method)
    return recs


def _diverged_seeds(recs: list[Record]) -> list[int]:
    return [r.seed for r in recs if r.status == "diverged"]


def _stored_records(path: str, digest: str, fields: dict) -> tuple[list[Record] | None, str]:
    """``(records, "")`` of ``path`` when its fingerprint is ``digest``, else ``(None, why they
    are computed)``; a damaged file is reported with a :class:`DamagedRecordsWarning`."""
    try:
        stored = records_lib.read_json(path, default=None)
    except (records_lib.DamagedFileError, OSError) as e:
        warnings.warn(f"{e}; recomputing it", DamagedRecordsWarning, stacklevel=3)
        return None, f"records file {path} is damaged; recomputing"
    if stored is None:
        return None, "computing"
    try:
        if isinstance(stored, dict) and stored.get("fingerprint") == digest:
            return [Record(**r) for r in stored["records"]], ""
    except (KeyError, TypeError) as e:
        warnings.warn(
            f"{path} is damaged ({type(e).__name__}: {e}); recomputing it",
            DamagedRecordsWarning,
            stacklevel=3,
        )
        return None, f"records file {path} is damaged; recomputing"
    old = stored.get("fields") if isinstance(stored, dict) else None
    return None, f"config changed ({fp_lib.changes(old, fields)}); recomputing"


def _result(p: Plan, art: Artefacts, sname: str, method: str, *, verbose: bool) -> FitResult:
    """The models of ``method``: the originals, the oracles (the ``retrain`` rule's run), or the
    N runs of an unlearning rule from the originals."""
    if method == ORIGINAL:
        return art.originals()
    if method == RETRAIN:
        return art.oracles(sname)
    split = p.splits[sname]
    # The rule's own index sets (UNSIR's retain subsample) and validation parts (the merging
    # rules' choice of lambda) come with it; see plan.rule_index.
    rule, index, bs, num_steps = build_run(
        method,
        p.network,
        p.entry(sname, method),
        p.dataset.y_train,
        split.forget,
        split.retain,
        forget_classes=split.classes,
        retain_available=p.retain_available.get(sname, True),
        num_devices=p.num_devices,
    )
    return ensemble_lib.unlearn(
        rule,
        art.originals().variables,
        p.dataset.x_train,
        p.dataset.y_train,
        index,
        keys=art.keys("unlearn"),
        batch_sizes=bs,
        num_steps=num_steps,
        mesh=p.mesh,
        progress=Progress(f"{sname}/{method}", enabled=verbose),
        min_models=1,
        augment=augment_lib.get(p.augmentation),
    )


def _audit_all(
    p: Plan,
    sname: str,
    method: str,
    result: FitResult,
    art: Artefacts,
    predictions,
    digest: str = "",
) -> list[Record]:
    """One record per seed: one context over the method's N models (rows of the shared
    predictions), audited once over those that did not diverge (see :func:`_records`)."""
    runtime, compile_s = result.runtime_s / p.seeds, result.compile_s
    ctx = audit_lib.AuditContext(
        network=p.network,
        dataset=p.dataset,
        split=p.splits[sname],
        runtime_s=runtime,
        compile_s=compile_s,
        extra={"seed": np.arange(p.seeds)},  # row s of every group is seed s
        predictions=predictions,
        groups={"unlearned": method, "original": ORIGINAL, "oracle": RETRAIN},
    )
    return _records(p.audits, ctx, sname, method, result.diverged, digest)


def _records(audits, ctx, sname: str, method: str, diverged, digest: str = "") -> list[Record]:
    """A record per model of ``ctx`` (its seed = its group row): a model flagged in
    ``diverged`` (``[N]``, or one flag for all) or with non-finite outputs is ``diverged`` and
    keeps only its timings; the others are audited together, once, by ``audits``."""
    audited = audit_lib.run_finite(audits, ctx, ~np.asarray(diverged, bool))
    runtime, compile_s = ctx.per_model(ctx.runtime_s), ctx.per_model(ctx.compile_s)
    out = []
    for i, seed in enumerate(ctx.rows.tolist()):
        if audited[i] is None:
            timings = {"runtime_s": float(runtime[i]), "compile_s": float(compile_s[i])}
            out.append(Record(sname, method, seed, "diverged", timings, digest))
        else:
            out.append(Record(sname, method, seed, "ok", audited[i], digest))
    return out


def _add_ensemble_metrics(
    p: Plan,
    art: Artefacts,
    sname: str,
    method: str,
    recs: list[Record],
    result: FitResult,
    predictions,
    retrain_records: list[Record],
    workdir: str,
) -> None:
    """Ensemble audits compare a method's N runs with the N oracles; each of the method's records
    gets the group's metrics (the same values for every seed), and the per-example arrays behind
    them go to ``workdir/ensemble/<scenario>/<method>.npz``."""
    if not p.ensemble_audits:
        return
    # Seeds whose oracle diverged have no reference to compare with: left out, like Avg. Gap.
    oracle_ok = {r.seed for r in retrain_records if r.status == "ok"}
    ok = np.asarray([r.seed for r in recs if r.status == "ok" and r.seed in oracle_ok], int)
    if len(ok) < 2:
        return  # too few finished runs for a distributional audit
    take = lambda tree: jax.tree.map(lambda x: x[ok], tree)
    ctx = audit_lib.EnsembleContext(
        network=p.network,
        dataset=p.dataset,
        split=p.splits[sname],
        unlearned=take(result.variables),
        oracle=take(art.oracles(sname).variables),
        original=take(art.originals().variables),
        records=[recs[s].metrics for s in ok],
        oracle_records=[retrain_records[s].metrics for s in ok],
        method=method,
        predictions=predictions,
        groups={"unlearned": method, "oracle": RETRAIN, "original": ORIGINAL},
        shadows=lambda: art.shadows_after(sname, method),
        rows=None if len(ok) == p.seeds else ok,
    )
    group = audit_lib.run_ensemble(p.ensemble_audits, ctx)
    for s in ok:
        recs[s].metrics.update(group)
    arrays = ensemble_audits.per_example_arrays(ctx)
    if not multihost.is_primary():
        return
    path = os.path.join(workdir, "ensemble", sname, f"{method}.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"  # written whole, then renamed: never half a file
    np.savez_compressed(tmp, models=ok, **arrays)
    os.replace(tmp, path)


def _add_gaps(records: list[Record], keys) -> None:
    reference = {r.seed: r.metrics for r in records if r.method == RETRAIN and r.status == "ok"}
    for r in records:
        # The Avg. Gap is reported only when every metric it averages was audited.
        ref = reference.get(r.seed)
        if r.status == "ok" and ref and all(k in r.metrics and k in ref for k in keys):
            gap = cls.avg_gap(r.metrics, ref, keys)
            if not math.isnan(gap):
                r.metrics["Avg_gap"] = gap
