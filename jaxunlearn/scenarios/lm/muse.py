"""MUSE's sustainability and scalability scenarios, and the relearning attack, on the LM track.

For each rule of the config's ``muse_rules`` on the main split:

* **sustainability** (MUSE criterion 6): the split's forget authors arrive as
  ``sustainability_requests`` deletion requests, each unlearned from the *previous* request's
  model; after each, the audits below on everything forgotten so far;
* **scalability** (criterion 5): forget sets of growing size (``scalability_fractions`` of the
  split's authors), each unlearned from the target;
* **relearning** (Hu et al., ICLR 2025; Lynch et al., 2024): the unlearned model is fine-tuned for
  ``relearn_steps`` steps on half of the forget rows, then its answers to the *other* half are
  scored; the target and the retain model get the same attack (same rows, same key), so a method
  that only hid the facts shows by recovering the held-out half far above the retain model.

Audits per point: MUSE's KnowMem on the forgotten rows (``knowmem_forget``: ROUGE-L F1 x 100 of
greedy answers; lower) and on retain QA (``knowmem_retain``, its utility criterion), forget
quality on the forgotten rows against the first retain model (which never saw any forget author
of the split, so it is the oracle of every subset), and model utility. Each rule's retain part is
the split's retain set throughout (authors of later requests are not offered as retain data).

References: Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", ICLR
2025 (arXiv 2407.06460); ``shared/reference/lm_unlearning.md`` section 4.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxunlearn import rules as rules_lib
from jaxunlearn.audit import lm as lm_audit
from jaxunlearn.audit import text
from jaxunlearn.scenarios.lm import evaluate
from jaxunlearn.scenarios.lm.artefacts import model
from jaxunlearn.scenarios.plan import ENTRY_DEFAULTS
from jaxunlearn.train import Progress, fit


def knowmem(p, variables, rows) -> float:
    """MUSE's KnowMem: ROUGE-L F1 x 100 of greedy answers to ``rows``."""
    b = p.benchmark
    answers = evaluate.greedy_answers(p, variables, rows)
    return text.knowledge_memorization(answers, [b.answers[i] for i in rows])


def point_audit(p, variables, rows, split: str, ref_tr: np.ndarray | None) -> dict:
    """The MUSE-scenario audit of one model on the forgotten ``rows``."""
    tr, _ = evaluate.truth_ratios(p, variables, rows)
    comps = evaluate.utility_components(p, variables, split)
    out = {
        "knowmem_forget": knowmem(p, variables, rows),
        "knowmem_retain": knowmem(p, variables, evaluate.retain_rows(p, split)),
        "model_utility": evaluate.model_utility(comps),
    }
    if ref_tr is not None:
        out["forget_quality"] = lm_audit.forget_quality(tr, ref_tr)
    return out


def _authors_groups(authors: np.ndarray, count: int) -> list[np.ndarray]:
    count = max(1, min(int(count), len(authors)))
    return [g for g in np.array_split(authors, count) if len(g)]


def _unlearn(p, art, name, start, forget_rows, retain_rows, *, label, tag):
    from jaxunlearn.scenarios.lm.runner import run_rule

    keys = jax.vmap(lambda k: jax.random.fold_in(k, tag))(art.keys("unlearn", 1))
    entry = dict(p.entry(p.main_scenario, name))
    # A request smaller than the rule's forget batch is read whole (with devices dividing it).
    fb = int(entry.get("forget_batch_size", ENTRY_DEFAULTS["forget_batch_size"]))
    if fb > len(forget_rows):
        entry["forget_batch_size"] = max(
            p.num_devices, len(forget_rows) // p.num_devices * p.num_devices
        )
    variables, diverged, _, _ = run_rule(
        p,
        name,
        start,
        forget_rows,
        retain_rows,
        keys=keys,
        entry=entry,
        label=label,
        verbose=art.verbose,
    )
    return variables, bool(diverged[0])


def sustainability(p, art, split: str, name: str, ref) -> list[dict]:
    """Sequential deletion requests, each unlearned from the previous model."""
    b = p.benchmark
    authors = b.authors_of(b.forget[split])
    current = jax.tree.map(lambda x: x[:1], art.target().variables)
    done: list[int] = []
    out = []
    for r, group in enumerate(_authors_groups(authors, p.sustainability_requests)):
        rows = b.rows_of_authors(group, b.forget[split])
        done += list(group)
        current, diverged = _unlearn(
            p, art, name, current, rows, b.retain[split], label=f"sust/{name} {r + 1}", tag=r
        )
        so_far = b.rows_of_authors(done, b.forget[split])
        point = {"request": r + 1, "authors": len(done), "rows": len(so_far)}
        if diverged:
            out.append({**point, "diverged": True})
            break
        ref_tr, _ = evaluate.truth_ratios(p, ref, so_far)
        out.append({**point, **point_audit(p, model(current), so_far, split, ref_tr)})
    return out


def scalability(p, art, split: str, name: str, ref) -> list[dict]:
    """Forget sets of growing size, each unlearned from the target."""
    b = p.benchmark
    authors = b.authors_of(b.forget[split])
    start = jax.tree.map(lambda x: x[:1], art.target().variables)
    out = []
    for i, frac in enumerate(p.scalability_fractions):
        k = max(1, math.ceil(frac * len(authors)))
        rows = b.rows_of_authors(authors[:k], b.forget[split])
        v, diverged = _unlearn(
            p, art, name, start, rows, b.retain[split], label=f"scal/{name} {frac:g}", tag=100 + i
        )
        point = {"fraction": frac, "authors": int(k), "rows": len(rows)}
        if diverged:
            out.append({**point, "diverged": True})
            continue
        ref_tr, _ = evaluate.truth_ratios(p, ref, rows)
        out.append({**point, **point_audit(p, model(v), rows, split, ref_tr)})
    return out


def relearn(p, art, split: str, models: dict) -> dict:
    """The relearning attack on each of ``models`` (``{label: unbatched variables}``): fine-tune
    on the first half of the forget rows, score the held-out second half before and after."""
    b = p.benchmark
    forget = b.forget[split]
    half = len(forget) // 2
    attack, held_out = forget[:half], forget[half:]
    if half < 1 or len(held_out) < 1:
        return {}
    bs = min(8, half)
    rule = rules_lib.make(
        "finetune",
        p.network,
        learning_rate=float(p.train["learning_rate"]),
        optimizer={"name": "adam"},
    )
    stream = _stream(b, attack)
    out = {}
    for label, variables in models.items():
        before = _forget_scores(p, variables, held_out)
        res = fit(
            rule,
            variables,
            stream,
            batch_sizes={"retain": bs},
            num_steps=max(1, int(p.relearn_steps)),
            key=jax.random.fold_in(jax.random.key(p.root_seed), 7),
            progress=Progress(f"relearn/{label}", enabled=art.verbose),
        )
        after = _forget_scores(p, res.variables, held_out)
        out[label] = {
            **{f"{k}_before": v for k, v in before.items()},
            **{f"{k}_after": v for k, v in after.items()},
        }
    return out


def _stream(b, rows):
    from jaxunlearn.train import make_stream

    return make_stream(b.x, b.y, {"retain": rows})


def _forget_scores(p, variables, rows) -> dict:
    b = p.benchmark
    tf = evaluate.teacher_forced(
        p.network.apply, variables, b.x[rows], b.y[rows], batch_size=int(p.eval["batch_size"])
    )
    return {
        "exact_memorization": float(np.mean(tf["em"])),
        "rouge_forget": evaluate.rouge_recall(
            evaluate.greedy_answers(p, variables, rows), [b.answers[i] for i in rows]
        ),
    }


def run_muse(p, art, split: str, log) -> dict:
    """Sustainability, scalability and relearning for every rule of ``muse_rules``."""
    ref = model(art.retain(split).variables, 0)
    out: dict = {"sustainability": {}, "scalability": {}, "relearn": {}}
    relearn_models = {"target": model(art.target().variables), "retain": ref}
    for name in p.muse_rules:
        log(f"  MUSE scenarios: {name}")
        out["sustainability"][name] = sustainability(p, art, split, name, ref)
        out["scalability"][name] = scalability(p, art, split, name, ref)
        b = p.benchmark
        start = jax.tree.map(lambda x: x[:1], art.target().variables)
        v, diverged = _unlearn(
            p, art, name, start, b.forget[split], b.retain[split], label=f"{name}", tag=200
        )
        if not diverged:
            relearn_models[name] = model(v)
    out["relearn"] = relearn(p, art, split, relearn_models)
    for kind in ("sustainability", "scalability"):
        for name, points in out[kind].items():
            for pt in points:
                shown = ", ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in pt.items()
                )
                log(f"  {kind} {name}: {shown}")
    for label, r in out["relearn"].items():
        log(
            f"  relearn {label}: held-out forget EM {r['exact_memorization_before']:.3f} -> "
            f"{r['exact_memorization_after']:.3f}, ROUGE {r['rouge_forget_before']:.3f} -> "
            f"{r['rouge_forget_after']:.3f}"
        )
    return out
