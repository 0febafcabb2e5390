"""The learned-rule experiment: meta-train Metz et al.'s unsupervised rule, then judge its encoder.

1. Meta-trains :func:`~jaxunlearn.repr.learned.learned_unsupervised_rule` for the config's base
   MLP on the training split (:mod:`jaxunlearn.repr.meta`: truncated unrolls vmapped over tasks,
   the few-shot ridge meta-objective), evaluating theta every ``eval_every`` meta-steps on fixed
   tasks whose episodes come from the test split; the meta-state is checkpointed with orbax every
   ``checkpoint_every`` meta-steps, so a rerun with the same workdir resumes.
2. Saves the trained theta (:func:`~jaxunlearn.repr.learned.save_theta`, with the base
   architecture), then builds the rule from that checkpoint through the registry
   (``repr.make("learned_unsupervised_rule", network, checkpoint=...)``) and applies it with
   :func:`jaxunlearn.train.fit` to fresh base networks on the whole unlabelled training split.
3. Audits the representations (``features``): weighted k-NN and linear-probe accuracy on the test
   split (:func:`jaxunlearn.audit.weighted_knn_accuracy`, :func:`jaxunlearn.audit.
   linear_probe_accuracy`) and the ridge meta-objective on test episodes of all classes, for the
   meta-trained rule, the same rule before meta-training (its initial theta) and the random
   encoder (the networks before any update), over ``evaluation.seeds`` seeds.

Writes ``results.json`` (records per encoder and seed, the meta-training history and its
settings), ``results.txt`` (the table, also printed) and ``results.png`` (meta-objective over
meta-steps). Run: ``python -m experiments.main --config=experiments/configs/learned_rule.py
--workdir=/tmp/lr``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

import jax
import numpy as np

from jaxunlearn import audit, models
from jaxunlearn import data as data_lib
from jaxunlearn import repr as repr_lib
from jaxunlearn.repr import learned, meta
from jaxunlearn.scenarios import fingerprint, report, track_config
from jaxunlearn.scenarios.lock import workdir_lock
from jaxunlearn.train import checkpoint, fit, make_stream
from jaxunlearn.train import records as records_lib

REQUIRED = ("dataset", "model")
DEFAULTS = {
    "track": "learned_rule",
    "data_kwargs": {},
    "data_dir": "",
    "model_kwargs": {},
    "seed": 0,
    "rule": {},
    "meta": {},
    "evaluation": {},
    "distributed": False,
}
RULE_DEFAULTS = {"hidden": 16, "channels": 4, "rank": 4}
META_RUN_DEFAULTS = {"num_steps": 150, "eval_every": 25, "eval_tasks": 16, "checkpoint_every": 50}
EVALUATION_DEFAULTS = {"seeds": 3, "steps": 100, "batch_size": 32, "knn_k": 20, "probe_epochs": 100}
ENCODERS = ("random_encoder", "untrained_rule", "learned_rule")
METRICS = ("knn", "linear_probe", "ridge_loss", "ridge_accuracy")
THETA_DIR = "learned_rule"
META_DIR = "meta_checkpoints"
HISTORY_FILE = "meta_history.json"


def _section(cfg: dict, name: str, defaults: dict) -> dict:
    given = track_config.plain(cfg[name])
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"`{name}` has unknown key(s) {unknown}; valid: {sorted(defaults)}")
    return {**defaults, **given}


def check_config(config) -> dict:
    """The config as a plain dict with defaults filled in; a ``ValueError`` naming any bad
    setting, before compute."""
    cfg = track_config.with_defaults(config, REQUIRED, DEFAULTS, "learned-rule")
    data_lib.check_name(cfg["dataset"])
    models.check_name(cfg["model"])
    if cfg["model"] != "mlp":
        raise ValueError(
            f"`model` must be 'mlp' (the learned rule trains an MLP's hidden layers); "
            f"got {cfg['model']!r}"
        )
    cfg["rule"] = _section(cfg, "rule", RULE_DEFAULTS)
    for k, v in cfg["rule"].items():
        repr_lib.common.check_count(v, f"rule.{k}", 1)
    meta_fields = {f.name: f.default for f in meta.MetaSettings.__dataclass_fields__.values()}
    run = _section(cfg, "meta", {**meta_fields, **META_RUN_DEFAULTS})
    cfg["meta_settings"] = meta.MetaSettings(**{k: run[k] for k in meta_fields})
    repr_lib.common.check_count(run["num_steps"], "meta.num_steps", 1)
    repr_lib.common.check_count(run["eval_every"], "meta.eval_every", 0)
    repr_lib.common.check_count(run["eval_tasks"], "meta.eval_tasks", 1)
    repr_lib.common.check_count(run["checkpoint_every"], "meta.checkpoint_every", 1)
    cfg["meta"] = run
    cfg["evaluation"] = _section(cfg, "evaluation", EVALUATION_DEFAULTS)
    ev = cfg["evaluation"]
    repr_lib.common.check_count(ev["seeds"], "evaluation.seeds", 1)
    repr_lib.common.check_count(ev["steps"], "evaluation.steps", 1)
    repr_lib.common.check_count(ev["batch_size"], "evaluation.batch_size", 2)
    repr_lib.common.check_count(ev["knn_k"], "evaluation.knn_k", 1)
    repr_lib.common.check_count(ev["probe_epochs"], "evaluation.probe_epochs", 1)
    return cfg


def _meta_fields(cfg: dict, architecture) -> dict:
    """What the meta-trained theta depends on (its checkpoint is reused only when they match)."""
    return {
        "dataset": cfg["dataset"],
        "data_kwargs": track_config.plain(cfg["data_kwargs"]),
        "architecture": list(architecture),
        "seed": cfg["seed"],
        "rule": cfg["rule"],
        "meta": {k: v for k, v in cfg["meta"].items() if k != "checkpoint_every"},
    }


def _meta_train(cfg, trainer, workdir, key, fields, log):
    """Meta-trains (resuming from ``workdir``'s meta checkpoint when its fingerprint matches);
    returns ``(theta, initial theta, history, seconds)``."""
    run = cfg["meta"]
    digest = fingerprint.digest(fields)
    start = trainer.init(key)
    initial_theta = start.theta
    mngr = checkpoint.manager(os.path.join(workdir, META_DIR))
    history_path = os.path.join(workdir, HISTORY_FILE)
    saved = records_lib.read_json(history_path, default=None)
    state, history, seconds = start, None, 0.0
    if saved is not None and saved.get("fingerprint") == digest:
        restored = checkpoint.restore_latest(mngr, {"state": start})
        if restored is not None and restored[0] == saved["step"]:
            state, history, seconds = restored[1]["state"], saved["history"], saved["seconds"]
            log(f"meta-training: resuming at meta-step {restored[0]}")
    elif saved is not None:
        log("meta-training: the config changed, starting over")
    total = int(run["num_steps"])
    while int(state.step) < total:
        chunk = min(int(run["checkpoint_every"]), total - int(state.step))
        t0 = time.perf_counter()
        state, history = meta.meta_train(
            trainer,
            chunk,
            key=key,
            state=state,
            history=history,
            eval_every=int(run["eval_every"]),
            eval_key=jax.random.fold_in(key, 0xE7A1),
        )
        jax.block_until_ready(state.theta)
        seconds += time.perf_counter() - t0
        step = int(state.step)
        checkpoint.save(mngr, step, {"state": state})
        mngr.wait_until_finished()
        records_lib.write_json(
            history_path,
            {"fingerprint": digest, "step": step, "seconds": seconds, "history": history},
        )
        last = history["eval"][-1] if history["eval"] else {}
        log(
            f"meta-step {step}/{total}: meta-loss {np.mean(history['meta_loss'][-chunk:]):.3f}"
            + (f", eval loss {last['loss']:.3f} (random {last['random_loss']:.3f})" if last else "")
            + f" ({seconds:.0f}s)"
        )
    mngr.close()
    return state.theta, initial_theta, history, seconds


def _encoder_metrics(features_fn, variables, ds, cfg, seed: int) -> dict[str, float]:
    ev = cfg["evaluation"]
    f_train = np.asarray(features_fn(variables, ds.x_train))
    f_test = np.asarray(features_fn(variables, ds.x_test))
    if not (np.all(np.isfinite(f_train)) and np.all(np.isfinite(f_test))):
        return {}
    knn = audit.weighted_knn_accuracy(f_train, ds.y_train, f_test, ds.y_test, k=int(ev["knn_k"]))
    probe = audit.linear_probe_accuracy(
        f_train, ds.y_train, f_test, ds.y_test, epochs=int(ev["probe_epochs"])
    )
    # The meta-objective on every class: support from the training split, queries from the test.
    shots = cfg["meta"]["shots"]
    rng = np.random.default_rng(seed)
    support = np.concatenate(
        [
            rng.choice(np.flatnonzero(ds.y_train == c), shots, replace=False)
            for c in range(ds.num_classes)
        ]
    )
    loss, acc = meta.ridge_meta_objective(
        f_train[support],
        ds.y_train[support],
        f_test,
        ds.y_test,
        num_classes=int(ds.num_classes),
        ridge=cfg["meta"]["ridge"],
    )
    return {
        "knn": float(knn),
        "linear_probe": float(probe),
        "ridge_loss": float(loss),
        "ridge_accuracy": 100.0 * float(acc),
    }


class LearnedRulePlan(NamedTuple):
    """A validated learned-rule experiment: the data loaded and meta-training built, nothing run.

    Attributes:
      cfg: :func:`check_config`'s dict.
      dataset: the classification dataset.
      network: the base MLP.
      architecture: its layer widths (:func:`~jaxunlearn.repr.learned.architecture_of`).
      trainer: the :class:`~jaxunlearn.repr.meta.MetaTrainer` (its ``init`` traced abstractly).
    """

    cfg: dict
    dataset: data_lib.Dataset
    network: object
    architecture: tuple
    trainer: meta.MetaTrainer


def plan(config) -> LearnedRulePlan:
    """Checks ``config`` (:func:`check_config`), loads its dataset and builds meta-training,
    without compute; a ``ValueError`` naming the setting when the data cannot serve it (not a
    classification dataset, ``meta.num_ways`` above its classes, ``meta.shots`` above a class's
    training examples, an ``evaluation`` batch or ``knn_k`` larger than the training split).
    """
    cfg = check_config(config)
    ds = track_config.load_dataset(cfg)
    if ds.task != "classification":
        raise ValueError(f"dataset {cfg['dataset']!r} is not a classification dataset")
    n, ev = len(ds.y_train), cfg["evaluation"]
    smallest = int(np.bincount(ds.y_train, minlength=ds.num_classes).min())
    if cfg["meta"]["shots"] > smallest:
        raise ValueError(
            f"`meta.shots` ({cfg['meta']['shots']}) exceeds the training examples of the "
            f"smallest class ({smallest}): the evaluation's support set draws that many per class"
        )
    for name in ("batch_size", "knn_k"):
        if int(ev[name]) > n:
            raise ValueError(
                f"`evaluation.{name}` ({ev[name]}) exceeds the training split ({n} examples)"
            )
    network = models.make_network(
        "mlp",
        input_shape=ds.input_shape,
        num_outputs=ds.num_outputs,
        **track_config.plain(cfg["model_kwargs"]),
    )
    architecture = learned.architecture_of(jax.eval_shape(network.init, jax.random.key(0)))
    train = meta.task_data(ds.x_train, ds.y_train, num_classes=ds.num_classes)
    test = meta.task_data(ds.x_test, ds.y_test, num_classes=ds.num_classes)
    trainer = meta.meta_trainer(
        network,
        train,
        test,
        settings=cfg["meta_settings"],
        theta_dims=cfg["rule"],
        eval_tasks=int(cfg["meta"]["eval_tasks"]),
    )
    jax.eval_shape(trainer.init, jax.random.key(0))
    return LearnedRulePlan(cfg, ds, network, architecture, trainer)


def run(config, workdir: str, *, stream=None, log=None) -> list[report.Record]:
    """Runs the experiment of ``config`` and writes its results into ``workdir``.

    Everything is checked and built first (:func:`plan`), so a bad setting fails before any
    meta-training.

    Returns:
      The records (also in ``results.json``).
    """
    p = plan(config)
    cfg, ds, network, architecture, trainer = p
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    root = jax.random.key(int(cfg["seed"]))
    fields = _meta_fields(cfg, architecture)
    with workdir_lock(workdir):
        theta, initial_theta, history, seconds = _meta_train(
            cfg, trainer, workdir, jax.random.fold_in(root, 1), fields, log
        )
        theta_dir = os.path.join(workdir, THETA_DIR)
        learned.save_theta(
            theta_dir,
            theta,
            architecture,
            info={
                "fingerprint": fingerprint.digest(fields),
                "meta_steps": cfg["meta"]["num_steps"],
            },
        )
        records = _evaluate(cfg, network, ds, theta_dir, initial_theta, root)
        write(records, history, cfg, workdir, seconds=seconds, stream=stream)
    return records


def _evaluate(cfg, network, ds, theta_dir, initial_theta, root) -> list[report.Record]:
    """Records of the random encoder, the untrained and the meta-trained rule per seed."""
    ev = cfg["evaluation"]
    seeds = int(ev["seeds"])
    keys = jax.random.split(jax.random.fold_in(root, 2), seeds)
    start = jax.vmap(network.init)(keys)
    stream = make_stream(ds.x_train, ds.y_train, {"retain": np.arange(len(ds.y_train))})
    # One rule object (one compiled program): the meta-trained theta is loaded back from its
    # orbax checkpoint, as a user applies it; the untrained rule is the same rule with the initial
    # theta in its state.
    rule = repr_lib.make("learned_unsupervised_rule", network, checkpoint=theta_dir)
    learned_state = jax.vmap(lambda v, k: rule.init(v, key=k))(start, keys)
    untrained_state = learned_state._replace(
        theta=jax.tree.map(lambda a: np.broadcast_to(a, (seeds, *a.shape)), initial_theta)
    )
    trained = {"random_encoder": (start, np.zeros(seeds, bool))}
    for name, state in (("untrained_rule", untrained_state), ("learned_rule", learned_state)):
        res = fit(
            rule,
            start,
            stream,
            batch_sizes={"retain": int(ev["batch_size"])},
            num_steps=int(ev["steps"]),
            key=keys,
            state=state,
            ensemble=True,
        )
        trained[name] = (res.variables, np.asarray(res.diverged))

    features = jax.jit(lambda v, x: learned.features_of(v["params"], x))
    records = []
    for name in ENCODERS:
        variables, diverged = trained[name]
        for s in range(seeds):
            one = jax.tree.map(lambda a, s=s: a[s], variables)
            metrics = {} if diverged[s] else _encoder_metrics(features, one, ds, cfg, s)
            status = "ok" if metrics else "diverged"
            records.append(report.Record(cfg["dataset"], name, s, status, metrics))
    return records


LEGEND = (
    "knn / linear_probe: test accuracy (%) of the weighted k-NN (k=20, T=0.07) and of a linear "
    "probe on the encoder's features (the MLP's last hidden layer), trained on the training "
    "split; ridge_loss / ridge_accuracy: the few-shot ridge meta-objective (10 shots of every "
    "class, queries: the test split; loss in [0, 4], lower is better). random_encoder: the "
    "initialised networks; untrained_rule: the learned rule with its initial theta; "
    "learned_rule: with the meta-trained theta (loaded from its orbax checkpoint); both rules "
    "applied for evaluation.steps unsupervised updates."
)


def write(records, history, cfg, workdir, *, seconds: float, stream=None) -> dict[str, str]:
    """``results.json``, ``results.txt`` (printed too) and ``results.png``."""
    paths = {
        "json": os.path.join(workdir, "results.json"),
        "table": os.path.join(workdir, "results.txt"),
        "plot": os.path.join(workdir, "results.png"),
    }
    evals = history["eval"]
    summary = {
        "meta_steps": len(history["meta_loss"]),
        "meta_seconds": seconds,
        # Wall clock of meta-training, compilation and evaluations included.
        "inner_steps_per_s": (
            len(history["meta_loss"])
            * cfg["meta"]["num_tasks"]
            * cfg["meta"]["unroll_length"]
            / max(seconds, 1e-9)
        ),
        "eval_initial": evals[0] if evals else None,
        "eval_final": evals[-1] if evals else None,
    }
    records_lib.write_json(
        paths["json"],
        {
            "records": [r.to_json() for r in records],
            "meta": summary,
            "history": history,
            "settings": {k: cfg[k] for k in ("dataset", "model_kwargs", "rule", "meta")},
        },
        indent=1,
    )
    lines = [report.table(records, metrics=METRICS), "", LEGEND, ""]
    lines.append(
        f"meta-training: {summary['meta_steps']} meta-steps x {cfg['meta']['num_tasks']} tasks x "
        f"{cfg['meta']['unroll_length']} inner steps in {seconds:.0f}s "
        f"({summary['inner_steps_per_s']:.0f} inner steps/s, compilation and evaluations "
        "included; benchmarks/learned_rule_speed.py times the meta-step alone)"
    )
    if evals:
        first, last = evals[0], evals[-1]
        lines.append(
            f"meta-objective on held-out tasks (loss / accuracy): step {first['step']}: "
            f"{first['loss']:.3f} / {100 * first['accuracy']:.1f}%, step {last['step']}: "
            f"{last['loss']:.3f} / {100 * last['accuracy']:.1f}% (random encoder "
            f"{last['random_loss']:.3f} / {100 * last['random_accuracy']:.1f}%)"
        )
    text = "\n".join(lines)
    with open(paths["table"], "w") as f:
        f.write(text + "\n")
    plot(history, paths["plot"])
    print(text, file=stream or sys.stdout, flush=True)
    print(f"\nwrote {', '.join(paths.values())}", file=stream or sys.stdout)
    return paths


def plot(history: dict, path: str) -> str:
    """Meta-objective over meta-steps: the training meta-loss (and its running mean) and the
    held-out evaluation against the random encoder's level; accuracy in a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    losses = np.asarray(history["meta_loss"])
    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    axes[0].plot(steps, losses, color="0.75", lw=0.8, label="training meta-loss (per step)")
    axes[0].plot(steps[window - 1 :], smooth, color="C0", label=f"running mean ({window})")
    evals = history["eval"]
    if evals:
        es = [e["step"] for e in evals]
        axes[0].plot(es, [e["loss"] for e in evals], "o-", color="C1", label="held-out tasks")
        axes[0].axhline(evals[0]["random_loss"], color="k", ls="--", label="random encoder")
        axes[1].plot(es, [100 * e["accuracy"] for e in evals], "o-", color="C1")
        axes[1].axhline(100 * evals[0]["random_accuracy"], color="k", ls="--")
    axes[1].plot(steps, 100 * np.asarray(history["meta_accuracy"]), color="0.75", lw=0.8, zorder=0)
    axes[0].set_ylabel("ridge meta-objective (lower is better)")
    axes[1].set_ylabel("few-shot ridge accuracy (%)")
    for ax in axes:
        ax.set_xlabel("meta-step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["LearnedRulePlan", "check_config", "plan", "plot", "run", "write"]
