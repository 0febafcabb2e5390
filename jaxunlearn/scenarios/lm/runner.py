"""One LM experiment: corpus -> target and retain models -> every rule -> audits -> table, plot.

:func:`run_lm_experiment` (what ``experiments.main`` runs for a config with ``track = "lm"``):

1. the target and the retain models of every split (:mod:`~jaxunlearn.scenarios.lm.artefacts`:
   trained once, checkpointed, reused); the target's training-QA exact match is printed and
   recorded (``train_exact_match``: the share of training answers its greedy decoding
   reproduces exactly, i.e. every teacher-forced argmax right);
2. reference rows: the target, the first retain model (the reference of forget quality and
   privleak) and the other retain seeds (their forget quality is the metric's noise floor);
3. every rule of the split, run by :func:`jaxunlearn.train.fit` from copies of the target
   (``seeds`` runs vmapped as one ensemble), in ``audit_points`` equal segments with the forget
   quality and model utility of each seed audited after every segment (the trajectory), then the
   full battery (:mod:`~jaxunlearn.scenarios.lm.evaluate`). Each segment draws its batches from its
   own key (``fold_in(run key, segment)``); the rule state (optimizer moments, step counter,
   reference model) carries over. A run whose parameters or scores turn non-finite is recorded
   as ``diverged`` and the experiment goes on;
4. MUSE's sustainability (sequential deletion requests, each from the previous model) and
   scalability (growing forget sets), and the relearning attack, for ``muse_rules``
   (:mod:`~jaxunlearn.scenarios.lm.muse`).

Writes ``results.json`` (``records``, ``trajectories``, ``muse``), ``results.txt`` (the table,
also printed) and ``trajectory.png`` into the workdir. Each method's records are stored under
``workdir/records/lm/<split>/`` with the fingerprint of the config fields that determine them;
a rerun restores what still matches (the classifier runner's scheme) and the workdir is locked.
"""

from __future__ import annotations

import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import ensemble as ensemble_lib
from jaxunlearn.scenarios import fingerprint as fp_lib
from jaxunlearn.scenarios.lm import evaluate
from jaxunlearn.scenarios.lm import report as lm_report
from jaxunlearn.scenarios.lm.artefacts import LMArtefacts, common_fields, model
from jaxunlearn.scenarios.lm.plan import LMPlan, lm_plan
from jaxunlearn.scenarios.lock import workdir_lock
from jaxunlearn.scenarios.plan import build_run
from jaxunlearn.scenarios.report import Record
from jaxunlearn.train import Progress, fit, make_stream, multihost
from jaxunlearn.train import records as records_lib

TARGET, RETAIN = "target", "retain"
REFERENCES = "references"  # the records file of the target and retain rows
MUSE = "muse"  # the records file of the MUSE scenarios and the relearning attack
DIVERGED, OK = "diverged", "ok"


def retain_label(seed: int) -> str:
    """The method name of retain seed ``seed`` (0: ``retain``, the reference)."""
    return RETAIN if seed == 0 else f"retain (seed {seed})"


def run_lm_experiment(config, workdir: str, *, verbose: bool = True, benchmark=None) -> dict:
    """Runs the LM experiment ``config`` in ``workdir``.

    Args:
      config: an LM config (``experiments/configs/lm_fictitious.py``).
      workdir: checkpoints, records and results.
      verbose: progress lines on stderr and the table on stdout.
      benchmark: an :class:`~jaxunlearn.scenarios.lm.benchmark.LMBenchmark` instead of loading
        the config's corpus.

    Returns:
      ``{"records": [Record], "trajectories": {split: {rule: [point]}}, "muse": {...},
      "table": str}``.
    """
    p = lm_plan(config, benchmark=benchmark)
    verbose = verbose and multihost.is_primary()
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir):
        return _run(p, workdir, verbose)


def _log_fn(verbose: bool):
    return (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)


def _run(p: LMPlan, workdir: str, verbose: bool) -> dict:
    log = _log_fn(verbose)
    b = p.benchmark
    log(
        f"jaxunlearn LM: {p.sources['dataset']} ({len(b.train)} training rows, "
        f"{len(b.holdout)} holdout), transformer {p.sources['model_kwargs']}, "
        f"scenarios {list(p.scenarios)}, rules {list(p.rules)}"
    )
    art = LMArtefacts(p, workdir, verbose=verbose, log=log)
    records: list[Record] = []
    trajectories: dict = {}
    muse: dict = {}
    for split in p.scenarios:
        log(
            f"scenario {split}: forget {len(b.forget[split])} rows "
            f"({len(b.authors_of(b.forget[split]))} authors), retain {len(b.retain[split])}"
        )
        recs, traj, refs = _run_split(p, art, split, workdir, log)
        records += recs
        trajectories[split] = {"rules": traj, "references": refs}
        if split == p.main_scenario and p.muse_rules:
            from jaxunlearn.scenarios.lm import muse as muse_lib

            muse, _ = _cached(
                p, split, MUSE, workdir, log, lambda d, s=split: muse_lib.run_muse(p, art, s, log)
            )
    text = lm_report.table(records)
    out = {"records": records, "trajectories": trajectories, "muse": muse, "table": text}
    if not multihost.is_primary():
        return out
    records_lib.write_json(
        os.path.join(workdir, "results.json"),
        {
            "records": [r.to_json() for r in records],
            "trajectories": trajectories,
            "muse": muse,
        },
        indent=1,
    )
    with open(os.path.join(workdir, "results.txt"), "w") as f:
        f.write(text + "\n")
    main = trajectories[p.main_scenario]
    plot = lm_report.trajectory_plot(
        main["rules"],
        {k: tuple(v) for k, v in main["references"].items()},
        os.path.join(workdir, "trajectory.png"),
        title=f"{p.main_scenario}: forget quality vs model utility along each rule's run",
    )
    if verbose:
        print(text, flush=True)
        print(f"\nwrote {os.path.join(workdir, 'results.json')}, results.txt, {plot}", flush=True)
    return out


# --------------------------------------------------------------------------------------------------
# Cached records


def _cache_path(workdir: str, split: str, method: str) -> str:
    safe = method.replace(" ", "_").replace("(", "").replace(")", "")
    return os.path.join(workdir, "records", "lm", split, f"{safe}.json")


def _stored(path: str, digest: str):
    try:
        stored = records_lib.read_json(path, default=None)
    except (records_lib.DamagedFileError, OSError):
        return None
    if isinstance(stored, dict) and stored.get("fingerprint") == digest:
        return stored
    return None


def _method_fields(p: LMPlan, split: str, method: str) -> dict:
    fields = {
        **common_fields(p),
        "split": split,
        "retain_seeds": p.retain_count(split),
        "eval": fp_lib.canonical(p.eval),
        "method": method,
    }
    if method == MUSE:
        fields["muse"] = {
            "rules": {n: fp_lib.resolved_entry(p.entry(split, n)) for n in p.muse_rules},
            "requests": p.sustainability_requests,
            "fractions": list(p.scalability_fractions),
            "relearn_steps": p.relearn_steps,
        }
    elif method != REFERENCES:
        fields["rule"] = fp_lib.resolved_entry(p.entry(split, method))
        fields["seeds"] = p.seeds
        fields["audit_points"] = p.audit_points
    return fields


def _cached(p, split, method, workdir, log, compute):
    """``compute()``'s JSON payload for ``method``, restored when its fingerprint matches."""
    fields = _method_fields(p, split, method)
    digest = fp_lib.digest(fields)
    path = _cache_path(workdir, split, method)
    stored = _stored(path, digest) if multihost.is_primary() else None
    if multihost.agree(stored is not None):
        log(f"  {method}: fingerprint {digest} matches; restored its records")
        return stored["payload"], digest
    payload = compute(digest)
    if multihost.is_primary():
        records_lib.write_json(
            path, {"fingerprint": digest, "fields": fp_lib.canonical(fields), "payload": payload}
        )
    return payload, digest


# --------------------------------------------------------------------------------------------------
# One split


def _audit_json(a: evaluate.ModelAudit) -> dict:
    return {"metrics": a.metrics, "tr_forget": a.tr_forget.tolist(), "auc_forget": a.auc_forget}


def _audit_from(d: dict) -> evaluate.ModelAudit:
    return evaluate.ModelAudit(d["metrics"], np.asarray(d["tr_forget"]), d["auc_forget"])


def _sample_key(p: LMPlan, tag: int):
    return jax.random.fold_in(jax.random.key(p.root_seed), 1000 + tag)


def _run_split(p: LMPlan, art: LMArtefacts, split: str, workdir: str, log):
    b = p.benchmark

    def references(digest):
        target = art.target()
        retain = art.retain(split)
        t0 = model(target.variables)
        tf = evaluate.teacher_forced(
            p.network.apply, t0, b.x[b.train], b.y[b.train], batch_size=int(p.eval["batch_size"])
        )
        exact = float(np.mean(tf["em"] >= 1.0 - 1e-6))
        log(f"  target: training-QA exact match {exact:.3f} (token accuracy {tf['em'].mean():.3f})")
        audits = {TARGET: _audit_json(evaluate.audit_model(p, t0, split, key=_sample_key(p, 0)))}
        audits[TARGET]["metrics"]["train_exact_match"] = exact
        audits[TARGET]["metrics"]["runtime_s"] = target.runtime_s
        count = p.retain_count(split)
        for s in range(count):
            a = evaluate.audit_model(p, model(retain.variables, s), split, key=_sample_key(p, 0))
            audits[retain_label(s)] = _audit_json(a)
            audits[retain_label(s)]["metrics"]["runtime_s"] = retain.runtime_s / count
        return {"audits": audits, "diverged": bool(np.any(retain.diverged) or target.diverged)}

    payload, digest = _cached(p, split, REFERENCES, workdir, log, references)
    audits = {k: _audit_from(v) for k, v in payload["audits"].items()}
    reference = audits[RETAIN]
    records = []
    refs = {}
    for method, a in audits.items():
        metrics = evaluate.table_metrics(a, reference)
        records.append(Record(split, method, 0, OK, metrics, digest))
        if method != RETAIN:
            refs[method] = (metrics["forget_quality"], metrics["model_utility"])
        log(
            f"  {method}: forget quality {metrics['forget_quality']:.3g}, "
            f"model utility {metrics['model_utility']:.3f}"
        )
    trajectories = {}
    fq0, mu0 = refs[TARGET]
    start_point = {"forget_quality": fq0, "model_utility": mu0}
    for name in p.rules_of(split):
        payload, digest = _cached(
            p,
            split,
            name,
            workdir,
            log,
            lambda d, n=name: _run_rule(p, art, split, n, reference, start_point),
        )
        for s, entry in enumerate(payload["seeds"]):
            if entry["status"] != OK:
                records.append(Record(split, name, s, entry["status"], entry["metrics"], digest))
                log(f"  DIVERGED: {name} on {split}, seed {s}")
                continue
            metrics = evaluate.table_metrics(_audit_from(entry["audit"]), reference)
            metrics["runtime_s"] = entry["metrics"]["runtime_s"]
            records.append(Record(split, name, s, OK, metrics, digest))
        trajectories[name] = payload["trajectory"]
    return records, trajectories, refs


# --------------------------------------------------------------------------------------------------
# One rule


def build_lm_run(
    p: LMPlan, name: str, entry: dict, forget_rows, retain_rows, *, stream: bool = True, **overrides
):
    """Rule ``name`` and its stream: ``(rule, stream, batch sizes, number of steps)``. The index
    sets come from :func:`~jaxunlearn.scenarios.plan.build_run` (the parts the rule reads and its
    validation parts); the stream carries every QA row and the extras (IdkDPO's and AltPO's
    answers). ``stream=False`` builds the rule alone (``None`` in its place), e.g. inside a
    sweep's ``vmap`` over traced ``overrides``."""
    b = p.benchmark
    rule, index, bs, num_steps = build_run(
        name,
        p.network,
        entry,
        b.y,
        forget_rows,
        retain_rows,
        num_devices=p.num_devices,
        **overrides,
    )
    data = make_stream(b.x, b.y, index, extra=dict(b.extra)) if stream else None
    return rule, data, bs, num_steps


def run_rule(
    p: LMPlan,
    name: str,
    variables,
    forget_rows,
    retain_rows,
    *,
    keys,
    entry: dict,
    on_point=None,
    points: int = 1,
    label: str = "",
    verbose: bool = True,
):
    """Runs rule ``name`` from the ensemble ``variables`` ``[N, ...]`` in ``points`` equal
    segments of ``fit``, calling ``on_point(segment, step, variables, diverged)`` after each.

    Returns:
      ``(variables, diverged [N], steps run, runtime seconds)``.
    """
    rule, stream, bs, num_steps = build_lm_run(p, name, entry, forget_rows, retain_rows)
    points = max(1, min(int(points), num_steps))
    seg = math.ceil(num_steps / points)
    diverged = np.zeros(ensemble_lib.num_models(variables), bool)
    state, runtime, step = None, 0.0, 0
    for i in range(points):
        seg_keys = jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
        t0 = time.perf_counter()
        res = fit(
            rule,
            variables,
            stream,
            batch_sizes=bs,
            num_steps=seg,
            key=seg_keys,
            state=state,
            ensemble=True,
            mesh=p.mesh,
            chunk_size=seg,
            progress=Progress(f"{label} {i + 1}/{points}", enabled=verbose),
        )
        runtime += time.perf_counter() - t0
        variables, state, step = res.variables, res.state, step + seg
        diverged |= np.asarray(res.diverged, bool)
        if on_point is not None:
            on_point(i, step, variables, diverged)
        if np.all(diverged):
            break
    return variables, diverged, step, runtime


def audit_or_none(p: LMPlan, variables, split: str, **kw) -> evaluate.ModelAudit | None:
    """:func:`evaluate.audit_model`, or ``None`` when the model's scores are not finite (a
    diverged run whose parameters stayed finite but whose outputs overflow)."""
    try:
        a = evaluate.audit_model(p, variables, split, **kw)
    except (ValueError, FloatingPointError):
        return None  # the audits reject non-finite inputs
    finite = bool(np.all(np.isfinite(a.tr_forget))) and all(
        math.isfinite(v) for v in a.metrics.values() if isinstance(v, float)
    )
    return a if finite else None


def _run_rule(p: LMPlan, art: LMArtefacts, split: str, name: str, reference, start_point) -> dict:
    b = p.benchmark
    start = jax.tree.map(lambda x: jnp.repeat(x[:1], p.seeds, 0), art.target().variables)
    trajectory = [{"step": 0, **start_point}]
    verbose = art.verbose

    def on_point(i, step, variables, diverged):
        if diverged[0]:
            trajectory.append({"step": step, "diverged": True})
            return
        a = audit_or_none(p, model(variables), split, full=False)
        if a is None:
            diverged[0] = True
            trajectory.append({"step": step, "diverged": True})
            return
        fq = evaluate.table_metrics(a, reference)["forget_quality"]
        trajectory.append(
            {"step": step, "forget_quality": fq, "model_utility": a.metrics["model_utility"]}
        )
        if verbose:
            print(
                f"  [{split}/{name}] step {step}: forget quality {fq:.3g}, "
                f"model utility {a.metrics['model_utility']:.3f}",
                file=sys.stderr,
                flush=True,
            )

    variables, diverged, steps, runtime = run_rule(
        p,
        name,
        start,
        b.forget[split],
        b.retain[split],
        keys=art.keys("unlearn", p.seeds),
        entry=p.entry(split, name),
        on_point=on_point,
        points=p.audit_points,
        label=f"{split}/{name}",
        verbose=verbose,
    )
    seeds = []
    for s in range(p.seeds):
        metrics = {"runtime_s": runtime / p.seeds, "steps": steps}
        if diverged[s]:
            seeds.append({"status": DIVERGED, "metrics": metrics})
            continue
        a = audit_or_none(p, model(variables, s), split, key=_sample_key(p, 0))
        if a is None:
            seeds.append({"status": DIVERGED, "metrics": metrics})
            continue
        seeds.append({"status": OK, "metrics": metrics, "audit": _audit_json(a)})
    return {"seeds": seeds, "trajectory": trajectory}
