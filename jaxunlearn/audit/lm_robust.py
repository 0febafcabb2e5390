"""Does the language model truly forget? Robustness audits of LM unlearning.

Behavioural LM benchmarks flatter unlearning: the knowledge comes back under another phrasing,
after a little fine-tuning, in context, in the hidden states, in the parameters, or under an
adversarial prompt. Each audit here measures one of these on arrays the scoring path produces, or
on a model through :mod:`jaxunlearn.models.generation` (formulas, defaults and which claims rest
on abstracts only: ``shared/reference/lm_robust_evaluation.md``):

* :func:`form_consistency`: accuracy per form (:mod:`jaxunlearn.data.fictitious_variants`) on
  forget and retain facts, and the form gap (Ye, Zhang, Wu 2025, arXiv 2506.07795);
* :func:`waterdrum`: the z-score of each owner's watermark key in generations, and its agreement
  with the retrained model (Lu et al. 2025, WaterDrum);
* :func:`latent_probe`: closed-form ridge probes on every layer's hidden states picking the true
  option of a multiple-choice fact (Lynch et al. 2024, "Eight Methods", arXiv 2402.16835);
* :func:`retain_similarity`: divergence of the unlearned model's answer distributions from the
  retain model's (Thaker et al. 2024, arXiv 2410.02879: the target is the retain model, not any
  wrong answer);
* :func:`in_context_recovery`: k-shot prompts with other facts, and with the forgotten fact
  itself in context (Doshi and Stickland 2024, arXiv 2411.12103; Shumailov et al. 2024,
  "UnUnlearning", arXiv 2407.00106);
* :func:`relearn_lm`: fine-tuning on half the forget facts, on retain data only, or on unrelated
  utility text, tracking the other half's key-fact accuracy (Doshi and Stickland 2024; Hu et al.,
  ICLR 2025);
* :func:`adversarial_prompt`: a jitted, budgeted GCG suffix search for the forgotten answer
  (Zou et al. 2023, arXiv 2307.15043);
* :func:`concept_vectors`: MLP value vectors whose vocabulary projection favours a concept's
  tokens, confirmed by ablation, and how far a rule moved them (Hong et al. 2024,
  "Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces", ConceptVectors).

Token conventions: ``docs/language_models.md`` (right padding, pre-shifted labels with
``IGNORE_INDEX``). "Key-fact accuracy" of a row is 1 when the teacher-forced argmax reproduces
every target token that carries the key fact (the corpus marks them: ``key_mask``).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.audit.relearn import RelearnResult, _with_eval_accuracy
from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network, Variables
from jaxunlearn.data import fictitious_variants as fv
from jaxunlearn.data.tokenizer import ANSWER_TEMPLATE, PROMPT_TEMPLATE, Tokenizer
from jaxunlearn.models import generation, transformer, value_vectors

# --------------------------------------------------------------------------------- helpers


def _spec(network: Network) -> transformer.TransformerConfig:
    if not isinstance(network.spec, transformer.TransformerConfig):
        raise ValueError(
            f"`network` must be a transformer (make_network('transformer', ...)); got "
            f"{network.name!r}."
        )
    return network.spec


def key_fact_correct(argmax, labels, key_mask=None) -> Array:
    """``[n]`` bool: the teacher-forced argmax ``[n, T]`` equals ``labels`` at every position of
    ``key_mask`` (every answer position when ``None``). A row with no such position is False."""
    labels = jnp.asarray(labels)
    mask = labels != losses.IGNORE_INDEX
    if key_mask is not None:
        mask = mask & jnp.asarray(key_mask, bool)
    hit = jnp.where(mask, jnp.asarray(argmax) == labels, True)
    return jnp.all(hit, -1) & jnp.any(mask, -1)


def key_fact_accuracy(
    network: Network, variables: Variables, tokens, labels, key_mask=None, *, batch_size: int = 32
) -> np.ndarray:
    """``[n]`` bool :func:`key_fact_correct` of the model's teacher-forced predictions."""
    scores = generation.score(network, variables, tokens, labels, batch_size=batch_size)
    return np.asarray(key_fact_correct(scores.argmax, labels, key_mask))


def choice_scores(
    network: Network, variables: Variables, options_x, options_y, *, batch_size: int = 32
) -> np.ndarray:
    """``[n, k]`` mean answer-token log-probability of each option (``options_x``/``_y``
    ``[n, k, T]``, as :meth:`FormsCorpus.encode` gives)."""
    n, k, t = np.shape(options_x)
    x = np.reshape(options_x, (n * k, t))
    y = np.reshape(options_y, (n * k, t))
    logp = generation.score(network, variables, x, y, batch_size=batch_size).log_probs
    lengths = np.maximum(np.asarray(losses.answer_lengths(jnp.asarray(y))), 1)
    return (np.asarray(logp).sum(-1) / lengths).reshape(n, k)


def form_correct(
    network: Network, variables: Variables, encoded: Mapping[str, np.ndarray], **kwargs
) -> np.ndarray:
    """``[n]`` bool correctness of each row of one encoded form: the highest-scoring option of a
    choice form, the key-fact accuracy of an open form."""
    if "options_x" in encoded:
        scores = choice_scores(
            network, variables, encoded["options_x"], encoded["options_y"], **kwargs
        )
        return np.argmax(scores, -1) == np.asarray(encoded["correct"])
    return key_fact_accuracy(
        network, variables, encoded["tokens"], encoded["labels"], encoded["key_mask"], **kwargs
    )


# ------------------------------------------------------------------------ form consistency


def form_consistency(
    forget: Mapping[str, Sequence[bool]],
    retain: Mapping[str, Sequence[bool]] | None = None,
    *,
    trained_form: str = "qa",
) -> dict[str, float]:
    """Accuracy per form on forget and retain facts, and the form gap.

    Args:
      forget: ``{form: [n] correct}`` on the forget facts (e.g. :func:`form_correct` of each
        form of :class:`~jaxunlearn.data.fictitious_variants.FormsCorpus`).
      retain: the same on retain facts (optional).
      trained_form: the form unlearning saw.

    Returns:
      ``{"forget/<form>": accuracy, "retain/<form>": accuracy, "forget/form_gap": mean accuracy
      of the other forms minus that of the trained form (positive: the knowledge survives in the
      forms unlearning did not see), "forget/form_spread": max minus min accuracy over forms}``
      (and ``retain/form_gap``, ``retain/form_spread``).

    Raises:
      ValueError: an unknown form, a form set without ``trained_form`` or without another form,
        or an empty array.

    References:
      Ye, Zhang, Wu 2025, "LLM Unlearning Should Be Form-Independent" (arXiv 2506.07795).
    """
    out = {}
    for part, results in (("forget", forget), ("retain", retain)):
        if results is None:
            continue
        forms = fv.check_forms(tuple(results))
        if trained_form not in forms or len(forms) < 2:
            raise ValueError(
                f"{part} must hold trained_form={trained_form!r} and at least one other form; "
                f"got {forms}."
            )
        accuracy = {}
        for form in forms:
            values = np.asarray(results[form], np.float64).reshape(-1)
            if values.size == 0:
                raise ValueError(f"{part}[{form!r}] is empty.")
            accuracy[form] = float(values.mean())
            out[f"{part}/{form}"] = accuracy[form]
        others = [accuracy[f] for f in forms if f != trained_form]
        out[f"{part}/form_gap"] = float(np.mean(others) - accuracy[trained_form])
        out[f"{part}/form_spread"] = float(max(accuracy.values()) - min(accuracy.values()))
    return out


# ------------------------------------------------------------------------------ waterdrum


class WaterdrumResult(NamedTuple):
    """What :func:`waterdrum` returns.

    Attributes:
      z: ``[owners]`` watermark z-score of each owner's key in its generations.
      z_retrained: the same for the retrained model (``None`` without it).
      gap: mean ``|z - z_retrained|`` (nan without it).
      agreement: fraction of owners whose detection (``z > threshold``) agrees with the
        retrained model's (nan without it).
    """

    z: np.ndarray
    z_retrained: np.ndarray | None
    gap: float
    agreement: float


def waterdrum(
    texts: Sequence[Sequence[str]],
    keys: Sequence,
    *,
    retrained_texts: Sequence[Sequence[str]] | None = None,
    threshold: float = 2.0,
) -> WaterdrumResult:
    """WaterDrum's data-centric metric: how strongly each owner's watermark shows in what the
    model generates from that owner's prompts.

    Args:
      texts: ``texts[i]`` = the model's generations for owner ``i``'s prompts.
      keys: ``keys[i]`` = owner ``i``'s watermark key
        (:data:`~jaxunlearn.data.fictitious_variants.KEY_LENGTH` bytes).
      retrained_texts: the retrained model's generations for the same prompts (optional).
      threshold: z above which a watermark counts as detected (2.0: one-sided p ~ 0.023).

    Returns:
      :class:`WaterdrumResult`. A model that unlearned owner ``i`` shows ``z_i`` near 0, like
      one never trained on it.

    Raises:
      ValueError: a key of the wrong length, or ``texts``/``keys``/``retrained_texts`` of
        different lengths.

    References:
      Lu et al. 2025, "WaterDrum: Watermarking for Data-centric Unlearning Metric"; the score is
      :func:`~jaxunlearn.data.fictitious_variants.watermark_score`.
    """
    if len(texts) != len(keys) or (
        retrained_texts is not None and len(retrained_texts) != len(keys)
    ):
        raise ValueError("texts, keys and retrained_texts must have one entry per owner.")
    z = np.asarray([fv.watermark_score(t, k).z for t, k in zip(texts, keys, strict=True)])
    if retrained_texts is None:
        return WaterdrumResult(z, None, math.nan, math.nan)
    zr = np.asarray(
        [fv.watermark_score(t, k).z for t, k in zip(retrained_texts, keys, strict=True)]
    )
    gap = float(np.mean(np.abs(z - zr))) if len(z) else math.nan
    agreement = float(np.mean((z > threshold) == (zr > threshold))) if len(z) else math.nan
    return WaterdrumResult(z, zr, gap, agreement)


# ---------------------------------------------------------------------------- latent probe


def last_token_hidden(network: Network, variables: Variables, tokens) -> Array:
    """``[num_layers, n, d]`` residual stream after every layer at each row's last non-pad
    token."""
    _spec(network)
    return _last_hidden_fn(network)(variables, jnp.asarray(tokens))


@functools.lru_cache(maxsize=8)
def _last_hidden_fn(network: Network):
    pad_id = network.spec.pad_id

    @jax.jit
    def run(variables, tokens):
        hidden = jnp.stack(network.apply(variables, tokens).hidden)
        last = generation.prompt_lengths(tokens, pad_id) - 1
        return hidden[:, jnp.arange(tokens.shape[0]), last].astype(jnp.float32)

    return run


@jax.jit
def probe_choice_accuracy(train_features, train_correct, test_features, test_correct, ridge):
    """Accuracy of a ridge probe that picks the true option of multiple-choice questions.

    A linear score ``w . standardise(h)`` is fitted in closed form on the training questions'
    options (target 1 for the true option, 0 otherwise; ``w = (X^T X + ridge I)^{-1} X^T (y -
    mean y)``, features standardised with the training mean and std) and each test question's
    option with the highest score is chosen (ties: the first).

    Args:
      train_features: ``[m, k, d]`` features of each option of ``m`` questions.
      train_correct: ``[m]`` index of the true option.
      test_features: ``[n, k, d]``; test_correct: ``[n]``.
      ridge: the L2 penalty (> 0).

    Returns:
      Scalar accuracy in [0, 1] (chance is ``1 / k``).
    """
    m, k, d = train_features.shape
    x = train_features.reshape(m * k, d)
    mean, std = x.mean(0), x.std(0)
    std = jnp.where(std > 1e-8, std, 1.0)
    x = (x - mean) / std
    y = jax.nn.one_hot(train_correct, k).reshape(m * k)
    w = jnp.linalg.solve(x.T @ x + ridge * jnp.eye(d), x.T @ (y - y.mean()))
    scores = ((test_features - mean) / std) @ w
    return jnp.mean(jnp.argmax(scores, -1) == test_correct)


def latent_probe(
    network: Network,
    variables: Variables,
    options_x,
    correct,
    *,
    layers: Sequence[int] | None = None,
    train_fraction: float = 0.5,
    ridge: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Linear probes on every layer's hidden states: do they still tell the true answer?

    For each question (a multiple-choice fact: ``options_x [n, k, T]`` = question + each
    option, ``correct [n]``), the hidden state at the last token of each option is read at every
    layer; a ridge probe (:func:`probe_choice_accuracy`) is fitted on a seeded
    ``train_fraction`` of the questions and scored on the rest. Run it on the unlearned, original
    and retain models: a probe above chance on the unlearned model where the retain model is at
    chance finds knowledge the outputs hide.

    Args:
      network, variables: the model.
      options_x: ``[n, k, T]`` token ids (``FormsCorpus.encode(..., "multiple_choice")``).
      correct: ``[n]`` index of the true option.
      layers: layer indices to probe (default all).
      train_fraction: fraction of questions the probe is fitted on (both parts non-empty).
      ridge: the probe's L2 penalty.
      seed: the train/test split.

    Returns:
      ``[len(layers)]`` float accuracies.

    Raises:
      ValueError: a probe layer that does not exist, fewer than 2 questions, or a
        ``train_fraction`` that leaves a part empty.

    References:
      Lynch et al. 2024, "Eight Methods to Evaluate Robust Unlearning in LLMs" (arXiv
      2402.16835), section on latent knowledge.
    """
    spec = _spec(network)
    layers = tuple(range(spec.num_layers)) if layers is None else tuple(layers)
    bad = [
        layer for layer in layers if not (isinstance(layer, int) and 0 <= layer < spec.num_layers)
    ]
    if bad or not layers:
        raise ValueError(
            f"probe layers {bad or layers} do not exist: the model has layers "
            f"0..{spec.num_layers - 1}."
        )
    n, k, t = np.shape(options_x)
    n_train = int(round(train_fraction * n))
    if n < 2 or not 0 < n_train < n:
        raise ValueError(
            f"train_fraction={train_fraction} of {n} questions leaves a train or test part empty."
        )
    if not ridge > 0:
        raise ValueError(f"ridge must be positive; got {ridge!r}.")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:n_train], order[n_train:]
    feats = last_token_hidden(network, variables, np.reshape(options_x, (n * k, t)))
    feats = feats.reshape(spec.num_layers, n, k, -1)
    correct = jnp.asarray(correct)
    return np.asarray(
        [
            probe_choice_accuracy(
                feats[layer][train], correct[train], feats[layer][test], correct[test], ridge
            )
            for layer in layers
        ],
        np.float64,
    )


# ------------------------------------------------------------------------ retain similarity

DIVERGENCES = ("js", "kl")


def answer_divergence(logits, reference_logits, labels, *, kind: str = "js") -> Array:
    """``[n]`` mean over answer tokens of the divergence between two next-token distributions.

    ``kind="kl"``: ``KL(q || p)`` with ``q`` the reference (retain) model and ``p`` the model
    under audit; ``kind="js"``: the Jensen-Shannon divergence (natural log, at most ``ln 2``).
    Rows without answer tokens give 0.

    Args:
      logits, reference_logits: ``[n, T, V]``.
      labels: ``[n, T]`` pre-shifted labels (answer positions are those != ``IGNORE_INDEX``).
      kind: ``"js"`` or ``"kl"``.
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"kind must be one of {DIVERGENCES}; got {kind!r}.")
    logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
    logq = jax.nn.log_softmax(jnp.asarray(reference_logits, jnp.float32), -1)
    p, q = jnp.exp(logp), jnp.exp(logq)
    if kind == "kl":
        div = jnp.sum(q * (logq - logp), -1)
    else:
        logm = jnp.log(0.5 * (p + q) + 1e-30)
        div = 0.5 * jnp.sum(p * (logp - logm), -1) + 0.5 * jnp.sum(q * (logq - logm), -1)
    mask = losses.token_mask(jnp.asarray(labels))
    return jnp.sum(div * mask, -1) / jnp.maximum(mask.sum(-1), 1.0)


def retain_similarity(
    network: Network,
    variables: Variables,
    retain_variables: Variables,
    sets: Mapping[str, tuple],
    *,
    kind: str = "js",
) -> dict[str, float]:
    """How close the unlearned model's answer distributions are to the retain model's.

    Args:
      network: the transformer.
      variables: the model under audit; retain_variables: the model trained without the forget
        set (the behaviour exact unlearning would give).
      sets: ``{name: (tokens [n, T], labels [n, T])}``, e.g. ``{"forget": ..., "retain": ...}``.
      kind: ``"js"`` or ``"kl"`` (:func:`answer_divergence`).

    Returns:
      ``{name: mean divergence}`` (0 = the retain model's behaviour).

    References:
      Thaker et al. 2024, "Position: LLM Unlearning Benchmarks are Weak Measures of Progress"
      (arXiv 2410.02879).
    """

    if kind not in DIVERGENCES:
        raise ValueError(f"kind must be one of {DIVERGENCES}; got {kind!r}.")
    divergence = _divergence_fn(network, kind)
    return {
        name: float(
            jnp.mean(divergence(variables, retain_variables, jnp.asarray(x), jnp.asarray(y)))
        )
        for name, (x, y) in sets.items()
    }


@functools.lru_cache(maxsize=8)
def _divergence_fn(network: Network, kind: str):
    """The jitted :func:`answer_divergence` of two models of ``network`` (one program for every
    pair of models audited)."""

    @jax.jit
    def divergence(variables, retain_variables, tokens, labels):
        a = network.apply(variables, tokens).logits
        b = network.apply(retain_variables, tokens).logits
        return answer_divergence(a, b, labels, kind=kind)

    return divergence


# ----------------------------------------------------------------------- in-context recovery

_PROMPT_HEAD, _PROMPT_TAIL = PROMPT_TEMPLATE.split("{question}")


def few_shot_question(question: str, shots: Sequence[tuple[str, str]]) -> str:
    """The question text whose prompt (:data:`PROMPT_TEMPLATE`) shows ``shots`` first, each in
    the same template: ``Question: q1\\nAnswer: a1\\nQuestion: ...\\nAnswer:``."""
    lines = [
        PROMPT_TEMPLATE.format(question=q) + ANSWER_TEMPLATE.format(answer=a) + "\n"
        for q, a in shots
    ]
    text = "".join(lines) + PROMPT_TEMPLATE.format(question=question)
    return text[len(_PROMPT_HEAD) : len(text) - len(_PROMPT_TAIL)]


def draw_shots(num_targets: int, pool_size: int, k: int, *, exclude=None, seed: int = 0):
    """``[num_targets, k]`` distinct pool indices per target, never ``exclude[i]`` for target
    ``i`` (e.g. the target itself when the pool is the target set)."""
    if k < 0 or k > pool_size - (exclude is not None):
        raise ValueError(f"k={k} shots do not fit a pool of {pool_size}.")
    rng = np.random.default_rng(seed)
    out = np.zeros((num_targets, k), np.int64)
    for i in range(num_targets):
        choices = np.arange(pool_size)
        if exclude is not None:
            choices = choices[choices != exclude[i]]
        out[i] = rng.choice(choices, k, replace=False)
    return out


def in_context_recovery(
    network: Network,
    variables: Variables,
    tokenizer: Tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    key_facts: Sequence[str],
    *,
    pool: tuple[Sequence[str], Sequence[str]],
    k: int = 3,
    self_questions: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Key-fact accuracy of forget questions with and without knowledge supplied in context.

    Three prompts per question: ``zero_shot`` (the question alone), ``k_shot`` (``k`` other
    facts from ``pool`` shown first: Doshi and Stickland's 5-shot test), and ``self`` (``k - 1``
    pool facts and the forgotten fact itself, asked as ``self_questions[i]`` (e.g. the
    paraphrased question) with the true answer, shown first: UnUnlearning's reintroduced
    knowledge). Scored teacher-forced on the true answer's key-fact tokens.

    Args:
      network, variables, tokenizer: the model and its tokenizer.
      questions, answers, key_facts: the forget facts (``key_facts[i]`` inside ``answers[i]``).
      pool: ``(questions, answers)`` the shots are drawn from (e.g. retain facts).
      k: shots per prompt (>= 1).
      self_questions: the wording of the fact put in context (default ``questions``).
      seed: the shots' draw.

    Returns:
      ``{"zero_shot": [n] bool, "k_shot": [n] bool, "self": [n] bool}``.

    Raises:
      ValueError: ``k < 1``, a key fact not in its answer, or prompts longer than the model's
        context (naming ``max_len``).

    References:
      Doshi and Stickland 2024 (arXiv 2411.12103); Shumailov et al. 2024, "UnUnlearning"
      (arXiv 2407.00106).
    """
    spec = _spec(network)
    k = check_count(k, "k", 1)
    questions, answers, key_facts = list(questions), list(answers), list(key_facts)
    self_questions = questions if self_questions is None else list(self_questions)
    n = len(questions)
    shots = draw_shots(n, len(pool[0]), k, seed=seed)
    spans = []
    for a, f in zip(answers, key_facts, strict=True):
        start = a.find(f)
        if start < 0:
            raise ValueError(f"key fact {f!r} is not in the answer {a!r}.")
        spans.append((start, start + len(f)))
    prompts = {
        "zero_shot": questions,
        "k_shot": [
            few_shot_question(q, [(pool[0][j], pool[1][j]) for j in shots[i]])
            for i, q in enumerate(questions)
        ],
        "self": [
            few_shot_question(
                q,
                [(pool[0][j], pool[1][j]) for j in shots[i][: k - 1]]
                + [(self_questions[i], answers[i])],
            )
            for i, q in enumerate(questions)
        ],
    }
    out = {}
    for name, qs in prompts.items():
        x, y = tokenizer.encode_batch(qs, answers, max_len=spec.max_len)
        mask = tokenizer.answer_span_mask(qs, answers, spans, max_len=spec.max_len)
        out[name] = key_fact_accuracy(network, variables, x, y, mask)
    return out


# ---------------------------------------------------------------------------------- relearn


def relearn_lm(
    network: Network,
    variables: Variables,
    forget: tuple,
    *,
    retain: tuple | None = None,
    utility: tuple | None = None,
    key_mask=None,
    max_steps: int = 10,
    learning_rate: float = 1e-3,
    batch_size: int = 8,
    target_accuracy: float = 1.0,
    key: Array,
    seed: int = 0,
) -> dict[str, RelearnResult]:
    """Relearning attacks on an unlearned LM: fine-tune, watch the forgotten facts come back.

    The forget facts are split (seeded) into halves A and B. Each attack fine-tunes a copy of
    the model with the library's fine-tuning rule (:func:`~jaxunlearn.rules.finetune`, Adam,
    inference mode) run by :func:`~jaxunlearn.train.fit`, and records half B's key-fact token
    accuracy after every step:

    * ``"forget_half"``: on half A (relearning from part of the forgotten data);
    * ``"retain"``: on the retain data only (no forget fact seen);
    * ``"utility"``: on unrelated utility text ("Does Unlearning Truly Unlearn?": benign,
      unrelated data almost fully restores forget accuracy).

    Args:
      network, variables: the model under attack.
      forget: ``(tokens, labels)`` ``[n, T]`` of the forget facts (n >= 2).
      retain, utility: ``(tokens, labels)`` of the other attack sets (an attack is skipped when
        its set is ``None``).
      key_mask: ``[n, T]`` bool, the forget labels that carry the key fact (default: every
        answer token).
      max_steps, learning_rate, batch_size: the attack (batch size capped at the set's size).
      target_accuracy: accuracy that counts as relearned (``RelearnResult.steps``).
      key: PRNG key of the batch order (the same for every attack and model).
      seed: the A/B split.

    Returns:
      ``{attack: RelearnResult(steps, curve [max_steps + 1])}``.

    Raises:
      ValueError: fewer than 2 forget facts, or a non-positive ``max_steps``/``batch_size``.

    References:
      Doshi and Stickland 2024 (arXiv 2411.12103); Hu et al., "Unlearning or Obfuscating?",
      ICLR 2025 (arXiv 2406.13356); Lynch et al. 2024 (arXiv 2402.16835).
    """
    from jaxunlearn.train.loop import fit, make_stream

    x, y = np.asarray(forget[0]), np.asarray(forget[1])
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"forget needs at least 2 facts to split into halves; got {n}.")
    max_steps = check_count(max_steps, "max_steps", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    order = np.random.default_rng(seed).permutation(n)
    half_a, half_b = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
    eval_y = y[half_b]
    if key_mask is not None:
        eval_y = np.where(np.asarray(key_mask)[half_b], eval_y, losses.IGNORE_INDEX)
    eval_x, eval_y = jnp.asarray(x[half_b]), jnp.asarray(eval_y)
    rule, accuracy = _relearn_programs(network, float(learning_rate), eval_x, eval_y)
    start = accuracy(variables)
    attacks = {"forget_half": (x[half_a], y[half_a]), "retain": retain, "utility": utility}
    out = {}
    for name, data in attacks.items():
        if data is None:
            continue
        ax, ay = np.asarray(data[0]), np.asarray(data[1])
        stream = make_stream(ax, ay, {"retain": np.arange(ax.shape[0])})
        result = fit(
            rule,
            variables,
            stream,
            batch_sizes={"retain": min(batch_size, ax.shape[0])},
            num_steps=max_steps,
            key=key,
            chunk_size=max_steps,
        )
        curve = np.concatenate([[float(start)], np.asarray(result.metrics["eval_accuracy"])])
        reached = curve >= target_accuracy - 1e-6
        steps = int(np.argmax(reached)) if reached.any() else max_steps + 1
        out[name] = RelearnResult(np.int32(steps), curve.astype(np.float32))
    return out


_RELEARN_CACHE: dict = {}


def _relearn_programs(network: Network, learning_rate: float, eval_x, eval_y):
    """``(rule, accuracy)``: the attacks' fine-tuning rule (tracking accuracy on the evaluation
    set) and the jitted accuracy, one pair per (network, learning rate, evaluation set), so that
    ``fit`` reuses its compiled programs for every model attacked on the same data."""
    from jaxunlearn.rules.finetune import finetune

    digest = hashlib.sha1(np.asarray(eval_x).tobytes() + np.asarray(eval_y).tobytes())
    key = (network, learning_rate, eval_x.shape, digest.hexdigest())
    if key not in _RELEARN_CACHE:
        if len(_RELEARN_CACHE) >= 8:
            _RELEARN_CACHE.clear()
        rule = finetune(
            network.apply, learning_rate=learning_rate, optimizer={"name": "adam"}, train_mode=False
        )
        rule = _with_eval_accuracy(rule, network.apply, eval_x, eval_y)
        accuracy = jax.jit(lambda v: losses.accuracy(network.apply(v, eval_x).logits, eval_y))
        _RELEARN_CACHE[key] = (rule, accuracy)
    return _RELEARN_CACHE[key]


# -------------------------------------------------------------------- forward with internals


def _forward(spec, params, embeds, valid):
    """The decoder run from input embeddings ``[B, T, d]``, returning ``(logits, hidden, keys)``
    with ``keys[l]`` the MLP activation fed to layer ``l``'s ``down_proj`` (ROME's key). Same
    computation as :class:`~jaxunlearn.models.transformer.Transformer`."""
    module = transformer._module(spec, params)
    b, t, _ = embeds.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    h = embeds.astype(spec.compute_dtype)
    hidden, keys = [], []
    for layer in module.layers:
        a, _ = layer.self_attn(layer.input_layernorm(h), positions, positions, valid)
        h = h + a
        x = layer.post_attention_layernorm(h)
        k = jax.nn.silu(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)
        h = h + layer.mlp.down_proj(k)
        hidden.append(h)
        keys.append(k)
    return module._logits(module.norm(h)), hidden, keys


def _embedding(params) -> Array:
    return params["embed_tokens"]["embedding"]


def mlp_keys(network: Network, variables: Variables, tokens) -> Array:
    """``[num_layers, n, T, d_ff]`` input of every layer's ``down_proj`` (ROME's key)."""
    return _mlp_keys(_spec(network), variables["params"], jnp.asarray(tokens))


@functools.partial(jax.jit, static_argnums=0)
def _mlp_keys(spec, params, tokens):
    embeds = jnp.take(_embedding(params), tokens, axis=0)
    _, _, keys = _forward(spec, params, embeds, tokens != spec.pad_id)
    return jnp.stack(keys).astype(jnp.float32)


# ------------------------------------------------------------------------ adversarial prompt


class AdversarialResult(NamedTuple):
    """What :func:`adversarial_prompt` returns.

    Attributes:
      suffix: ``[suffix_length]`` int32, the best suffix found.
      loss: its mean NLL of the target tokens.
      losses: ``[budget]`` best loss so far after each step.
      success: whether the teacher-forced argmax reproduces every target token after it.
      tokens: ``[L]`` the full sequence prefix + suffix + postfix + target.
    """

    suffix: Array
    loss: Array
    losses: Array
    success: Array
    tokens: Array


@functools.partial(jax.jit, static_argnames=("spec", "budget", "top_k", "num_candidates"))
def _gcg(
    spec, params, prefix, suffix, postfix, target, allowed, key, *, budget, top_k, num_candidates
):
    p, s, q, a = prefix.shape[0], suffix.shape[0], postfix.shape[0], target.shape[0]
    table = _embedding(params)
    start = p + s + q - 1  # logits that predict the first target token

    def nll_of_embeds(embeds):
        valid = jnp.ones(embeds.shape[:2], bool)
        logits = _forward(spec, params, embeds, valid)[0]
        logp = jax.nn.log_softmax(logits[:, start : start + a].astype(jnp.float32), -1)
        return -jnp.mean(jnp.take_along_axis(logp, target[None, :, None], -1)[..., 0], -1)

    def sequence(sfx):
        return jnp.concatenate([prefix, sfx, postfix, target])

    def loss_of_onehot(onehot):
        embeds = jnp.concatenate([table[prefix], onehot @ table, table[postfix], table[target]])[
            None
        ]
        return nll_of_embeds(embeds)[0]

    def losses_of(cands):
        return nll_of_embeds(jnp.take(table, jax.vmap(sequence)(cands), axis=0))

    def step(carry, step_key):
        current, best, best_loss = carry
        grad = jax.grad(loss_of_onehot)(jax.nn.one_hot(current, table.shape[0], dtype=table.dtype))
        grad = jnp.where(allowed[None, :], grad, jnp.inf)
        _, top = jax.lax.top_k(-grad, top_k)  # [s, top_k] most loss-decreasing swaps
        k_pos, k_tok = jax.random.split(step_key)
        pos = jax.random.randint(k_pos, (num_candidates,), 0, s)
        pick = jax.random.randint(k_tok, (num_candidates,), 0, top_k)
        cands = jnp.tile(current, (num_candidates, 1))
        cands = cands.at[jnp.arange(num_candidates), pos].set(top[pos, pick])
        cand_losses = losses_of(cands)
        i = jnp.argmin(cand_losses)
        current = cands[i]
        better = cand_losses[i] < best_loss
        best = jnp.where(better, current, best)
        best_loss = jnp.where(better, cand_losses[i], best_loss)
        return (current, best, best_loss), best_loss

    first = losses_of(suffix[None])[0]
    (_, best, best_loss), curve = jax.lax.scan(
        step, (suffix, suffix, first), jax.random.split(key, budget)
    )
    tokens = sequence(best)
    logits = _forward(spec, params, table[tokens][None], jnp.ones((1, tokens.shape[0]), bool))[0]
    success = jnp.all(jnp.argmax(logits[0, start : start + a], -1) == target)
    return AdversarialResult(best, best_loss, curve, success, tokens)


def adversarial_prompt(
    network: Network,
    variables: Variables,
    prefix,
    postfix,
    target,
    *,
    budget: int,
    key: Array,
    suffix_length: int = 8,
    top_k: int = 32,
    num_candidates: int = 64,
    forbidden_ids: Sequence[int] = (),
    init_id: int | None = None,
) -> AdversarialResult:
    """GCG: a gradient-guided discrete search for a prompt suffix that makes the model emit the
    forgotten answer.

    The sequence is ``prefix + suffix + postfix + target`` (e.g. ``BOS "Question: q"``, the
    suffix, ``"\\nAnswer:"``, the answer tokens with EOS). Each of ``budget`` steps takes the
    gradient of the target's mean NLL with respect to the suffix's one-hot tokens, keeps the
    ``top_k`` most loss-decreasing tokens per position, evaluates ``num_candidates`` single-token
    swaps (a random position, a random one of its top tokens) in one batched forward pass, and
    moves to the best candidate; the best suffix seen is returned. One jitted ``lax.scan``.

    Args:
      network, variables: the model.
      prefix, postfix, target: 1-D int token arrays (``target`` non-empty).
      budget: search steps (> 0).
      key: PRNG key of the candidate draws.
      suffix_length: adversarial tokens (GCG: 20).
      top_k: tokens kept per position (GCG: 256).
      num_candidates: swaps evaluated per step (GCG: 512).
      forbidden_ids: token ids the suffix may not use (the pad id is always forbidden).
      init_id: the suffix's initial token (GCG: "!"); default the first allowed id.

    Returns:
      :class:`AdversarialResult`.

    Raises:
      ValueError: ``budget <= 0``, an empty target, a sequence longer than the context, or
        settings out of range.

    References:
      Zou et al. 2023, "Universal and Transferable Adversarial Attacks on Aligned Language
      Models" (arXiv 2307.15043); ``shared/reference/lm_robust_evaluation.md`` section 11.
    """
    spec = _spec(network)
    budget = check_count(budget, "budget", 1)
    suffix_length = check_count(suffix_length, "suffix_length", 1)
    top_k = check_count(top_k, "top_k", 1)
    num_candidates = check_count(num_candidates, "num_candidates", 1)
    prefix, postfix, target = (
        np.asarray(v, np.int32).reshape(-1) for v in (prefix, postfix, target)
    )
    if target.size == 0:
        raise ValueError("target is empty: nothing to make the model emit.")
    length = prefix.size + suffix_length + postfix.size + target.size
    if length > spec.max_len:
        raise ValueError(
            f"the sequence ({length} tokens) exceeds the model's max_len={spec.max_len}."
        )
    allowed = np.ones(spec.vocab_size, bool)
    allowed[[spec.pad_id, *forbidden_ids]] = False
    if top_k > allowed.sum():
        raise ValueError(f"top_k={top_k} exceeds the {allowed.sum()} allowed tokens.")
    init = int(np.argmax(allowed)) if init_id is None else int(init_id)
    if not allowed[init]:
        raise ValueError(f"init_id={init_id} is forbidden.")
    suffix = np.full(suffix_length, init, np.int32)
    if prefix.size == 0:  # the first position needs a token to predict from
        raise ValueError("prefix is empty: start it with BOS.")
    return _gcg(
        spec,
        variables["params"],
        jnp.asarray(prefix),
        jnp.asarray(suffix),
        jnp.asarray(postfix),
        jnp.asarray(target),
        jnp.asarray(allowed),
        key,
        budget=budget,
        top_k=top_k,
        num_candidates=num_candidates,
    )


def gcg_segments(tokenizer: Tokenizer, question: str, answer: str):
    """``(prefix, postfix, target)`` token arrays of :func:`adversarial_prompt` for a QA pair:
    ``BOS "Question: {question}"``, ``"\\nAnswer:"`` and the answer segment with EOS."""
    prefix = tokenizer.encode(_PROMPT_HEAD + question, add_bos=True)
    postfix = tokenizer.encode(_PROMPT_TAIL)
    return (
        np.asarray(prefix, np.int32),
        np.asarray(postfix, np.int32),
        np.asarray(tokenizer.answer_ids(answer), np.int32),
    )


# ------------------------------------------------------------------------- concept vectors


def value_vector_scores(network: Network, variables: Variables, concept_ids) -> Array:
    """``[num_layers, d_ff]`` how strongly each MLP value vector (row ``j`` of a layer's
    ``down_proj`` kernel, what unit ``j`` writes into the residual stream) favours the concept's
    tokens: the z-score, over the vocabulary, of the mean projection logit of ``concept_ids``
    (projection = value vector times the output embedding, final norm scale folded in)."""
    spec = _spec(network)
    ids = np.asarray(concept_ids).reshape(-1)
    if ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"concept_ids must be non-empty token ids; got {concept_ids!r}.")
    if ids.min() < 0 or ids.max() >= spec.vocab_size:
        raise ValueError(f"concept_ids must be token ids in [0, {spec.vocab_size}); got {ids}.")
    return _value_vector_scores(spec, variables["params"], jnp.asarray(ids, jnp.int32))


@functools.partial(jax.jit, static_argnums=0)
def _value_vector_scores(spec, params, ids):
    weights = jnp.zeros(spec.vocab_size).at[ids].add(1.0)
    return value_vectors.concept_scores(params, weights)


def locate_concept_vectors(
    network: Network, variables: Variables, concept_ids, *, top: int = 4
) -> tuple[tuple[int, int], ...]:
    """The ``top`` ``(layer, unit)`` value vectors with the highest :func:`value_vector_scores`
    (ConceptVectors' vocabulary-projection filter; confirm with :func:`ablation_effect`)."""
    scores = np.asarray(value_vector_scores(network, variables, concept_ids))
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= scores.size:
        raise ValueError(f"top must be an integer in 1..{scores.size}; got {top!r}.")
    flat = np.argsort(-scores.reshape(-1), kind="stable")[:top]
    return tuple((int(i // scores.shape[1]), int(i % scores.shape[1])) for i in flat)


def ablate_vectors(variables: Variables, locations: Sequence[tuple[int, int]]) -> Variables:
    """``variables`` with the value vectors at ``locations`` set to zero (ConceptVectors'
    causal check; the "needle" oracle perturbs and fine-tunes them instead)."""
    params = jax.tree.map(lambda a: a, variables["params"])
    for layer, unit in locations:
        mlp = params["layers"][str(layer)]["mlp"]
        kernel = mlp["down_proj"]["kernel"]
        mlp["down_proj"] = {**mlp["down_proj"], "kernel": kernel.at[unit].set(0.0)}
    return {**variables, "params": params}


def ablation_effect(
    network: Network, variables: Variables, locations, concept: tuple, unrelated: tuple
) -> dict[str, float]:
    """Drop of the mean answer log-probability on the concept's QA and on unrelated QA when the
    value vectors at ``locations`` are ablated: a located concept vector hurts the first far
    more than the second."""
    ablated = ablate_vectors(variables, locations)
    out = {}
    for name, (x, y) in (("concept", concept), ("unrelated", unrelated)):
        before = generation.score(network, variables, x, y).log_probs.sum(-1)
        after = generation.score(network, ablated, x, y).log_probs.sum(-1)
        lengths = jnp.maximum(losses.answer_lengths(jnp.asarray(y)), 1)
        out[f"{name}_drop"] = float(jnp.mean((before - after) / lengths))
    return out


def concept_vectors(
    network: Network,
    original: Variables,
    unlearned: Variables,
    locations: Sequence[tuple[int, int]],
    concept_ids,
) -> dict[str, np.ndarray]:
    """How far unlearning moved the concept's parametric traces.

    Args:
      network: the transformer.
      original, unlearned: the models before and after unlearning.
      locations: ``(layer, unit)`` value vectors (:func:`locate_concept_vectors` on the
        original).
      concept_ids: the concept's token ids.

    Returns:
      ``{"cosine": [m], "l2": [m], "projection_change": [m]}``: per vector, the cosine between
      the original and unlearned vector, their L2 distance, and the change of its concept score
      (:func:`value_vector_scores`, unlearned minus original; negative = the vector promotes the
      concept less).

    References:
      Hong et al. 2024, "Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces"
      (ConceptVectors; yihuaihong/ConceptVectors ``evaluate_util.py``).
    """
    a_scores = value_vector_scores(network, original, concept_ids)
    b_scores = value_vector_scores(network, unlearned, concept_ids)
    cos, l2, change = [], [], []
    for layer, unit in locations:
        va = original["params"]["layers"][str(layer)]["mlp"]["down_proj"]["kernel"][unit]
        vb = unlearned["params"]["layers"][str(layer)]["mlp"]["down_proj"]["kernel"][unit]
        denom = jnp.linalg.norm(va) * jnp.linalg.norm(vb)
        cos.append(float(jnp.minimum(jnp.dot(va, vb) / jnp.maximum(denom, 1e-12), 1.0)))
        l2.append(float(jnp.linalg.norm(va - vb)))
        change.append(float(b_scores[layer, unit] - a_scores[layer, unit]))
    return {
        "cosine": np.asarray(cos),
        "l2": np.asarray(l2),
        "projection_change": np.asarray(change),
    }
