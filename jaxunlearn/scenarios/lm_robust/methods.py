"""Issue 12's methods that are not weight updates, wired into the robust-LM experiment.

Registered with :mod:`~jaxunlearn.scenarios.lm_robust.extensions` at import; a config runs them
by naming them in ``wrappers`` / ``analyses`` and sets each one's keyword arguments in
``methods[name]`` (defaults :data:`DEFAULTS`, an unknown key is a ``ValueError``):

* wrapper ``eco`` (Liu et al. 2024, Embedding-COrrupted prompts; :mod:`jaxunlearn.models.eco`,
  ``shared/reference/lm_robust_evaluation.md`` section 3): :func:`~jaxunlearn.models.eco.fit_eco`
  on the target with the rules' forget rows (``lm.forget[split]``) and retain rows
  (``unlearn_retain``); the guarded network is audited as a row. Its ``info`` holds the fitted
  ``sigma``, the classifier's flag rates and the zeroth-order search history;
* analysis ``untrac`` (Isonuma and Titov 2024; :mod:`jaxunlearn.audit.attribution`, section 5):
  the training authors' QA rows cut into ``num_groups`` datasets of equally many authors
  (:func:`~jaxunlearn.audit.attribution.author_groups`); the test set is the paraphrased answers
  of ``test_counts[k]`` rows of dataset ``k`` (a planted, graded dependence:
  :func:`~jaxunlearn.audit.attribution.graded_rows`); UnTrac's and UnTrac-Inv's rankings of the
  datasets against leave-dataset-out retraining (:func:`~jaxunlearn.audit.attribution.run_untrac`,
  fresh models of the plan's transformer trained for ``train_steps``), by Spearman's rho;
* analysis ``synthetic_forget_set`` (Zhu et al. 2025; :mod:`jaxunlearn.data.synthetic_forget`,
  :mod:`jaxunlearn.audit.forget_sets`): the target samples ``samples`` answers to each structured
  prompt about each forget author's name; the deduplicated rows of all forget authors are the
  synthetic forget set, unlearned with ``rule`` next to the true forget set (the rules' forget
  rows) under the same retain rows, steps and key; key-fact accuracy on the forget and retain QA
  facts the audits use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxunlearn.audit import attribution
from jaxunlearn.audit.forget_sets import compare_forget_sets
from jaxunlearn.data.synthetic_forget import synthetic_forget_set
from jaxunlearn.models import eco
from jaxunlearn.scenarios.lm.artefacts import model
from jaxunlearn.scenarios.lm_robust import audits as audits_lib
from jaxunlearn.scenarios.lm_robust import extensions
from jaxunlearn.scenarios.lm_robust.report import NOT_APPLICABLE

DEFAULTS: dict[str, dict[str, Any]] = {
    "eco": {
        "threshold": 0.5,
        "sigma": 0.1,
        "learning_rate": 1.0,
        "steps": 10,
        "seed": 0,
    },
    "untrac": {
        "num_groups": 5,
        "test_counts": (0, 2, 4, 6, 8),
        "train_steps": 300,
        "train_learning_rate": 3e-3,
        "unlearn_steps": 5,
        "unlearn_learning_rate": 1e-3,
        "batch_size": 16,
    },
    "synthetic_forget_set": {
        "samples": 8,
        "max_new_tokens": 24,
        "rule": "npo",
        "hparams": {"learning_rate": 5e-4},
        "steps": 20,
        "batch_size": 16,
    },
}


def settings(plan, name: str) -> dict:
    """The settings of ``name`` for ``plan``: :data:`DEFAULTS` overridden by ``methods[name]``."""
    return extensions.settings(name, plan.methods.get(name))


def _pair(b, rows, with_mask: bool = False) -> tuple:
    rows = np.asarray(rows)
    pair = (b.lm.x[rows], b.lm.y[rows])
    return (*pair, b.key_mask[rows]) if with_mask else pair


@extensions.register_wrapper("eco", DEFAULTS["eco"], report=lambda info: eco_report(info))
def eco_wrapper(plan, target, *, key):
    """ECO's guard fitted on the target with the rules' forget and retain rows."""
    del key  # the noise draw is the `seed` setting
    s = settings(plan, "eco")
    b = plan.bench
    fit = eco.fit_eco(
        plan.network,
        target,
        _pair(b, b.lm.forget[plan.split]),
        _pair(b, b.unlearn_retain),
        threshold=float(s["threshold"]),
        sigma=float(s["sigma"]),
        learning_rate=float(s["learning_rate"]),
        steps=int(s["steps"]),
        seed=int(s["seed"]),
    )
    info = {
        "sigma": float(fit.guard.sigma),
        "dims": int(fit.guard.dims),
        "flag_rate_forget": float(fit.history["flag_rate_forget"]),
        "flag_rate_retain": float(fit.history["flag_rate_retain"]),
        "sigma_history": [float(v) for v in fit.history["sigma"]],
        "objective_history": [float(v) for v in fit.history["objective"]],
    }
    return fit.network, target, info


def qa_train_rows(b) -> np.ndarray:
    """The training authors' QA rows (utility facts included; :func:`author_groups` drops
    them): the QA rows come first in ``lm``, in record order."""
    qa = np.arange(len(b.corpus.split("train").records))
    return np.intersect1d(qa, b.lm.train)


@extensions.register_analysis("untrac", DEFAULTS["untrac"], report=lambda r: untrac_report(r))
def untrac_analysis(plan, artefacts, log) -> dict:
    """UnTrac / UnTrac-Inv vs leave-dataset-out retraining on author datasets."""
    del artefacts  # UnTrac retrains its own models from scratch
    s = settings(plan, "untrac")
    b = plan.bench
    groups = attribution.author_groups(b.lm.author, qa_train_rows(b), int(s["num_groups"]))
    test = attribution.graded_rows(groups, tuple(s["test_counts"]))
    log(
        f"  untrac: {groups.shape[0]} datasets of {groups.shape[1]} QA rows, {len(test)} "
        f"paraphrased test rows, {s['train_steps']} training steps per retraining"
    )
    res = attribution.run_untrac(
        plan.network.apply,
        plan.network.init(jax.random.key(plan.lm.root_seed)),
        b.lm.x,
        b.lm.y,
        groups,
        (b.lm.para_x[test], b.lm.para_y[test]),
        train_steps=int(s["train_steps"]),
        train_learning_rate=float(s["train_learning_rate"]),
        unlearn_steps=int(s["unlearn_steps"]),
        unlearn_learning_rate=float(s["unlearn_learning_rate"]),
        batch_size=int(s["batch_size"]),
        key=jax.random.key(plan.lm.root_seed),
    )
    return {
        "datasets": int(groups.shape[0]),
        "rows_per_dataset": int(groups.shape[1]),
        "test_counts": [int(c) for c in s["test_counts"]],
        "untrac": res.untrac.tolist(),
        "untrac_inv": res.untrac_inv.tolist(),
        "exact": res.exact.tolist(),
        "spearman_untrac": res.spearman_untrac,
        "spearman_inv": res.spearman_inv,
        "test_loss": res.test_loss,
    }


@extensions.register_analysis(
    "synthetic_forget_set",
    DEFAULTS["synthetic_forget_set"],
    report=lambda r: synthetic_forget_report(r),
)
def synthetic_forget_analysis(plan, artefacts, log) -> dict:
    """Unlearning with a forget set the target wrote about the forget authors vs the true one."""
    s = settings(plan, "synthetic_forget_set")
    b = plan.bench
    target = model(artefacts.target().variables)
    # The audited forget and retain QA rows (a context with no audits locates nothing).
    ctx = audits_lib.make_context(dataclasses.replace(plan, audits=()), target, target)
    authors = sorted({int(a) for a in b.lm.author[ctx.forget_qa]})
    key = jax.random.key(plan.lm.root_seed)
    tokens, labels, per_author = [], [], {}
    for a in authors:
        name = b.corpus.authors[a].name
        syn = synthetic_forget_set(
            plan.network,
            target,
            b.tokenizer,
            name,
            key=jax.random.fold_in(key, a),
            samples=int(s["samples"]),
            max_new_tokens=int(s["max_new_tokens"]),
        )
        tokens.append(syn.tokens)
        labels.append(syn.labels)
        per_author[name] = {"kept": len(syn.answers), "sampled": syn.num_sampled}
    synthetic = (np.concatenate(tokens), np.concatenate(labels))
    log(f"  synthetic_forget_set: {len(synthetic[0])} rows about {len(authors)} forget authors")
    res = compare_forget_sets(
        plan.network,
        target,
        {"true": _pair(b, b.lm.forget[plan.split]), "synthetic": synthetic},
        retain=_pair(b, b.unlearn_retain),
        eval_forget=_pair(b, ctx.forget_qa, with_mask=True),
        eval_retain=_pair(b, ctx.retain_qa, with_mask=True),
        rule=str(s["rule"]),
        hparams=dict(s["hparams"]),
        steps=int(s["steps"]),
        batch_size=int(s["batch_size"]),
        key=key,
        pad_id=int(b.lm.pad_id),
    )
    return {"authors": per_author, "rule": str(s["rule"]), "steps": int(s["steps"]), **res}


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    """Text lines of a small table: the first column left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    return ["  " + line(r) for r in [header, ["-" * w for w in widths], *rows]]


def eco_report(info: dict) -> str:
    """ECO's fitted guard as a few lines."""
    sig = info["sigma_history"]
    obj = info["objective_history"]
    return "\n".join(
        [
            "eco (inference wrapper, weights unchanged): the guard fitted on the target",
            f"  prompt classifier flags {info['flag_rate_forget']:.3f} of forget rows, "
            f"{info['flag_rate_retain']:.3f} of retain rows (prompts and full rows)",
            f"  sigma {sig[0]:.3g} -> {info['sigma']:.3g} on {info['dims']} embedding dims; "
            f"forget answer log-prob under the guard {obj[0]:.3f} -> {obj[-1]:.3f}",
            f"  {NOT_APPLICABLE} in the table: {', '.join(info['not_applicable']) or 'none'} "
            "(read the weights, which the guard never changes)",
        ]
    )


def untrac_report(r: dict) -> str:
    """UnTrac's scores per dataset and the rank correlations."""
    rows = [
        [str(k), str(c), f"{e:+.4f}", f"{u:+.4f}", f"{i:+.4f}"]
        for k, (c, e, u, i) in enumerate(
            zip(r["test_counts"], r["exact"], r["untrac"], r["untrac_inv"], strict=True)
        )
    ]
    head = (
        f"untrac: {r['datasets']} author datasets of {r['rows_per_dataset']} QA rows; test = "
        f"paraphrased answers of test_rows rows of each (test loss {r['test_loss']:.3f})"
    )
    table = _columns(["dataset", "test_rows", "exact (retrain)", "untrac", "untrac_inv"], rows)
    tail = (
        f"  Spearman with exact retraining: untrac {r['spearman_untrac']:+.3f}, "
        f"untrac_inv {r['spearman_inv']:+.3f}"
    )
    return "\n".join([head, *table, tail])


def synthetic_forget_report(r: dict) -> str:
    """Key-fact accuracies after unlearning with the true and the synthetic forget set."""
    rows = [
        [
            name,
            "-" if "rows" not in r[name] else str(int(r[name]["rows"])),
            f"{r[name]['forget_accuracy']:.3f}",
            f"{r[name]['retain_accuracy']:.3f}",
        ]
        for name in ("original", "true", "synthetic")
    ]
    kept = sum(a["kept"] for a in r["authors"].values())
    sampled = sum(a["sampled"] for a in r["authors"].values())
    head = (
        f"synthetic_forget_set: {r['rule']} for {r['steps']} steps with each forget set "
        f"({kept} of {sampled} sampled answers kept about {len(r['authors'])} authors)"
    )
    table = _columns(["forget set", "rows", "forget key-fact acc", "retain key-fact acc"], rows)
    return "\n".join([head, *table])


__all__ = [
    "DEFAULTS",
    "eco_report",
    "eco_wrapper",
    "settings",
    "synthetic_forget_analysis",
    "synthetic_forget_report",
    "untrac_analysis",
    "untrac_report",
]
