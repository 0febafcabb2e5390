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
   as ``diverged`` and the experiment goes on. Each run is checkpointed under
   ``workdir/checkpoints/lm/<split>/rules/<rule>`` (fingerprinted like the models; see
   :func:`run_rule`): an interrupted run resumes from its last checkpoint, with the audits of
   the finished segments restored, and ends as an uninterrupted one; the checkpoints are removed
   once the rule's records are stored;
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
import shutil
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


def _safe(method: str) -> str:
    return method.replace(" ", "_").replace("(", "").replace(")", "")


def _cache_path(workdir: str, split: str, method: str) -> str:
    return os.path.join(workdir, "records", "lm", split, f"{_safe(method)}.json")


def _remove(directory: str | None) -> None:
    """Removes a finished run's checkpoint directory (the primary process; others wait)."""
    if directory is None:
        return
    multihost.sync(f"jaxunlearn_done_{directory}")
    if multihost.is_primary():
        shutil.rmtree(directory, ignore_errors=True)


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


def _cached(p, split, method, workdir, log, compute, *, written=None):
    """``compute()``'s JSON payload for ``method``, restored when its fingerprint matches;
    ``written()`` runs once a computed payload is stored (e.g. to remove the run's checkpoints)."""
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
    if written is not None:
        written()
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
        # The run resumes from its checkpoints (`run_rule`) until its records are stored.
        where = ("lm", split, "rules", _safe(name))
        label = f"{split}/{name}"
        payload, digest = _cached(
            p,
            split,
            name,
            workdir,
            log,
            lambda d, n=name, w=where, lb=label: _run_rule(
                p,
                art,
                split,
                n,
                reference,
                start_point,
                art.checked_dir(lb, _method_fields(p, split, n), *w),
            ),
            written=lambda w=where: _remove(art.checkpoint_path(*w)),
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


SEGMENTS_FILE = "segments.json"  # a checkpointed rule run's finished segments


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
    checkpoint_dir: str | None = None,
    on_restored=None,
    chunk_size: int | None = None,
):
    """Runs rule ``name`` from the ensemble ``variables`` ``[N, ...]`` in ``points`` equal
    segments of ``fit``, calling ``on_point(segment, step, variables, diverged)`` after each.

    Segment ``i`` draws its batches from ``fold_in(key, i)`` of each model's key; the rule state
    (optimizer moments, step counter, reference model) carries over between segments.

    Args:
      checkpoint_dir: where the run resumes from after an interruption (``None``: no
        checkpoints). Each segment is a ``fit`` with its own orbax directory
        ``segment_<i>`` (``fit`` checkpoints after every chunk and resumes inside the segment),
        and ``segments.json`` records every finished segment: its step, the divergence flags
        after ``on_point``, its run time and what ``on_point`` returned (a JSON value, e.g. the
        audited trajectory point). A rerun with the same directory (and the same arguments)
        restores the last finished segment's variables and state, calls
        ``on_restored(segment, step, value)`` for each finished segment in order instead of
        running or auditing it again, and continues with the next: it ends with the variables an
        uninterrupted run ends with. The caller removes the directory once it has stored what
        the run produced.
      on_restored: see ``checkpoint_dir``.
      chunk_size: steps per compiled chunk of ``fit`` (checkpoints happen between chunks);
        default: one chunk per segment.

    Returns:
      ``(variables, diverged [N], steps run, runtime seconds)`` (steps and run time include
      the restored segments).
    """
    rule, stream, bs, num_steps = build_lm_run(p, name, entry, forget_rows, retain_rows)
    points = max(1, min(int(points), num_steps))
    seg = math.ceil(num_steps / points)
    chunk = max(1, min(int(chunk_size or seg), seg))
    diverged = np.zeros(ensemble_lib.num_models(variables), bool)
    state, runtime, step = None, 0.0, 0
    segment_keys = lambda i: jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
    segment_dir = lambda i: (
        None if checkpoint_dir is None else os.path.join(checkpoint_dir, f"segment_{i}")
    )

    def segment(i, variables, state):
        return fit(
            rule,
            variables,
            stream,
            batch_sizes=bs,
            num_steps=seg,
            key=segment_keys(i),
            state=state,
            ensemble=True,
            mesh=p.mesh,
            chunk_size=chunk,
            checkpoint_dir=segment_dir(i),
            progress=Progress(f"{label} {i + 1}/{points}", enabled=verbose),
        )

    finished = _finished_segments(checkpoint_dir, points)
    if finished and not os.path.isdir(os.path.join(segment_dir(len(finished) - 1), str(seg))):
        finished = []  # the finished segment's checkpoint is gone: start over
    if finished:
        # The last finished segment's checkpoint holds its final step: `fit` restores it and
        # runs nothing (the state passed only gives the restore its structure).
        last = len(finished) - 1
        res = segment(last, variables, None)
        variables, state = res.variables, res.state
        for i, done in enumerate(finished):
            if on_restored is not None:
                on_restored(i, done["step"], done["value"])
        step = finished[-1]["step"]
        runtime = float(sum(d["runtime_s"] for d in finished))
        diverged = np.asarray(finished[-1]["diverged"], bool)
    for i in range(len(finished), points):
        if np.all(diverged):
            break
        t0 = time.perf_counter()
        res = segment(i, variables, state)
        took = time.perf_counter() - t0
        runtime += took
        variables, state, step = res.variables, res.state, step + seg
        diverged |= np.asarray(res.diverged, bool)
        value = None if on_point is None else on_point(i, step, variables, diverged)
        if checkpoint_dir is not None:
            finished.append(
                {"step": step, "diverged": diverged.tolist(), "runtime_s": took, "value": value}
            )
            if multihost.is_primary():
                records_lib.write_json(
                    os.path.join(checkpoint_dir, SEGMENTS_FILE), {"segments": finished}
                )
                if i > 0:  # only the last finished segment is restored from
                    shutil.rmtree(segment_dir(i - 1), ignore_errors=True)
    return variables, diverged, step, runtime


def _finished_segments(checkpoint_dir: str | None, points: int) -> list[dict]:
    """The finished segments recorded in ``checkpoint_dir`` (none without one, or when the
    record is missing, damaged, or from a run with more segments than ``points``). Every process
    reads the record (the workdir is shared, as orbax's checkpoints need) and keeps as many
    segments as the primary found."""
    if checkpoint_dir is None:
        return []
    try:
        stored = records_lib.read_json(os.path.join(checkpoint_dir, SEGMENTS_FILE), None)
    except (records_lib.DamagedFileError, OSError):
        stored = None
    segments = stored.get("segments") if isinstance(stored, dict) else None
    if not isinstance(segments, list) or len(segments) > points:
        segments = []
    return segments[: int(multihost.agree(len(segments)))]


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


def _run_rule(
    p: LMPlan, art: LMArtefacts, split: str, name: str, reference, start_point, checkpoint_dir
) -> dict:
    b = p.benchmark
    start = jax.tree.map(lambda x: jnp.repeat(x[:1], p.seeds, 0), art.target().variables)
    trajectory = [{"step": 0, **start_point}]
    verbose = art.verbose

    def on_point(i, step, variables, diverged):
        a = None if diverged[0] else audit_or_none(p, model(variables), split, full=False)
        if a is None:
            diverged[0] = True
            point = {"step": step, "diverged": True}
        else:
            fq = evaluate.table_metrics(a, reference)["forget_quality"]
            point = {
                "step": step,
                "forget_quality": fq,
                "model_utility": a.metrics["model_utility"],
            }
            if verbose:
                print(
                    f"  [{split}/{name}] step {step}: forget quality {fq:.3g}, "
                    f"model utility {a.metrics['model_utility']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
        trajectory.append(point)
        return point

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
        checkpoint_dir=checkpoint_dir,
        on_restored=lambda i, step, point: trajectory.append(point),
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
