"""The audit battery of one language model on one forget split: TOFU, MUSE privleak, leak@k.

:func:`audit_model` scores a model against a split of an
:class:`~jaxunlearn.scenarios.lm.benchmark.LMBenchmark` and returns plain numbers plus the
per-example forget truth ratios (:class:`ModelAudit`); :func:`table_metrics` turns a model's audit
and the reference retain model's into the TOFU-table row:

* ``forget_quality``: KS p-value of forget truth ratios, model vs the first retain model (TOFU);
* ``model_utility``: harmonic mean of {Prob, ROUGE-L recall of the greedy answer, truth-ratio
  score ``mean max(0, 1 - TR)``} x {retain QA, utility facts} (TOFU's nine values, with our
  utility facts in the role of its real authors and world facts: six values);
* ``rouge_forget``, ``rouge_retain``: ROUGE-L recall of greedy answers (TOFU);
* ``truth_ratio_forget``: ``mean min(TR, 1/TR)`` on the forget set; ``prob_forget``;
* ``exact_memorization``/``extraction_strength`` on the forget set (teacher forced);
* ``privleak``: MUSE's ``100 (AUC - AUC_retain) / AUC_retain`` on Min-K% (k = 0.4) member AUCs,
  forget (members) vs holdout authors (never trained on);
* ``VerbMem_f``: MUSE's verbatim memorisation (``train_passages`` only): ROUGE-L F1 x 100 of
  the greedy continuation of the first half of each forget author's passage window against the
  true second half (MUSE: 128 greedy tokens after a forget-text prefix; here the window's rest);
* ``leak@k``: from ``leak_samples`` answers sampled (T = 1, top-p 1) per forget question, the
  chance that one of ``k`` leaks (leak@k paper). A response leaks when its ROUGE-L recall against
  the true answer reaches ``leak_rouge`` *and* it names the answer's key fact: the generated
  corpus knows which words carry the fact, which stands in for the paper's NLI judge.

Teacher-forced scores run as one jitted program per batch shape; greedy answers and samples as one
compiled generation program (:mod:`jaxunlearn.models.generation`).

References: ``shared/reference/lm_unlearning.md`` sections 3 and 5 (Table B);
:mod:`jaxunlearn.audit.lm`, :mod:`jaxunlearn.audit.text`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.audit import lm as lm_audit
from jaxunlearn.core import losses

_TF_CACHE: dict = {}


@dataclasses.dataclass
class ModelAudit:
    """One model's audit on one split.

    Attributes:
      metrics: ``{name: float}`` everything but forget quality (which needs the reference).
      tr_forget: ``[n_forget]`` per-example truth ratios on the forget set.
      auc_forget: Min-K% membership AUC, forget (member) vs holdout.
    """

    metrics: dict
    tr_forget: np.ndarray
    auc_forget: float


def _tf_program(apply, k: float):
    """The jitted per-batch teacher-forced scores of ``apply``."""
    key = (apply, k)
    if key not in _TF_CACHE:

        def scores(variables, x, y):
            logits = apply(variables, x).logits.astype(jnp.float32)
            mask = losses.token_mask(y)
            logp = losses.token_log_probs(logits, y)
            nll_avg = -logp.sum(-1) / losses.answer_lengths(y)
            mean, std = lm_audit.log_prob_moments(logits)
            return {
                "nll_avg": nll_avg,
                "min_k": lm_audit.min_k_score(logp, mask, k=k),
                "min_k_pp": lm_audit.min_k_plus_plus_score(logp, mean, std, mask, k=k),
                "em": lm_audit.exact_memorization(logits, y, mask),
                "es": lm_audit.extraction_strength(logits, y, mask),
            }

        _TF_CACHE[key] = jax.jit(scores)
    return _TF_CACHE[key]


def teacher_forced(apply, variables, x, y, *, batch_size: int, k: float = 0.4) -> dict:
    """Per-row teacher-forced scores of ``(x, y)`` ``[n, T]``: ``nll_avg`` (per-token average
    NLL of the answer), ``min_k``, ``min_k_pp`` (membership scores, higher = member), ``em``,
    ``es`` (exact memorisation, extraction strength), each ``[n]`` NumPy.

    Rows run in batches of ``batch_size`` (the last padded by repeating row 0), so every set
    reuses one compiled program."""
    x, y = np.asarray(x), np.asarray(y)
    n = len(x)
    if n == 0:
        raise ValueError("teacher_forced: no rows to score")
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, np.repeat(x[:1], pad, 0)])
        y = np.concatenate([y, np.repeat(y[:1], pad, 0)])
    program = _tf_program(apply, float(k))
    parts = [
        program(variables, x[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, len(x), batch_size)
    ]
    return {key: np.concatenate([np.asarray(p[key]) for p in parts])[:n] for key in parts[0]}


def nll_avg(apply, variables, x, y, *, batch_size: int) -> np.ndarray:
    """Per-row average answer NLL of ``x``/``y`` of any leading shape ``[..., T]``."""
    shape = x.shape[:-1]
    out = teacher_forced(
        apply,
        variables,
        np.reshape(x, (-1, x.shape[-1])),
        np.reshape(y, (-1, y.shape[-1])),
        batch_size=batch_size,
    )["nll_avg"]
    return out.reshape(shape)


def truth_ratios(p, variables, rows, *, paraphrased: bool = True, nll_correct=None):
    """``[n]`` TOFU truth ratios of ``rows``: the paraphrased answer (``paraphrased=False``: the
    answer itself, or the given ``nll_correct``) vs the perturbed answers.

    Returns:
      ``(truth ratios [n], per-token NLL of the perturbed answers [n, K])``.
    """
    b, bs = p.benchmark, int(p.eval["batch_size"])
    apply = p.network.apply
    if nll_correct is None:
        cx, cy = (b.para_x, b.para_y) if paraphrased else (b.x, b.y)
        nll_correct = nll_avg(apply, variables, cx[rows], cy[rows], batch_size=bs)
    pert = nll_avg(apply, variables, b.pert_x[rows], b.pert_y[rows], batch_size=bs)
    return np.asarray(lm_audit.truth_ratio(nll_correct, pert)), pert


def _generate(p, variables, rows, *, num_samples: int, key) -> list[list[str]]:
    """``num_samples`` decoded answers to each of ``rows``' questions.

    Greedy (``key`` is ``None``, one answer): chunks of ``eval.batch_size`` prompts (the last
    padded), so every set of rows reuses one compiled program. Sampled: every row in one
    compiled program (:func:`~jaxunlearn.models.generation.generate` with its ``batch_size``),
    which decodes ``eval.sample_rows // num_samples`` prompts with all their samples at a time
    (a chunk stops once all its rows have emitted EOS)."""
    from jaxunlearn.models import generation

    b = p.benchmark
    rows = np.asarray(rows)
    prompts = b.prompts[rows]
    sampling = key is not None
    if sampling:
        bs = max(1, min(len(rows), int(p.eval["sample_rows"]) // num_samples))
    else:
        bs = int(p.eval["batch_size"])
    pad = (-len(rows)) % bs
    if pad:
        prompts = np.concatenate([prompts, np.repeat(prompts[:1], pad, 0)])
    kw = dict(max_new_tokens=int(p.eval["max_new_tokens"]), eos_id=b.eos_id)
    if sampling:
        tokens = generation.generate(
            p.network,
            variables,
            prompts,
            key=key,
            temperature=1.0,
            num_samples=num_samples,
            batch_size=bs,
            **kw,
        ).tokens
    else:
        tokens = np.concatenate(
            [
                np.asarray(
                    generation.generate(
                        p.network, variables, prompts[i : i + bs], key=jax.random.key(0), **kw
                    ).tokens
                )
                for i in range(0, len(prompts), bs)
            ]
        )
    tokens = np.asarray(tokens)[: len(rows)]
    return [[b.tokenizer.decode(t) for t in per_q] for per_q in tokens]


def greedy_answers(p, variables, rows) -> list[str]:
    """The greedy answer text to each of ``rows``' questions."""
    return [a[0] for a in _generate(p, variables, rows, num_samples=1, key=None)]


def sampled_answers(p, variables, rows, *, key) -> list[list[str]]:
    """``leak_samples`` answers sampled (temperature 1, top-p 1) to each of ``rows``."""
    return _generate(p, variables, rows, num_samples=int(p.eval["leak_samples"]), key=key)


def rouge_recall(predictions, references) -> float:
    """Mean ROUGE-L recall of ``predictions`` against ``references`` (TOFU)."""
    from jaxunlearn.audit import text

    return float(np.mean(text.rouge_l(predictions, references, kind="recall")))


def retain_rows(p, split: str) -> np.ndarray:
    """The retain QA rows audited (evenly spaced author rows of the split's retain set)."""
    b = p.benchmark
    rows = b.retain[split]
    rows = rows[b.author[rows] >= 0]
    count = min(int(p.eval["retain_questions"]), len(rows))
    return rows[np.linspace(0, len(rows) - 1, count).round().astype(int)]


def leak_rows(p, split: str) -> np.ndarray:
    """The forget rows sampled for leak@k (evenly spaced over the split)."""
    rows = p.benchmark.forget[split]
    count = min(int(p.eval["leak_questions"]), len(rows))
    return rows[np.linspace(0, len(rows) - 1, count).round().astype(int)]


def utility_components(p, variables, split: str, *, retain=None, utility=None) -> dict[str, float]:
    """TOFU's model-utility components: Prob, truth-ratio score and ROUGE-L recall on the retain
    QA (paraphrased answer as the truth) and on the utility facts (TOFU's real-authors/world-facts
    treatment: normalised Prob against the perturbed answers, the answer itself as the truth).

    ``retain``/``utility``: the rows to use (default: :func:`retain_rows` and every utility
    fact)."""
    b, bs = p.benchmark, int(p.eval["batch_size"])
    apply = p.network.apply
    out = {}
    retain = retain_rows(p, split) if retain is None else np.asarray(retain)
    utility = b.utility if utility is None else np.asarray(utility)
    for name, rows in (("retain", retain), ("utility", utility)):
        if len(rows) == 0:
            continue
        tf = teacher_forced(apply, variables, b.x[rows], b.y[rows], batch_size=bs)
        if name == "retain":
            tr, _ = truth_ratios(p, variables, rows)
            prob = lm_audit.probability(tf["nll_avg"])
        else:
            tr, pert = truth_ratios(p, variables, rows, nll_correct=tf["nll_avg"])
            prob = lm_audit.normalised_probability(tf["nll_avg"], pert)
        out[f"prob_{name}"] = float(np.mean(prob))
        out[f"truth_{name}"] = float(lm_audit.retain_truth_ratio(tr))
        answers = greedy_answers(p, variables, rows)
        out[f"rouge_{name}"] = rouge_recall(answers, [b.answers[i] for i in rows])
    return out


def model_utility(components: dict) -> float:
    return lm_audit.model_utility(components)


def audit_model(p, variables, split: str, *, full: bool = True, key=None) -> ModelAudit:
    """Audits one model (unbatched ``variables``) on ``split``.

    ``full=False`` (the audits along a rule's run) computes only what forget quality and model
    utility need; ``full=True`` adds ROUGE on the forget set, memorisation, privleak's AUC and
    leak@k (``key``: the sampling key)."""
    b, bs = p.benchmark, int(p.eval["batch_size"])
    apply = p.network.apply
    forget = b.forget[split]
    tr, _ = truth_ratios(p, variables, forget)
    comps = utility_components(p, variables, split)
    metrics = {
        **comps,
        "model_utility": model_utility(comps),
        "truth_ratio_forget": float(lm_audit.forget_truth_ratio(tr)),
    }
    if not full:
        return ModelAudit(metrics, tr, math.nan)
    k = float(p.eval["min_k"])
    tf_f = teacher_forced(apply, variables, b.x[forget], b.y[forget], batch_size=bs, k=k)
    tf_h = teacher_forced(apply, variables, b.x[b.holdout], b.y[b.holdout], batch_size=bs, k=k)
    auc = float(lm_audit.membership_auc(tf_f["min_k"], tf_h["min_k"]))
    metrics.update(
        prob_forget=float(np.mean(lm_audit.probability(tf_f["nll_avg"]))),
        exact_memorization=float(np.mean(tf_f["em"])),
        extraction_strength=float(np.mean(tf_f["es"])),
        mia_min_k_auc=auc,
        mia_min_k_pp_auc=float(lm_audit.membership_auc(tf_f["min_k_pp"], tf_h["min_k_pp"])),
        rouge_forget=rouge_recall(
            greedy_answers(p, variables, forget), [b.answers[i] for i in forget]
        ),
    )
    metrics.update(leak_metrics(p, variables, split, key=key))
    if p.train_passages:
        metrics["VerbMem_f"] = verbatim_memorization(p, variables, split)
    return ModelAudit(metrics, tr, auc)


def verbmem_prompts(p, split: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """MUSE VerbMem's prompts and true continuations (token ids) on ``split``: each of its forget
    authors' passage windows cut in half (:func:`~jaxunlearn.scenarios.lm.benchmark.
    verbmem_split`)."""
    from jaxunlearn.scenarios.lm import benchmark as bench_lib

    b = p.benchmark
    rows = b.passage_rows(b.authors_of(b.forget[split]))
    if len(rows) == 0:
        raise ValueError(f"Split {split!r}: its forget authors have no passage windows")
    return bench_lib.verbmem_split(
        b.passage_x[rows], bos_id=int(b.tokenizer.bos_id), eos_id=b.eos_id, pad_id=b.pad_id
    )


def verbatim_memorization(p, variables, split: str) -> float:
    """MUSE's VerbMem on ``split`` (lower = less verbatim memorisation): the greedy continuation
    of each forget passage window's first half, as long as the longest true rest, against that
    rest, by mean ROUGE-L F1 x 100 (:func:`jaxunlearn.audit.verbatim_memorization`).

    References: Shi et al., MUSE (arXiv 2407.06460), criterion C1;
    ``shared/reference/lm_unlearning.md`` sections 3-4."""
    from jaxunlearn.audit import text
    from jaxunlearn.models import generation

    b, bs = p.benchmark, int(p.eval["batch_size"])
    prompts, truths = verbmem_prompts(p, split)
    new = max(len(t) for t in truths)
    tokens = np.asarray(
        generation.greedy_answers(
            p.network, variables, prompts, max_new_tokens=new, eos_id=b.eos_id, batch_size=bs
        ).tokens
    )
    return text.verbatim_memorization(
        [b.tokenizer.decode(t) for t in tokens], [b.tokenizer.decode(t) for t in truths]
    )


def leak_metrics(p, variables, split: str, *, key) -> dict[str, float]:
    """``leak@k`` for the config's ``leak_ks``, from sampled answers to the leak rows."""
    from jaxunlearn.audit import text

    b = p.benchmark
    rows = leak_rows(p, split)
    key = jax.random.key(0) if key is None else key
    samples = sampled_answers(p, variables, rows, key=key)
    counts = text.count_leaks(
        samples,
        [b.answers[i] for i in rows],
        [b.key_facts[i] for i in rows],
        rouge_threshold=float(p.eval["leak_rouge"]),
    )
    n = int(p.eval["leak_samples"])
    out = {f"leak@{k}": lm_audit.leak_at_k(counts, n, k) for k in p.eval["leak_ks"]}
    out["leak_any_sample"] = float(np.mean(counts > 0))
    return out


def table_metrics(audit: ModelAudit, reference: ModelAudit) -> dict[str, float]:
    """The table row of ``audit``: its metrics with forget quality against ``reference`` (the
    first retain model) and privleak against the reference's AUC."""
    out = dict(audit.metrics)
    out["forget_quality"] = lm_audit.forget_quality(audit.tr_forget, reference.tr_forget)
    if not math.isnan(audit.auc_forget) and not math.isnan(reference.auc_forget):
        out["privleak"] = lm_audit.privleak(audit.auc_forget, reference.auc_forget)
    return out
