"""One robust-LM experiment: every LM rule x every robustness audit, with seeds as error bars.

:func:`run_lm_robust_experiment` (what ``experiments.main`` runs for ``track = "lm_robust"``):

1. the target (every training row: each fact in every trained form, the graph facts, the owners'
   watermarked QA) and the retain model (the same without the forget authors' facts in any form
   and their graph facts), trained once and checkpointed by the LM scenario's
   :class:`~jaxunlearn.scenarios.lm.artefacts.LMArtefacts` (a rerun restores them);
2. the audit battery (:mod:`~jaxunlearn.scenarios.lm_robust.audits`) on the target and the retain
   model: the two ends every rule lies between;
3. every rule, run by the LM runner's :func:`~jaxunlearn.scenarios.lm.runner.run_rule` from
   ``seeds`` copies of the target in one vmapped ensemble (the seeds differ in batch order), on
   the QA-form forget rows with the QA-form retain rows: unlearning sees one form only; then the
   battery on each seed (a seed whose parameters or scores turn non-finite is ``diverged``);
4. the registered inference wrappers and analyses the config names
   (:mod:`~jaxunlearn.scenarios.lm_robust.extensions`).

Writes ``results.json`` (``records``: one per method and seed with every metric; ``concepts``:
the located concept vectors and their ablation effect; ``analyses``), ``results.txt`` (the rule x
audit table, also printed) and ``heatmap.png``. Each method's records are stored under
``workdir/records/lm_robust/`` with the fingerprint of what determines them; a rerun restores
those that match and reruns the rest.
"""

from __future__ import annotations

import math
import os
import sys

import jax
import jax.numpy as jnp

from jaxunlearn.scenarios import fingerprint as fp_lib
from jaxunlearn.scenarios.lm.artefacts import LMArtefacts, common_fields, model
from jaxunlearn.scenarios.lm.runner import run_rule
from jaxunlearn.scenarios.lm_robust import audits as audits_lib
from jaxunlearn.scenarios.lm_robust import extensions
from jaxunlearn.scenarios.lm_robust import report as report_lib
from jaxunlearn.scenarios.lm_robust.plan import RobustPlan, robust_plan
from jaxunlearn.scenarios.lock import workdir_lock
from jaxunlearn.scenarios.report import Record
from jaxunlearn.train import multihost
from jaxunlearn.train import records as records_lib

TARGET, RETAIN = "target", "retain"
DIVERGED, OK = "diverged", "ok"


def run_lm_robust_experiment(config, workdir: str, *, verbose: bool = True, bench=None) -> dict:
    """Runs the robust-LM experiment ``config`` in ``workdir``.

    Args:
      config: a ``track = "lm_robust"`` config (``experiments/configs/lm_robust.py``).
      workdir: checkpoints, records and results.
      verbose: progress on stderr, the table on stdout.
      bench: a :class:`~jaxunlearn.scenarios.lm_robust.benchmark.RobustBenchmark` to use instead
        of building the config's.

    Returns:
      ``{"records": [Record], "concepts": [...], "analyses": {...}, "table": str}``.
    """
    p = robust_plan(config, bench=bench)
    verbose = verbose and multihost.is_primary()
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir):
        return _run(p, workdir, verbose)


def _run(p: RobustPlan, workdir: str, verbose: bool) -> dict:
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    b, split = p.bench, p.split
    log(
        f"jaxunlearn LM robust: {len(b.lm.train)} training rows (forms {list(b.train_forms)}, "
        f"{len(b.graph.facts)} graph facts), forget {len(b.lm.forget[split])} QA rows, "
        f"transformer {p.lm.sources['model_kwargs']}, {len(p.rules)} rules x {len(p.audits)} "
        f"audits, {p.lm.seeds} seeds"
    )
    art = LMArtefacts(p.lm, workdir, verbose=verbose, log=log)
    target = model(art.target().variables)
    retain = model(art.retain(split).variables)
    ctx = audits_lib.make_context(p, target, retain)
    net = p.network
    records: list[Record] = []

    def references(_):
        return {
            m: audits_lib.audit_model(ctx, net, v, p.audits)
            for m, v in ((TARGET, target), (RETAIN, retain))
        }

    payload, digest = _cached(p, workdir, "references", {}, log, references)
    for m in (TARGET, RETAIN):
        records.append(Record(split, m, 0, OK, payload[m], digest))
        log(f"  {m}: " + _brief(payload[m]))
    for name in p.rules:
        fields = {"rule": fp_lib.resolved_entry(p.lm.entry(split, name)), "seeds": p.lm.seeds}
        payload, digest = _cached(
            p, workdir, name, fields, log, lambda _, n=name: _run_rule(p, art, ctx, n, log)
        )
        for s, entry in enumerate(payload["seeds"]):
            records.append(Record(split, name, s, entry["status"], entry["metrics"], digest))
    for name in p.wrappers:
        payload, digest = _cached(
            p, workdir, f"wrapper_{name}", {}, log, lambda _, n=name: _run_wrapper(p, ctx, n)
        )
        records.append(Record(split, name, 0, OK, payload, digest))
    analyses = {name: extensions.ANALYSES[name](p, art, log) for name in p.analyses}
    text = report_lib.table(records)
    out = {
        "records": records,
        "concepts": audits_lib.concept_summary(ctx),
        "analyses": analyses,
        "table": text,
    }
    if not multihost.is_primary():
        return out
    records_lib.write_json(
        os.path.join(workdir, "results.json"),
        {
            "records": [r.to_json() for r in records],
            "concepts": out["concepts"],
            "analyses": analyses,
            "settings": {"audit": p.audit, "variants": _jsonable(p.variants)},
        },
        indent=1,
    )
    with open(os.path.join(workdir, "results.txt"), "w") as f:
        f.write(text + "\n")
    plot = report_lib.heatmap(records, os.path.join(workdir, "heatmap.png"))
    if verbose:
        print(text, flush=True)
        print(f"\nwrote {os.path.join(workdir, 'results.json')}, results.txt, {plot}", flush=True)
    return out


def _brief(metrics: dict) -> str:
    metrics = audits_lib.with_derived(metrics)
    keys = [c[1] for c in audits_lib.COLUMNS if c[1] in metrics][:6]
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in keys)


def _jsonable(v: dict) -> dict:
    return {k: list(x) if isinstance(x, tuple) else x for k, x in v.items()}


def _cached(p: RobustPlan, workdir: str, method: str, extra: dict, log, compute):
    """``compute(digest)``'s JSON payload for ``method``, restored when the fingerprint of the
    fields that determine it (data, model, recipe, audits, ``extra``) matches."""
    fields = {
        **common_fields(p.lm),
        "track": "lm_robust",
        "audits": list(p.audits),
        "audit": fp_lib.canonical(p.audit),
        "method": method,
        **extra,
    }
    digest = fp_lib.digest(fields)
    path = os.path.join(workdir, "records", "lm_robust", f"{method}.json")
    stored = None
    if multihost.is_primary():
        try:
            stored = records_lib.read_json(path, default=None)
        except (records_lib.DamagedFileError, OSError):
            stored = None
        if not (isinstance(stored, dict) and stored.get("fingerprint") == digest):
            stored = None
    if multihost.agree(stored is not None):
        log(f"  {method}: fingerprint {digest} matches; restored its records")
        return stored["payload"], digest
    payload = compute(digest)
    if multihost.is_primary():
        records_lib.write_json(
            path, {"fingerprint": digest, "fields": fp_lib.canonical(fields), "payload": payload}
        )
    return payload, digest


def _finite(metrics: dict) -> bool:
    return all(math.isfinite(v) for k, v in metrics.items() if not k.startswith("graph/"))


def _run_rule(p: RobustPlan, art: LMArtefacts, ctx, name: str, log) -> dict:
    b = p.bench
    lm = p.lm
    start = jax.tree.map(lambda x: jnp.repeat(x[:1], lm.seeds, 0), art.target().variables)
    variables, diverged, steps, runtime = run_rule(
        lm,
        name,
        start,
        b.lm.forget[p.split],
        b.unlearn_retain,
        keys=art.keys("unlearn", lm.seeds),
        entry=lm.entry(p.split, name),
        points=1,
        label=f"{p.split}/{name}",
        verbose=art.verbose,
    )
    seeds = []
    for s in range(lm.seeds):
        base = {"runtime_s": runtime / lm.seeds, "steps": steps}
        metrics = None
        if not diverged[s]:
            try:
                metrics = audits_lib.audit_model(ctx, p.network, model(variables, s), p.audits)
            except (ValueError, FloatingPointError):
                metrics = None  # the audits reject non-finite scores
        if metrics is None or not _finite(metrics):
            seeds.append({"status": DIVERGED, "metrics": base})
            log(f"  DIVERGED: {name}, seed {s}")
            continue
        seeds.append({"status": OK, "metrics": {**metrics, **base}})
        log(f"  {name} (seed {s}): " + _brief(metrics))
    return {"seeds": seeds}


def _run_wrapper(p: RobustPlan, ctx, name: str) -> dict:
    network, variables = extensions.WRAPPERS[name](
        p, ctx.target, key=jax.random.key(p.lm.root_seed)
    )
    return audits_lib.audit_model(ctx, network, variables, p.audits)


__all__ = ["run_lm_robust_experiment"]
