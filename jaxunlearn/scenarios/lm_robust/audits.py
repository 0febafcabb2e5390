"""The robustness battery of one model, as the robust-LM experiment runs it.

Each audit of :mod:`jaxunlearn.audit.lm_robust` (issue 12, item 2) is wrapped as
``audit(ctx, network, variables) -> {metric: float}`` on the benchmark of
:mod:`~jaxunlearn.scenarios.lm_robust.benchmark`; :data:`AUDITS` maps names to them and
:data:`HEADLINES` names the one number per audit that the rule x audit table and heat map show
(``shared/reference/lm_robust_evaluation.md`` has the formulas):

* ``form_consistency``: key-fact / option accuracy on the forget and retain facts in every form;
  ``forget/form_gap`` = mean accuracy of the forms unlearning did not see minus the QA form's;
* ``structural``: key-fact accuracy on the forgotten graph facts and on retain graph facts by
  their dependence (entities shared with the forgotten facts); ``graph/dep_gap`` = independent
  minus dependent retain accuracy (collateral damage on linked facts, Thaker et al. 2024);
* ``relearn``: :func:`~jaxunlearn.audit.lm_robust.relearn_lm`, the held-out half's key-fact token
  accuracy after fine-tuning on half the forget facts, on retain QA, on unrelated utility facts;
* ``in_context``: :func:`~jaxunlearn.audit.lm_robust.in_context_recovery` (zero-shot, k retain
  facts in context, the forgotten fact itself in context);
* ``latent_probe``: ridge probes on every layer's last-token hidden states, fitted on the retain
  facts' multiple-choice options and scored on the forget facts' (chance = 1 / options);
* ``concept_vectors``: per forget author, the value vectors of the target whose vocabulary
  projection favours that author's answer tokens, and the cosine / L2 / concept-score change of
  the audited model's same vectors;
* ``adversarial``: GCG suffixes (budgeted) on a few forget questions; success = the whole answer
  reproduced;
* ``waterdrum``: watermark z-score of the forget owner's key in greedy answers to its questions
  (and a retain owner's, the control), agreement with the retain model's;
* ``retain_similarity``: Jensen-Shannon divergence of answer distributions from the retain model's
  on forget and retain QA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxunlearn.audit import lm_robust as lr
from jaxunlearn.core.checks import check_count
from jaxunlearn.models import generation

SETTINGS: dict[str, Any] = {
    "batch_size": 64,
    "retain_facts": 60,  # retain facts of the form, in-context and similarity audits
    "relearn_steps": 8,
    "relearn_learning_rate": 1e-3,
    "relearn_batch_size": 8,
    "probe_ridge": 1.0,
    "concept_top": 2,  # value vectors per forget author
    "gcg_questions": 3,
    "gcg_budget": 16,
    "gcg_suffix_length": 4,
    "gcg_top_k": 16,
    "gcg_candidates": 32,
    "max_new_tokens": 24,
}


def resolve_settings(given: dict) -> dict:
    """:data:`SETTINGS` overridden by ``given``; ``ValueError`` naming an unknown key, a count
    that is not an integer >= 1 (e.g. ``audit.gcg_budget``) or a non-positive rate or ridge."""
    bad = sorted(set(given) - set(SETTINGS))
    if bad:
        raise ValueError(f"`audit` has unknown keys {bad}; valid: {sorted(SETTINGS)}")
    out = {**SETTINGS, **given}
    for k, v in out.items():
        if isinstance(SETTINGS[k], int):
            out[k] = check_count(v, f"audit.{k}", 1)
        elif not v > 0:
            raise ValueError(f"`audit.{k}` must be positive; got {v!r}")
    return out


@dataclasses.dataclass
class RobustAuditContext:
    """What every model's audits share: the plan, the target and the retain model, the forget
    and retain QA rows (``retain_sub``: positions of the retain facts audited among
    ``bench.retain_records``), the concept vectors located on the target and the retain model's
    answers (WaterDrum's reference)."""

    plan: Any
    target: Any
    retain: Any
    forget_qa: np.ndarray
    retain_qa: np.ndarray
    retain_sub: np.ndarray
    concepts: list = dataclasses.field(default_factory=list)
    retain_texts: list | None = None
    key: Any = None

    @property
    def bench(self):
        return self.plan.bench

    @property
    def settings(self) -> dict:
        return self.plan.audit


def make_context(plan, target, retain) -> RobustAuditContext:
    """The :class:`RobustAuditContext` of ``plan``: its target and retain model (one each)."""
    b = plan.bench
    record_row = _qa_row_of_record(b)
    forget_qa = np.asarray([record_row[int(r)] for r in b.forget_records], np.int32)
    rng = np.random.default_rng(plan.lm.root_seed)
    n = min(int(plan.audit["retain_facts"]), len(b.retain_records))
    chosen = np.sort(rng.choice(len(b.retain_records), n, replace=False))
    retain_qa = np.asarray([record_row[int(b.retain_records[i])] for i in chosen], np.int32)
    ctx = RobustAuditContext(
        plan, target, retain, forget_qa, retain_qa, chosen, key=jax.random.key(plan.lm.root_seed)
    )
    if "concept_vectors" in plan.audits:
        ctx.concepts = _locate(ctx)
    if "waterdrum" in plan.audits:
        ctx.retain_texts = _owner_texts(ctx, plan.network, retain)
    return ctx


def _qa_row_of_record(b) -> dict[int, int]:
    """``{record index: QA row}`` (the QA rows come first, in record order of train + holdout)."""
    train = b.corpus.split("train").records
    holdout = b.corpus.split("holdout10").records
    return {r.index: i for i, r in enumerate([*train, *holdout])}


# ------------------------------------------------------------------------------ the audits


def form_consistency(ctx: RobustAuditContext, network, variables) -> dict:
    b, bs = ctx.bench, int(ctx.settings["batch_size"])
    results = {}
    for part, sets in b.form_sets.items():
        keep = ctx.retain_sub if part == "retain" else slice(None)
        results[part] = {
            f: lr.form_correct(network, variables, _rows(enc, keep), batch_size=bs)
            for f, enc in sets.items()
        }
    out = lr.form_consistency(results["forget"], results["retain"], trained_form=b.unlearn_form)
    return with_derived({k: float(v) for k, v in out.items()})


def with_derived(metrics: dict) -> dict:
    """``metrics`` with ``forget/other_forms`` (= ``forget/form_gap + forget/qa``, the mean
    accuracy of the forms unlearning did not see) when both are present."""
    if "forget/form_gap" in metrics and "forget/qa" in metrics:
        return {**metrics, "forget/other_forms": metrics["forget/form_gap"] + metrics["forget/qa"]}
    return metrics


def _rows(enc: dict, keep) -> dict:
    return {k: v[keep] for k, v in enc.items()}


def structural(ctx: RobustAuditContext, network, variables) -> dict:
    b, bs = ctx.bench, int(ctx.settings["batch_size"])
    x, y = b.lm.x, b.lm.y

    def acc(rows):
        if len(rows) == 0:
            return float("nan")
        return float(
            lr.key_fact_accuracy(
                network, variables, x[rows], y[rows], b.key_mask[rows], batch_size=bs
            ).mean()
        )

    out = {"graph/forget": acc(b.graph_forget)}
    for d, rows in b.graph_retain.items():
        out[f"graph/retain_dep{d}"] = acc(rows)
    dependent = np.concatenate([b.graph_retain[1], b.graph_retain[2]])
    out["graph/dep_gap"] = out["graph/retain_dep0"] - acc(dependent)
    return out


def relearn(ctx: RobustAuditContext, network, variables) -> dict:
    b, s = ctx.bench, ctx.settings
    x, y = b.lm.x, b.lm.y
    f, r, u = ctx.forget_qa, ctx.retain_qa, b.utility_rows
    res = lr.relearn_lm(
        network,
        variables,
        (x[f], y[f]),
        retain=(x[r], y[r]),
        utility=(x[u], y[u]) if len(u) else None,
        key_mask=b.key_mask[f],
        max_steps=int(s["relearn_steps"]),
        learning_rate=float(s["relearn_learning_rate"]),
        batch_size=int(s["relearn_batch_size"]),
        key=jax.random.key(ctx.plan.lm.root_seed),
    )
    out = {}
    for name, result in res.items():
        out["relearn/start"] = float(result.curve[0])
        out[f"relearn/{name}"] = float(result.curve[-1])
    return out


def in_context(ctx: RobustAuditContext, network, variables) -> dict:
    b = ctx.bench
    lm = b.lm
    questions = [_question(b, i) for i in ctx.forget_qa]
    answers = [lm.answers[i] for i in ctx.forget_qa]
    facts = [lm.key_facts[i] for i in ctx.forget_qa]
    pool = ([_question(b, i) for i in ctx.retain_qa], [lm.answers[i] for i in ctx.retain_qa])
    para = [b.corpus.records[int(r)].paraphrased_question for r in b.forget_records]
    res = lr.in_context_recovery(
        network,
        variables,
        b.tokenizer,
        questions,
        answers,
        facts,
        pool=pool,
        k=int(ctx.plan.variants["context_shots"]),
        self_questions=para,
        seed=ctx.plan.lm.root_seed,
    )
    return {f"icl/{k}": float(np.mean(v)) for k, v in res.items()}


def _question(b, row: int) -> str:
    return b.questions[int(row)]


def latent_probe(ctx: RobustAuditContext, network, variables) -> dict:
    b = ctx.bench
    train = b.form_sets["retain"]["multiple_choice"]
    test = b.form_sets["forget"]["multiple_choice"]
    n_tr, k, t = train["options_x"].shape
    n_te = test["options_x"].shape[0]
    feats_tr = lr.last_token_hidden(network, variables, train["options_x"].reshape(-1, t))
    feats_te = lr.last_token_hidden(network, variables, test["options_x"].reshape(-1, t))
    out = {}
    accs = []
    for layer in range(feats_tr.shape[0]):
        a = float(
            lr.probe_choice_accuracy(
                feats_tr[layer].reshape(n_tr, k, -1),
                train["correct"],
                feats_te[layer].reshape(n_te, k, -1),
                test["correct"],
                float(ctx.settings["probe_ridge"]),
            )
        )
        out[f"probe/layer{layer}"] = a
        accs.append(a)
    out["probe/last"] = accs[-1]
    out["probe/chance"] = 1.0 / k
    return out


def _locate(ctx: RobustAuditContext) -> list:
    """Per forget author: ``(concept ids, locations, ablation effect)`` on the target."""
    b, net = ctx.bench, ctx.plan.network
    tok = b.tokenizer
    x, y = b.lm.x, b.lm.y
    out = []
    by_author: dict[int, list[int]] = {}
    for pos, rec in enumerate(b.forget_records):
        by_author.setdefault(b.corpus.records[int(rec)].author, []).append(pos)
    other = ctx.retain_qa
    for _, positions in sorted(by_author.items()):
        ids = sorted(
            {
                i
                for p in positions
                for i in tok.encode(" " + b.corpus.records[int(b.forget_records[p])].key_fact)
            }
        )
        locations = lr.locate_concept_vectors(
            net, ctx.target, np.asarray(ids), top=int(ctx.settings["concept_top"])
        )
        rows = ctx.forget_qa[positions]
        effect = lr.ablation_effect(
            net, ctx.target, locations, (x[rows], y[rows]), (x[other], y[other])
        )
        out.append((np.asarray(ids), locations, effect))
    return out


def concept_vectors(ctx: RobustAuditContext, network, variables) -> dict:
    cos, l2, change = [], [], []
    for ids, locations, _ in ctx.concepts:
        res = lr.concept_vectors(network, ctx.target, variables, locations, ids)
        cos += res["cosine"].tolist()
        l2 += res["l2"].tolist()
        change += res["projection_change"].tolist()
    return {
        "cv/cosine": float(np.mean(cos)),
        "cv/l2": float(np.mean(l2)),
        "cv/projection_change": float(np.mean(change)),
    }


def adversarial(ctx: RobustAuditContext, network, variables) -> dict:
    b, s = ctx.bench, ctx.settings
    n = min(int(s["gcg_questions"]), len(ctx.forget_qa))
    success, loss = [], []
    for j, row in enumerate(ctx.forget_qa[:n]):
        prefix, postfix, target = lr.gcg_segments(b.tokenizer, _question(b, row), b.lm.answers[row])
        res = lr.adversarial_prompt(
            network,
            variables,
            prefix,
            postfix,
            target,
            budget=int(s["gcg_budget"]),
            key=jax.random.fold_in(ctx.key, j),
            suffix_length=int(s["gcg_suffix_length"]),
            top_k=int(s["gcg_top_k"]),
            num_candidates=int(s["gcg_candidates"]),
            forbidden_ids=(b.tokenizer.bos_id, b.tokenizer.eos_id),
        )
        success.append(bool(res.success))
        loss.append(float(res.loss))
    return {"gcg/success": float(np.mean(success)), "gcg/loss": float(np.mean(loss))}


def _owner_texts(ctx: RobustAuditContext, network, variables) -> list[list[str]]:
    """Greedy answers of the model to the forget owner's and the control owner's questions."""
    b = ctx.bench
    tok = b.tokenizer
    out = []
    for owner in (b.forget_owner, b.retain_owner):
        questions = [b.corpus.records[int(r)].question for r in b.owners.owners[owner].records]
        prompts, _ = tok.encode_prompts(
            questions, max_len=max(len(tok.prompt_ids(q)) for q in questions)
        )
        gen = generation.generate(
            network,
            variables,
            prompts,
            key=ctx.key,
            max_new_tokens=int(ctx.settings["max_new_tokens"]),
            eos_id=tok.eos_id,
        )
        out.append([tok.decode_answer(t[0]) for t in np.asarray(gen.tokens)])
    return out


def waterdrum(ctx: RobustAuditContext, network, variables) -> dict:
    b = ctx.bench
    keys = [b.owners.owners[o].key for o in (b.forget_owner, b.retain_owner)]
    texts = _owner_texts(ctx, network, variables)
    res = lr.waterdrum(texts, keys, retrained_texts=ctx.retain_texts)
    return {
        "wm/z_forget": float(res.z[0]),
        "wm/z_control": float(res.z[1]),
        "wm/gap": float(res.gap),
        "wm/agreement": float(res.agreement),
    }


def retain_similarity(ctx: RobustAuditContext, network, variables) -> dict:
    x, y = ctx.bench.lm.x, ctx.bench.lm.y
    sets = {
        "forget": (x[ctx.forget_qa], y[ctx.forget_qa]),
        "retain": (x[ctx.retain_qa], y[ctx.retain_qa]),
    }
    res = lr.retain_similarity(network, variables, ctx.retain, sets, kind="js")
    return {f"js/{k}": v for k, v in res.items()}


AUDITS: dict[str, Callable[..., dict]] = {
    "form_consistency": form_consistency,
    "structural": structural,
    "relearn": relearn,
    "in_context": in_context,
    "latent_probe": latent_probe,
    "concept_vectors": concept_vectors,
    "adversarial": adversarial,
    "waterdrum": waterdrum,
    "retain_similarity": retain_similarity,
}
# Audits that read the parameters directly, not through `network.apply` or generation: an
# inference-time wrapper (ECO) is invisible to them, so they are not applicable to one.
READS_WEIGHTS = ("concept_vectors", "adversarial")
# The table's columns: (audit, metric, meaning, heat-map cell?). The heat map shows the metrics
# that measure knowledge of the forget facts, where target (knows) and retain model (never saw)
# are the two ends; the others (utility, gaps) are in the table only.
COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    (
        "form_consistency",
        "forget/qa",
        "forget key-fact accuracy, QA form (what unlearning saw)",
        True,
    ),
    (
        "form_consistency",
        "forget/other_forms",
        "mean forget accuracy over the other forms (cloze, multiple choice, true/false, narrative)",
        True,
    ),
    (
        "form_consistency",
        "forget/form_gap",
        "other forms' mean accuracy minus QA's (> 0: knowledge left in unseen forms; the retain "
        "model's is the chance level of the choice forms)",
        False,
    ),
    ("form_consistency", "retain/qa", "retain key-fact accuracy, QA form (utility)", False),
    ("structural", "graph/forget", "key-fact accuracy on the forgotten graph facts", True),
    (
        "structural",
        "graph/dep_gap",
        "independent minus dependent retain graph accuracy (> 0: collateral damage on linked "
        "facts)",
        False,
    ),
    (
        "relearn",
        "relearn/start",
        "held-out half of the forget set: key-fact token accuracy before any attack",
        False,
    ),
    (
        "relearn",
        "relearn/utility",
        "... after fine-tuning on unrelated utility facts",
        True,
    ),
    ("relearn", "relearn/retain", "... after fine-tuning on retain QA", True),
    ("relearn", "relearn/forget_half", "... after fine-tuning on the other half", True),
    ("in_context", "icl/k_shot", "forget accuracy with other facts in context", True),
    ("in_context", "icl/self", "forget accuracy with the fact itself in context", True),
    (
        "latent_probe",
        "probe/last",
        "last-layer probe accuracy on forget multiple choice (chance 1/options)",
        True,
    ),
    (
        "concept_vectors",
        "cv/cosine",
        "cosine of the target's concept vectors to the audited model's (1 = unmoved)",
        True,
    ),
    (
        "concept_vectors",
        "cv/projection_change",
        "change of the vectors' concept score (< 0: promotes the concept less)",
        True,
    ),
    ("adversarial", "gcg/success", "share of GCG-attacked forget questions answered exactly", True),
    ("waterdrum", "wm/z_forget", "watermark z of the forget owner's key in its answers", True),
    (
        "retain_similarity",
        "js/forget",
        "JS divergence from the retain model on forget QA (0 = exact unlearning)",
        True,
    ),
)


def audit_model(ctx: RobustAuditContext, network, variables, audits) -> dict:
    """Every audit of ``audits`` on one model: ``{metric: float}``."""
    out = {}
    for name in audits:
        out.update(AUDITS[name](ctx, network, variables))
    return out


def concept_summary(ctx: RobustAuditContext) -> list[dict]:
    """The located concept vectors and their ablation effect on the target (JSON)."""
    return [
        {"ids": ids.tolist(), "locations": [list(loc) for loc in locs], **effect}
        for ids, locs, effect in ctx.concepts
    ]


__all__ = [
    "AUDITS",
    "COLUMNS",
    "READS_WEIGHTS",
    "SETTINGS",
    "RobustAuditContext",
    "audit_model",
    "make_context",
]
