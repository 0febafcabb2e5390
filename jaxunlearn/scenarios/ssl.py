"""The self-supervised experiment: train an encoder with every representation rule, evaluate it,
then unlearn a class or a random subset from some of the encoders and audit the representation.

Training (one row per rule of :mod:`jaxunlearn.repr`'s registry that trains an encoder alone;
rules that need labels, a guide or an old task -- ``lwf``, ``representational_alignment`` -- or
that cannot be built for the backbone -- ``learned_unsupervised_rule`` trains MLPs only -- are
listed as skipped with the reason). Each rule trains the
backbone with its projection head (``repr.encoder``) for ``steps`` updates of ``batch_size`` with
:func:`jaxunlearn.train.fit` (one ``lax.scan``-fused program per ``eval_every`` segment); the labels
in its stream are withheld (all zero). Reported per rule, on the backbone's features: weighted
20-NN accuracy of the test split against the training split (``kNN``, and ``kNN_gain`` over the
randomly initialised backbone), the linear-probe accuracy (``probe``), RankMe effective rank of
the test features (``rank``) and the training time without compilation (``train_s``). Reference
rows: the raw pixels, the randomly initialised backbone (``random init``) and supervised training
(``rules.finetune`` on the labels, same backbone, steps and batch).

Unlearning (item 5 of issue 13). For every encoder of ``unlearn.encoders`` and every request of
``unlearn.forget`` (a class, a random subset: :class:`~jaxunlearn.data.ForgetSpec`), the rule is
retrained from the same initialisation on the retain set alone (the *oracle*), and the trained
encoder (the *original*) is unlearned without labels by

* ``ssl_ascent``: the encoder's own loss turned around (:func:`jaxunlearn.repr.unlearning.
  self_supervised_ascent`: ascent on forget views, descent on retain views);
* each label-free unlearning rule of ``unlearn.rules`` (``label_agnostic_forgetting``,
  ``bad_teacher``) on the encoder's projection (:func:`jaxunlearn.repr.unlearning.label_free_rule`).

Audits (all percent but ``rank``), per model, on the backbone's features: ``CKA_oracle_forget`` /
``CKA_oracle_retain`` (linear CKA to the oracle on the forget / retain training examples),
``CKA_orig_forget`` (to the original), ``kNN_forget`` / ``kNN_retain`` (weighted 20-NN of forget /
retain training examples against the whole test split as labelled memory, the protocol of
:mod:`jaxunlearn.audit.representation`), ``kNN_test`` (test examples of the kept classes against
the retain set as memory), ``rank`` (RankMe of the test features) and ``align_forget`` /
``align_retain`` (Wang and Isola's alignment of two fixed augmented views of the forget / retain
examples, lower = closer: an encoder trained on an example maps its views closer, a label-free
trace that k-NN misses when the encoder generalises to a class it never saw).

Before any training, :func:`plan` checks the config (:func:`check_config`), loads the dataset,
makes the forget splits and builds every encoder and every unlearning method for every encoder
and request, tracing their initialisations abstractly: a setting that cannot run (an unlearn
encoder that is not trained or cannot be built for the backbone, an unknown, labelled or badly set
unlearning rule, a bad ``unlearn.ascent`` setting, a batch larger than the data) is a
``ValueError`` naming it there.

Writes into the workdir ``results.json`` (records), ``results.txt`` (both tables, also printed),
``results.png`` (k-NN accuracy over training; forget-set k-NN and CKA to the oracle per unlearning
method) and ``curves.json`` (the k-NN curves). Run it with ``python -m experiments.main
--config=experiments/configs/ssl.py --workdir=/tmp/ssl``.

References:
  Issue 13; ``shared/reference/unlearnable_and_representation.md`` (Part B: rules, k-NN and probe
  protocols, "Are We Truly Forgetting?"'s CKA and k-NN audits).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import audit
from jaxunlearn import data as data_lib
from jaxunlearn import models as models_lib
from jaxunlearn import repr as repr_lib
from jaxunlearn import rules as rules_lib
from jaxunlearn.core.checks import check_count, keyword_names
from jaxunlearn.data import views as views_lib
from jaxunlearn.data.forget import ForgetSpec, check_fields, make_split
from jaxunlearn.repr import unlearning
from jaxunlearn.scenarios import report, track_config
from jaxunlearn.train import check_batch_sizes, fit, make_stream
from jaxunlearn.train import records as records_lib

REQUIRED = ("dataset", "model", "steps", "batch_size")
DEFAULTS = {
    "track": "ssl",
    "data_kwargs": {},
    "data_dir": "",
    "model_kwargs": {},
    "width": 256,
    "rules": (),
    "hparams": {},
    "eval_every": 50,
    "probe_epochs": 100,
    "supervised_learning_rate": 0.05,
    "root_seed": 0,
    "unlearn": {},
    "distributed": False,
}
UNLEARN_DEFAULTS = {
    "encoders": ("simclr",),
    "forget": {"class 0": {"kind": "class", "classes": (0,)}},
    "steps": 100,
    "forget_batch_size": 64,
    "retain_batch_size": 128,
    "ascent": {},
    "rules": {"label_agnostic_forgetting": {}, "bad_teacher": {}},
}
# Rules of the registry that do not train an encoder from unlabelled data alone, and why.
NOT_STANDALONE = {
    "lwf": "continual learning: needs an old task's network and new-task labels",
    "representational_alignment": "guidance: needs a guide network and labels for its task loss",
}
RANDOM, SUPERVISED, PIXELS = "random init", "supervised", "raw pixels"
ORIGINAL, ORACLE, ASCENT = "original", "retrained (oracle)", "ssl_ascent"
TRAIN_SCENARIO = "train"
TRAIN_METRICS = ("kNN", "kNN_gain", "probe", "rank", "train_s")
UNLEARN_METRICS = (
    "CKA_oracle_forget",
    "CKA_oracle_retain",
    "CKA_orig_forget",
    "kNN_forget",
    "kNN_retain",
    "kNN_test",
    "rank",
    "align_forget",
    "align_retain",
    "train_s",
)
# What `unlearn.ascent` may set: the keyword arguments of self_supervised_ascent but its name.
ASCENT_SETTINGS = tuple(keyword_names(unlearning.self_supervised_ascent, exclude=("rule", "name")))
KNN_K, KNN_TEMPERATURE = 20, 0.07
MAX_QUERIES = 2048  # retain queries and CKA rows beyond this are subsampled (fixed seed)


def standalone_rules() -> tuple[list[str], dict[str, str]]:
    """``(rules that train an encoder from unlabelled data alone, {other rule: why not})``,
    from the registry (rules added later are included unless they read labels)."""
    names, skipped = [], {}
    for name in repr_lib.names():
        if name in NOT_STANDALONE:
            skipped[name] = NOT_STANDALONE[name]
        elif repr_lib.get(name).needs_labels:
            skipped[name] = "reads labels"
        else:
            names.append(name)
    return names, skipped


def check_config(config) -> dict:
    """The config as a plain dict with defaults filled; a ``ValueError`` naming any bad setting,
    before compute."""
    cfg = track_config.with_defaults(config, REQUIRED, DEFAULTS, "ssl")
    data_lib.check_name(cfg["dataset"])
    models_lib.check_name(cfg["model"])
    cfg["steps"] = check_count(cfg["steps"], "steps", 1)
    cfg["batch_size"] = check_count(cfg["batch_size"], "batch_size", 2)
    cfg["width"] = check_count(cfg["width"], "width", 1)
    cfg["probe_epochs"] = check_count(cfg["probe_epochs"], "probe_epochs", 1)
    cfg["eval_every"] = check_count(cfg["eval_every"], "eval_every", 1)
    if cfg["steps"] % cfg["eval_every"]:
        raise ValueError(f"`eval_every` ({cfg['eval_every']}) must divide `steps` ({cfg['steps']})")
    if not float(cfg["supervised_learning_rate"]) > 0:
        raise ValueError(
            f"`supervised_learning_rate` must be > 0; got {cfg['supervised_learning_rate']}"
        )
    standalone, skipped = standalone_rules()
    names = list(cfg["rules"])
    cfg["explicit_rules"] = bool(names)
    for name in names:
        repr_lib.get(name)  # unknown names list the valid ones
        if name in skipped:
            raise ValueError(f"representation rule {name!r} cannot train alone: {skipped[name]}")
    cfg["rules"] = names or standalone
    cfg["skipped"] = {} if names else skipped
    hparams = {k: track_config.plain(v) for k, v in track_config.plain(cfg["hparams"]).items()}
    for name, hp in hparams.items():
        if name not in cfg["rules"]:
            raise ValueError(f"`hparams` names {name!r}, which is not among the rules run")
        repr_lib.REPR.check_hparams(name, hp)
    cfg["hparams"] = hparams

    u = track_config.plain(cfg["unlearn"])
    bad = sorted(set(u) - set(UNLEARN_DEFAULTS))
    if bad:
        raise ValueError(f"`unlearn` has unknown key(s) {bad}; valid: {sorted(UNLEARN_DEFAULTS)}")
    u = {**UNLEARN_DEFAULTS, **u}
    u["encoders"] = tuple(u["encoders"])
    for name in u["encoders"]:
        if name not in cfg["rules"]:
            raise ValueError(
                f"`unlearn.encoders` names {name!r}, which is not among the rules trained "
                f"{cfg['rules']}"
            )
    specs = {}
    for label, entry in track_config.plain(u["forget"]).items():
        spec = ForgetSpec.from_config(track_config.plain(entry))
        check_fields(spec)
        specs[str(label)] = spec
    u["forget"] = specs
    for k in ("steps", "forget_batch_size", "retain_batch_size"):
        u[k] = check_count(u[k], f"unlearn.{k}", 2 if k.endswith("batch_size") else 1)
    u["ascent"] = track_config.plain(u["ascent"])
    bad = sorted(set(u["ascent"]) - set(ASCENT_SETTINGS))
    if bad:
        raise ValueError(
            f"`unlearn.ascent` has unknown key(s) {bad}; valid: {sorted(ASCENT_SETTINGS)}"
        )
    u["rules"] = {k: track_config.plain(v) for k, v in track_config.plain(u["rules"]).items()}
    free = unlearning.label_free_names()
    for name, hp in u["rules"].items():
        info = rules_lib.get(name)  # unknown names list the valid ones
        if name not in free:
            if info.needs_labels:
                why = "which reads forget labels"
            elif info.task in ("any", "classification"):
                why = "which reads the retain set's labels; a self-supervised encoder has none"
            else:
                why = f"a {info.task} rule"
            raise ValueError(f"`unlearn.rules` names {name!r}, {why} (label-free rules: {free})")
        stages = info.label_stages(hp)
        if stages:
            raise ValueError(
                f"`unlearn.rules.{name}` sets `{stages[0]}`, whose stage reads labels; a "
                "self-supervised encoder has none"
            )
        rules_lib.registry.check_hparams(name, {**unlearning.ENCODER_SETTINGS.get(name, {}), **hp})
    cfg["unlearn"] = u
    return cfg


# ---------------------------------------------------------------------------------- evaluation


class EncoderFeatures(NamedTuple):
    """Backbone features of one model.

    Attributes:
      train: ``[n_train, d]`` features of the training split.
      test: ``[n_test, d]`` features of the test split.
      views: ``([n_train, d], [n_train, d])`` features of two fixed augmented views of every
        training example (for the alignment audit), or ``None``.
    """

    train: np.ndarray
    test: np.ndarray
    views: tuple[np.ndarray, np.ndarray] | None = None


class _Features:
    """Backbone features of the splits (and of two fixed views of the training split) under a
    network, one jitted program per network."""

    def __init__(self, ds, *, key, chunk: int = 1024):
        self.ds, self.chunk, self._programs = ds, chunk, {}
        pipeline = views_lib.default_pipeline(ds.input_shape)
        self.views = np.asarray(
            views_lib.make_views(pipeline, key, jnp.asarray(ds.x_train, jnp.float32), 2)
        )

    def __call__(self, network, variables, *, views: bool = False) -> EncoderFeatures:
        key = (network.name, id(network.apply))
        if key not in self._programs:
            self._programs[key] = jax.jit(lambda v, x: network.apply(v, x).features)
        program = self._programs[key]

        def run(x):
            parts = [
                program(variables, jnp.asarray(x[i : i + self.chunk]))
                for i in range(0, len(x), self.chunk)
            ]
            return np.asarray(jnp.concatenate(parts)).reshape(len(x), -1)

        pair = (run(self.views[0]), run(self.views[1])) if views else None
        return EncoderFeatures(run(self.ds.x_train), run(self.ds.x_test), pair)


def _knn(memory, memory_labels, queries, labels) -> float:
    if len(labels) == 0:
        return float("nan")
    return audit.weighted_knn_accuracy(
        memory, memory_labels, queries, labels, k=KNN_K, temperature=KNN_TEMPERATURE
    )


def encoder_scores(train, test, ds, *, probe_epochs: int) -> dict[str, float]:
    """``kNN``, ``probe`` (percent) and ``rank`` of frozen features of the two splits."""
    if not (np.all(np.isfinite(train)) and np.all(np.isfinite(test))):
        return {}
    return {
        "kNN": _knn(train, ds.y_train, test, ds.y_test),
        "probe": audit.linear_probe_accuracy(
            train, ds.y_train, test, ds.y_test, epochs=probe_epochs
        ),
        "rank": audit.effective_rank(test),
    }


def _subsample(index: np.ndarray, limit: int = MAX_QUERIES) -> np.ndarray:
    if len(index) <= limit:
        return index
    return np.sort(np.random.default_rng(0).choice(index, limit, replace=False))


def unlearning_audit(features, *, oracle, original, ds, split) -> dict[str, float]:
    """The representation audits of one model against the oracle and the original.

    Args:
      features: :class:`EncoderFeatures` (or a ``(train, test)`` pair) of the audited model.
      oracle: the same for the encoder retrained on the retain set.
      original: the same for the encoder before unlearning.
      ds: the dataset (labels).
      split: the forget scenario's :class:`~jaxunlearn.data.forget.Split`.

    Returns:
      ``{metric: value}`` (see the module docstring); empty when the features are not finite.
      With ``features.views``, also ``align_forget`` / ``align_retain``: Wang and Isola's
      alignment of two views of the forget / retain examples (lower = views closer: an encoder
      trained on an example tends to map its views closer together, a label-free trace of it).
    """
    features, oracle, original = (EncoderFeatures(*f) for f in (features, oracle, original))
    train, test = features.train, features.test
    if not (np.all(np.isfinite(train)) and np.all(np.isfinite(test))):
        return {}
    retain = _subsample(split.retain)
    out = {}
    for part, rows in (("forget", split.forget), ("retain", retain)):
        out[f"CKA_oracle_{part}"] = 100.0 * audit.linear_cka(train[rows], oracle.train[rows])
    out["CKA_orig_forget"] = 100.0 * audit.linear_cka(
        train[split.forget], original.train[split.forget]
    )
    out["kNN_forget"] = _knn(test, ds.y_test, train[split.forget], ds.y_train[split.forget])
    out["kNN_retain"] = _knn(test, ds.y_test, train[retain], ds.y_train[retain])
    out["kNN_test"] = _knn(
        train[split.retain], ds.y_train[split.retain], test[split.test], ds.y_test[split.test]
    )
    out["rank"] = audit.effective_rank(test)
    if features.views is not None and all(np.all(np.isfinite(v)) for v in features.views):
        a, b = features.views
        out["align_forget"] = audit.alignment(a[split.forget], b[split.forget])
        out["align_retain"] = audit.alignment(a[retain], b[retain])
    return out


# ---------------------------------------------------------------------------------- training


def train_encoder(rule, variables, stream, *, steps, batch_size, eval_every, key, evaluate):
    """Runs ``rule`` for ``steps`` updates in ``eval_every``-long fused segments.

    Returns:
      ``(variables, state, curve [(step, kNN)], train seconds, compile seconds)``; the curve
      starts at step 0 and holds ``evaluate(variables)`` after each segment.
    """
    state, curve, run_s, compile_s = None, [(0, evaluate(variables))], 0.0, 0.0
    for i in range(steps // eval_every):
        res = fit(
            rule,
            variables,
            stream,
            batch_sizes={"retain": batch_size},
            num_steps=eval_every,
            key=jax.random.fold_in(key, i),
            state=state,
        )
        variables, state = res.variables, res.state
        run_s += res.runtime_s
        compile_s += res.compile_s
        curve.append(((i + 1) * eval_every, evaluate(variables)))
        if res.diverged:
            break
    return variables, state, curve, run_s, compile_s


def data_settings(name: str, num_examples: int) -> dict:
    """What rule ``name`` needs to know of the training data: the number of examples batch
    indices point into, for a rule with a per-example bank (``deepcluster``)."""
    takes = repr_lib.get(name).factory.__kwdefaults__ or {}
    return {"num_examples": num_examples} if "num_examples" in takes else {}


def encoder_rule(name, backbone, *, width, num_steps, key, hparams=None):
    """``(encoder, rule)`` of representation rule ``name`` on ``backbone``, checked without
    compute: the encoder's and the rule's initialisations are traced abstractly.

    Raises:
      ValueError: (or ``TypeError``) when the rule cannot be built or initialised for this
        backbone.
    """
    net = repr_lib.encoder(name, backbone, width=width)
    rule = repr_lib.make(name, net, num_steps=num_steps, **(hparams or {}))
    _abstract_init(rule, jax.eval_shape(net.init, key), key)
    return net, rule


def _abstract_init(rule, variables, key) -> None:
    """``rule.init`` traced without compute (shape and setting errors surface here)."""
    jax.eval_shape(lambda v: rule.init(v, key=key), variables)


# ---------------------------------------------------------------------------------- the plan


class Encoder(NamedTuple):
    """One representation rule as it is trained: the encoder (backbone and projection head) and
    the rule; the encoder starts from ``network.init(init_key)``."""

    network: object
    rule: object


@dataclasses.dataclass
class SSLPlan:
    """A validated ssl experiment: the data loaded and every rule built, nothing trained.

    Attributes:
      cfg: :func:`check_config`'s dict; ``cfg["skipped"]`` also holds the registry's rules that
        cannot be built for the backbone (when ``rules`` is empty), with the reason.
      dataset: the image classification dataset.
      backbone: the network every encoder shares.
      supervised: the supervised reference rule (``rules.finetune`` on the backbone).
      encoders: ``{rule name: Encoder}`` of every rule trained, in order (the oracles of
        ``unlearn.encoders`` are the same rule from the same start on the retain set).
      splits: ``{request label: Split}`` of ``unlearn.forget``.
      methods: ``{(encoder, request label): {method: (network it runs on, rule)}}``:
        ``ssl_ascent`` and every rule of ``unlearn.rules``, built for that encoder and request.
      init_key, data_key: the keys of the encoders' initialisation and of the batches.
      root: ``jax.random.key(root_seed)``.
    """

    cfg: dict
    dataset: data_lib.Dataset
    backbone: object
    supervised: object
    encoders: dict
    splits: dict
    methods: dict
    init_key: jax.Array
    data_key: jax.Array
    root: jax.Array


def plan(config) -> SSLPlan:
    """Checks ``config`` (:func:`check_config`), loads its dataset and builds every encoder and
    every unlearning method, without training anything.

    A setting that cannot run is a ``ValueError`` naming it here, before compute: a dataset that
    is not image classification, an impossible forget request, a batch larger than the data, a
    rule named in ``rules`` or ``unlearn.encoders`` that cannot be built for the backbone, an
    encoder whose loss cannot be turned around, a bad ``unlearn.ascent`` or ``unlearn.rules``
    setting.
    """
    cfg = check_config(config)
    ds = track_config.load_dataset(cfg)
    if ds.task != "classification" or len(ds.input_shape) != 3:
        raise ValueError(f"dataset {cfg['dataset']!r} is not an image classification dataset")
    n = len(ds.y_train)
    try:
        check_batch_sizes({"retain": cfg["batch_size"]}, {"retain": n})
    except ValueError as e:
        raise ValueError(f"`batch_size`: {e}") from None
    u = cfg["unlearn"]
    splits = {
        label: make_split(ds, spec, seed=int(cfg["root_seed"]))
        for label, spec in u["forget"].items()
    }
    backbone = models_lib.make_network(
        cfg["model"],
        input_shape=ds.input_shape,
        num_outputs=ds.num_outputs,
        **track_config.plain(cfg["model_kwargs"]),
    )
    supervised = rules_lib.finetune(
        backbone.apply, learning_rate=float(cfg["supervised_learning_rate"])
    )
    root = jax.random.key(int(cfg["root_seed"]))
    init_key, data_key = jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)

    def hparams_of(name):  # every rule of `name` here (trained, retrained, reversed) sees these
        return {**data_settings(name, n), **cfg["hparams"].get(name, {})}

    encoders = {}
    for name in cfg["rules"]:
        try:
            net, rule = encoder_rule(
                name,
                backbone,
                width=cfg["width"],
                num_steps=cfg["steps"],
                key=init_key,
                hparams=hparams_of(name),
            )
        except (ValueError, TypeError) as err:
            if cfg["explicit_rules"] or name in u["encoders"]:
                raise ValueError(
                    f"representation rule {name!r} cannot be built for the {cfg['model']!r} "
                    f"backbone: {err}"
                ) from None
            cfg["skipped"][name] = f"cannot be built for this backbone: {err}"
            continue
        encoders[name] = Encoder(net, rule)

    methods = {}
    for name in u["encoders"]:
        net = encoders[name].network
        start = jax.eval_shape(net.init, init_key)
        for label, split in splits.items():
            try:
                ascent = unlearning.self_supervised_ascent(
                    repr_lib.make(name, net, num_steps=u["steps"], **hparams_of(name)),
                    name=name,
                    **u["ascent"],
                )
            except (ValueError, TypeError) as err:
                raise ValueError(f"`unlearn.ascent` on encoder {name!r}: {err}") from None
            built = {ASCENT: (net, ascent)}
            for rule_name, hp in u["rules"].items():
                try:
                    built[rule_name] = unlearning.label_free_rule(
                        rule_name,
                        net,
                        num_steps=u["steps"],
                        forget_fraction=len(split.forget) / n,
                        forget_classes=split.classes or None,
                        **hp,
                    )
                except (ValueError, TypeError) as err:
                    raise ValueError(
                        f"`unlearn.rules.{rule_name}` on encoder {name!r}, request {label!r}: {err}"
                    ) from None
            for method, (_, rule) in built.items():
                try:
                    _abstract_init(rule, start, data_key)
                except (ValueError, TypeError) as err:
                    raise ValueError(
                        f"unlearning method {method!r} on encoder {name!r}, request {label!r} "
                        f"cannot start: {err}"
                    ) from None
            methods[(name, label)] = built
    return SSLPlan(
        cfg, ds, backbone, supervised, encoders, splits, methods, init_key, data_key, root
    )


def _record(scenario, method, metrics, **extra) -> report.Record:
    status = "ok" if metrics else "diverged"
    return report.Record(scenario, method, 0, status, {**metrics, **extra} if metrics else {})


def run(config, workdir: str, *, stream=None, log=None) -> list[report.Record]:
    """Runs the experiment of ``config`` and writes its results into ``workdir``.

    Everything is checked and built first (:func:`plan`), so a bad setting fails before any
    training.

    Returns:
      The records (also in ``results.json``).
    """
    p = plan(config)
    cfg, ds, backbone, u = p.cfg, p.dataset, p.backbone, p.cfg["unlearn"]
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    for name, why in cfg["skipped"].items():
        log(f"  [ssl] {name}: skipped ({why})")
    init_key, data_key = p.init_key, p.data_key
    n = len(ds.y_train)
    everything = np.arange(n)
    labelled = make_stream(ds.x_train, ds.y_train, {"retain": everything})
    withheld = make_stream(
        ds.x_train, unlearning.withheld_labels(ds.y_train), {"retain": everything}
    )
    features = _Features(ds, key=jax.random.fold_in(p.root, 3))
    os.makedirs(workdir, exist_ok=True)
    records: list[report.Record] = []
    curves: dict[str, list] = {}

    def scores(net, v):
        f = features(net, v)
        return encoder_scores(f.train, f.test, ds, probe_epochs=cfg["probe_epochs"])

    def knn_of(net):
        def evaluate(v):
            f = features(net, v)
            return _knn(f.train, ds.y_train, f.test, ds.y_test)

        return evaluate

    # ---- references: raw pixels, the random backbone, supervised training
    flat = ds.x_train.reshape(n, -1), ds.x_test.reshape(len(ds.x_test), -1)
    records.append(
        _record(TRAIN_SCENARIO, PIXELS, encoder_scores(*flat, ds, probe_epochs=cfg["probe_epochs"]))
    )
    random_scores = scores(backbone, backbone.init(init_key))
    random_knn = random_scores.get("kNN", float("nan"))
    records.append(_record(TRAIN_SCENARIO, RANDOM, random_scores, kNN_gain=0.0))
    log(f"  [ssl] random init: {random_scores}")

    def train_and_score(method, net, rule, start, stream, t0):
        """Trains one encoder, records its scores and k-NN curve; its variables."""
        variables, _, curve, run_s, compile_s = train_encoder(
            rule,
            start,
            stream,
            steps=cfg["steps"],
            batch_size=cfg["batch_size"],
            eval_every=cfg["eval_every"],
            key=data_key,
            evaluate=knn_of(net),
        )
        s = scores(net, variables)
        records.append(
            _record(
                TRAIN_SCENARIO,
                method,
                s,
                kNN_gain=s.get("kNN", np.nan) - random_knn,
                train_s=run_s,
                compile_s=compile_s,
            )
        )
        curves[method] = curve
        log(f"  [ssl] {method}: {s} ({time.perf_counter() - t0:.1f}s)")
        return variables

    t0 = time.perf_counter()
    train_and_score(SUPERVISED, backbone, p.supervised, backbone.init(init_key), labelled, t0)

    # ---- every representation rule
    trained = {}
    for name, (net, rule) in p.encoders.items():
        t0 = time.perf_counter()
        start = net.init(init_key)
        trained[name] = (start, train_and_score(name, net, rule, start, withheld, t0))

    # ---- unlearning
    for name in u["encoders"]:
        net, rule = p.encoders[name]
        start, original = trained[name]
        original_features = features(net, original, views=True)
        for label, split in p.splits.items():
            scenario = f"{name}: {label}"
            t0 = time.perf_counter()
            retain_only = make_stream(
                ds.x_train, unlearning.withheld_labels(ds.y_train), {"retain": split.retain}
            )
            res = fit(
                rule,
                start,
                retain_only,
                batch_sizes={"retain": min(cfg["batch_size"], len(split.retain))},
                num_steps=cfg["steps"],
                key=data_key,
            )
            oracle_features = features(net, res.variables, views=True)
            audit_of = functools.partial(
                unlearning_audit,
                oracle=oracle_features,
                original=original_features,
                ds=ds,
                split=split,
            )
            records.append(_record(scenario, ORIGINAL, audit_of(original_features)))
            records.append(
                _record(scenario, ORACLE, audit_of(oracle_features), train_s=res.runtime_s)
            )
            log(f"  [ssl] {scenario}: oracle retrained ({time.perf_counter() - t0:.1f}s)")
            stream_u = make_stream(
                ds.x_train,
                unlearning.withheld_labels(ds.y_train),
                {"forget": split.forget, "retain": split.retain},
            )
            batch_sizes = {
                "forget": min(u["forget_batch_size"], len(split.forget)),
                "retain": min(u["retain_batch_size"], len(split.retain)),
            }
            for method, (view, method_rule) in p.methods[(name, label)].items():
                t0 = time.perf_counter()
                res = fit(
                    method_rule,
                    original,
                    stream_u,
                    batch_sizes=batch_sizes,
                    num_steps=u["steps"],
                    key=jax.random.fold_in(data_key, 7),
                )
                diverged = res.diverged
                m = {} if diverged else audit_of(features(view, res.variables, views=True))
                records.append(_record(scenario, method, m, train_s=res.runtime_s))
                log(
                    f"  [ssl] {scenario} / {method}: "
                    f"{ {k: round(v, 1) for k, v in m.items()} } ({time.perf_counter() - t0:.1f}s)"
                )
    write(records, curves, workdir, cfg, stream=stream)
    return records


# ---------------------------------------------------------------------------------- output

LEGEND = (
    "Training: kNN = weighted 20-NN accuracy (T = 0.07) of the test split against the training "
    "split's backbone features; kNN_gain = kNN - the random backbone's; probe = linear-probe "
    "accuracy; rank = RankMe effective rank of the test features; train_s = training seconds "
    "without compilation. Unlearning (per encoder and request): CKA_oracle_* = linear CKA x 100 "
    "to the encoder retrained without the forget set, on forget / retain training examples; "
    "CKA_orig_forget = to the encoder before unlearning; kNN_forget / kNN_retain = 20-NN of forget "
    "/ retain training examples against the test split as memory; kNN_test = test examples of the "
    "kept classes against the retain set as memory; align_* = alignment of two augmented views "
    "of forget / retain examples (lower = closer). No unlearning method reads a label."
)


def write(records, curves, workdir, cfg, *, stream=None) -> dict[str, str]:
    """``results.json``, ``results.txt`` (printed too), ``results.png`` and ``curves.json``."""
    paths = {
        "json": os.path.join(workdir, "results.json"),
        "table": os.path.join(workdir, "results.txt"),
        "plot": os.path.join(workdir, "results.png"),
        "curves": os.path.join(workdir, "curves.json"),
    }
    records_lib.write_json(paths["json"], [r.to_json() for r in records], indent=1)
    records_lib.write_json(
        paths["curves"], {k: [[int(s), float(v)] for s, v in c] for k, c in curves.items()}
    )
    train = [r for r in records if r.scenario == TRAIN_SCENARIO]
    rest = [r for r in records if r.scenario != TRAIN_SCENARIO]
    lines = [
        f"{cfg['dataset']}, {cfg['model']} backbone, {cfg['steps']} steps of batch "
        f"{cfg['batch_size']}",
        report.table(train, metrics=TRAIN_METRICS),
    ]
    if cfg["skipped"]:
        lines += ["", "not trained here:"]
        lines += [f"  {k}: {v}" for k, v in cfg["skipped"].items()]
    if rest:
        lines += ["", f"unlearning ({cfg['unlearn']['steps']} steps, no labels)"]
        lines.append(report.table(rest, metrics=UNLEARN_METRICS))
    lines += ["", LEGEND]
    text = "\n".join(lines)
    with open(paths["table"], "w") as f:
        f.write(text + "\n")
    plot(records, curves, paths["plot"])
    print(text, file=stream or sys.stdout, flush=True)
    print(f"\nwrote {', '.join(paths.values())}", file=stream or sys.stdout)
    return paths


def plot(records, curves, path: str) -> str:
    """Left: k-NN accuracy over training per rule, the random backbone dashed. Right: forget-set
    k-NN against CKA to the oracle, one marker per unlearning method and request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        steps, knn = zip(*curve, strict=True)
        left.plot(steps, knn, marker=".", label=name, lw=2 if name == SUPERVISED else 1)
    rnd = next((r for r in records if r.method == RANDOM and r.metrics), None)
    if rnd is not None:
        left.axhline(rnd.metrics["kNN"], color="k", ls="--", lw=1, label=RANDOM)
    left.set_xlabel("training step")
    left.set_ylabel("test k-NN accuracy (%)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    rest = [r for r in records if r.scenario != TRAIN_SCENARIO and r.metrics]
    markers = dict(zip(dict.fromkeys(r.scenario for r in rest), "osD^v<>", strict=False))
    methods = list(dict.fromkeys(r.method for r in rest))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for r in rest:
        right.scatter(
            r.metrics["CKA_oracle_forget"],
            r.metrics["kNN_forget"],
            marker=markers.get(r.scenario, "o"),
            color=colours[r.method],
        )
    for m in methods:
        right.scatter([], [], color=colours[m], label=m)
    for s, mk in markers.items():
        right.scatter([], [], marker=mk, color="grey", label=s)
    right.set_xlabel("CKA to the retrained encoder on the forget set (x100)")
    right.set_ylabel("forget-set k-NN accuracy (%)")
    right.grid(alpha=0.3)
    if rest:
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
