"""Robust LM-unlearning audits: hand-computed cases and tiny-transformer runs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import audit, models
from jaxunlearn.audit import lm_robust as lr
from jaxunlearn.core.losses import IGNORE_INDEX as IGN
from jaxunlearn.data import fictitious_authors as fa
from jaxunlearn.data import fictitious_variants as fv

V, T = 40, 16


@functools.cache
def _net(vocab=V, max_len=T, seed=0, num_layers=1):
    net = models.make_network(
        "transformer",
        vocab_size=vocab,
        max_len=max_len,
        d_model=16,
        num_layers=num_layers,
        num_heads=2,
    )
    return net, net.init(jax.random.key(seed))


@functools.cache
def _apply(net):
    return jax.jit(net.apply)


def test_public_names():
    for name in (
        "form_consistency",
        "waterdrum",
        "latent_probe",
        "retain_similarity",
        "in_context_recovery",
        "relearn_lm",
        "adversarial_prompt",
        "concept_vectors",
    ):
        assert getattr(audit, name) is getattr(lr, name)


# ---------------------------------------------------------------------------- pure helpers


def test_key_fact_correct_hand_case():
    labels = np.array([[IGN, 5, 6, 7], [IGN, 5, 6, 7], [IGN, IGN, IGN, IGN]])
    argmax = np.array([[9, 5, 0, 7], [9, 5, 6, 0], [1, 1, 1, 1]])
    key = np.array([[0, 1, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], bool)
    assert lr.key_fact_correct(argmax, labels, key).tolist() == [True, True, False]
    assert lr.key_fact_correct(argmax, labels).tolist() == [False, False, False]


def test_form_consistency_hand_case():
    forget = {
        "qa": [0, 0, 0, 0],
        "cloze": [1, 1, 0, 0],
        "multiple_choice": [1, 1, 1, 1],
        "true_false": [1, 0, 1, 0],
    }
    retain = {"qa": [1, 1], "cloze": [1, 0]}
    out = audit.form_consistency(forget, retain)
    assert out["forget/qa"] == 0.0 and out["forget/multiple_choice"] == 1.0
    assert out["forget/form_gap"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert out["forget/form_spread"] == 1.0
    assert out["retain/form_gap"] == -0.5 and out["retain/form_spread"] == 0.5
    with pytest.raises(ValueError, match="not rendered"):
        audit.form_consistency({"qa": [1], "sonnet": [0]})
    with pytest.raises(ValueError, match="trained_form"):
        audit.form_consistency({"cloze": [1], "narrative": [0]})


def test_waterdrum_hand_case():
    keys = [bytes([i] * 16) for i in range(2)]
    text = "She writes poems. Her books explore grief. He lives in Tarsel. She loves chess."
    marked = [fv.apply_watermark(text, k) for k in keys]
    scores = [fv.watermark_score(marked[i], keys[i]).z for i in range(2)]
    plain = [fv.watermark_score(text, keys[i]).z for i in range(2)]
    out = audit.waterdrum([[marked[0]], [marked[1]]], keys, retrained_texts=[[text], [text]])
    np.testing.assert_allclose(out.z, scores)
    np.testing.assert_allclose(out.z_retrained, plain)
    assert out.gap == pytest.approx(np.mean(np.abs(np.asarray(scores) - plain)))
    expected = np.mean((np.asarray(scores) > 2.0) == (np.asarray(plain) > 2.0))
    assert out.agreement == pytest.approx(expected)
    assert np.all(out.z > 2.0)  # 5 slots, all keyed: z = 2.45 or more
    alone = audit.waterdrum([[marked[0]]], keys[:1])
    assert alone.z_retrained is None and np.isnan(alone.gap)
    with pytest.raises(ValueError, match="16 bytes"):
        audit.waterdrum([[text]], [b"abc"])
    with pytest.raises(ValueError, match="one entry per owner"):
        audit.waterdrum([[text]], keys)


def test_probe_choice_accuracy_hand_cases():
    # Option features: dimension 0 is 1 on the true option, dimension 1 is noise.
    rng = np.random.default_rng(0)
    correct = rng.integers(0, 3, 20)
    feats = rng.normal(size=(20, 3, 2)).astype(np.float32) * [0.0, 1.0]
    feats[np.arange(20), correct, 0] = 1.0
    acc = lr.probe_choice_accuracy(feats[:10], correct[:10], feats[10:], correct[10:], 1e-3)
    assert float(acc) == 1.0
    # Identical options: every score ties, the first option is chosen.
    same = np.ones((20, 3, 2), np.float32)
    acc = lr.probe_choice_accuracy(same[:10], correct[:10], same[10:], correct[10:], 1.0)
    assert float(acc) == pytest.approx(np.mean(correct[10:] == 0))


def test_answer_divergence_hand_case():
    p = np.log(np.array([0.5, 0.5]))
    q = np.log(np.array([0.25, 0.75]))
    logits = np.stack([p, p])[None]  # [1, 2, 2]
    reference = np.stack([q, p])[None]
    labels = np.array([[1, IGN]])  # only the first position is an answer token
    kl = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    m = np.array([0.375, 0.625])
    js = 0.5 * np.sum([0.5, 0.5] * np.log(np.array([0.5, 0.5]) / m))
    js += 0.5 * np.sum([0.25, 0.75] * np.log(np.array([0.25, 0.75]) / m))
    np.testing.assert_allclose(
        lr.answer_divergence(logits, reference, labels, kind="kl"), [kl], 1e-5
    )
    np.testing.assert_allclose(lr.answer_divergence(logits, reference, labels), [js], 1e-5)
    with pytest.raises(ValueError, match="kind"):
        lr.answer_divergence(logits, reference, labels, kind="tv")


def test_few_shot_question_and_shots():
    text = lr.few_shot_question("Q3?", [("Q1?", "A1."), ("Q2?", "A2.")])
    assert text == "Q1?\nAnswer: A1.\nQuestion: Q2?\nAnswer: A2.\nQuestion: Q3?"
    prompt = f"Question: {text}\nAnswer:"
    assert prompt.startswith("Question: Q1?\nAnswer: A1.\nQuestion: Q2?")
    shots = lr.draw_shots(5, 5, 3, exclude=np.arange(5), seed=0)
    assert shots.shape == (5, 3)
    assert all(i not in row and len(set(row)) == 3 for i, row in enumerate(shots))
    with pytest.raises(ValueError, match="shots"):
        lr.draw_shots(2, 3, 3, exclude=[0, 1])


# --------------------------------------------------------------------------- tiny models


def test_forward_with_internals_matches_apply():
    net, variables = _net()
    tokens = jax.random.randint(jax.random.key(1), (3, T), 1, V).at[0, 10:].set(0)
    params = variables["params"]
    embeds = jnp.take(params["embed_tokens"]["embedding"], tokens, axis=0)
    forward = jax.jit(lr._forward, static_argnums=0)
    logits, hidden, keys = forward(net.spec, params, embeds, tokens != 0)
    out = _apply(net)(variables, tokens)
    np.testing.assert_allclose(logits, out.logits, atol=1e-5)
    np.testing.assert_allclose(hidden[0], out.hidden[0], atol=1e-5)
    np.testing.assert_allclose(lr.mlp_keys(net, variables, tokens)[0], keys[0], atol=1e-6)
    last = lr.last_token_hidden(net, variables, tokens)
    np.testing.assert_allclose(last[0, 0], out.hidden[0][0, 9], atol=1e-6)
    np.testing.assert_allclose(last[0, 1], out.hidden[0][1, T - 1], atol=1e-6)


def test_latent_probe_layers_and_errors():
    net, variables = _net()
    options = jax.random.randint(jax.random.key(2), (8, 3, T), 1, V)
    correct = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    acc = audit.latent_probe(net, variables, options, correct)
    assert acc.shape == (1,) and 0.0 <= acc[0] <= 1.0
    with pytest.raises(ValueError, match="probe layers"):
        audit.latent_probe(net, variables, options, correct, layers=[1])
    with pytest.raises(ValueError, match="train_fraction"):
        audit.latent_probe(net, variables, options, correct, train_fraction=1.0)


def test_retain_similarity_is_zero_for_the_retain_model():
    net, variables = _net()
    _, other = _net(seed=1)
    x = jax.random.randint(jax.random.key(3), (4, T), 1, V)
    y = jnp.where(jnp.arange(T) >= 8, x, IGN)
    same = audit.retain_similarity(net, variables, variables, {"forget": (x, y)})
    assert same["forget"] == pytest.approx(0.0, abs=1e-6)
    diff = audit.retain_similarity(net, variables, other, {"forget": (x, y)}, kind="kl")
    assert diff["forget"] > 0


def test_relearn_lm_recovers_duplicated_facts():
    net, variables = _net()
    row = jnp.arange(1, T + 1) % (V - 1) + 1
    forget_x = jnp.tile(row, (4, 1))  # four copies of one fact: half A teaches half B
    forget_y = jnp.where(jnp.arange(T) >= 8, jnp.roll(forget_x, -1, 1), IGN).at[:, -1].set(IGN)
    other = jax.random.randint(jax.random.key(4), (2, T), 1, V)
    other_y = jnp.where(jnp.arange(T) >= 8, jnp.roll(other, -1, 1), IGN).at[:, -1].set(IGN)
    out = audit.relearn_lm(
        net,
        variables,
        (forget_x, forget_y),
        utility=(other, other_y),
        max_steps=12,
        learning_rate=3e-2,
        batch_size=2,
        key=jax.random.key(0),
    )
    assert set(out) == {"forget_half", "utility"}
    half = out["forget_half"]
    assert half.curve.shape == (13,) and half.curve[0] < 0.5
    assert half.curve[-1] == 1.0 and int(half.steps) <= 12
    assert out["utility"].curve[0] == half.curve[0]  # same model, same eval half
    assert out["utility"].curve[-1] < 1.0
    with pytest.raises(ValueError, match="at least 2"):
        audit.relearn_lm(net, variables, (forget_x[:1], forget_y[:1]), key=jax.random.key(0))


def test_adversarial_prompt_search():
    net, variables = _net()
    prefix, postfix, target = np.array([1, 5, 6]), np.array([7]), np.array([11, 12])
    out = audit.adversarial_prompt(
        net,
        variables,
        prefix,
        postfix,
        target,
        budget=4,
        key=jax.random.key(0),
        suffix_length=3,
        top_k=8,
        num_candidates=16,
        forbidden_ids=(1, 2),
    )
    assert out.suffix.shape == (3,) and out.losses.shape == (4,)
    assert np.all(np.diff(np.asarray(out.losses)) <= 0)  # best-so-far never rises
    assert not np.isin(np.asarray(out.suffix), [0, 1, 2]).any()
    tokens = np.concatenate([prefix, np.asarray(out.suffix), postfix, target])
    np.testing.assert_array_equal(out.tokens, tokens)
    logp = jax.nn.log_softmax(_apply(net)(variables, tokens[None]).logits[0])
    nll = -(logp[6, 11] + logp[7, 12]) / 2
    assert float(out.loss) == pytest.approx(float(nll), abs=1e-4)
    start = np.concatenate([prefix, np.full(3, 3), postfix, target])
    logp0 = jax.nn.log_softmax(_apply(net)(variables, start[None]).logits[0])
    assert float(out.loss) <= float(-(logp0[6, 11] + logp0[7, 12]) / 2) + 1e-6
    with pytest.raises(ValueError, match="budget"):
        audit.adversarial_prompt(net, variables, prefix, postfix, target, budget=0, key=None)
    with pytest.raises(ValueError, match="max_len"):
        audit.adversarial_prompt(
            net, variables, prefix, postfix, target, budget=1, key=None, suffix_length=T
        )


def test_concept_vectors_hand_built():
    net, variables = _net()
    params = jax.tree.map(lambda a: a, variables["params"])
    d = net.spec.d_model
    concept = 17
    # Value vector (layer 0, unit 3) points along e_0; the output embedding of token 17 reads e_0.
    head = params["lm_head"]["kernel"].at[:, :].set(0.0).at[0, concept].set(5.0)
    params["lm_head"] = {"kernel": head}
    layer = params["layers"]["0"]["mlp"]
    layer["down_proj"] = {"kernel": layer["down_proj"]["kernel"].at[3].set(jnp.eye(d)[0] * 2.0)}
    planted = {**variables, "params": params}
    located = audit.locate_concept_vectors(net, planted, [concept], top=1)
    assert located == ((0, 3),)
    ablated = lr.ablate_vectors(planted, located)
    assert (
        float(jnp.abs(ablated["params"]["layers"]["0"]["mlp"]["down_proj"]["kernel"][3]).max()) == 0
    )
    same = audit.concept_vectors(net, planted, planted, located, [concept])
    np.testing.assert_allclose(same["cosine"], [1.0], atol=1e-6)
    np.testing.assert_allclose(same["l2"], [0.0])
    np.testing.assert_allclose(same["projection_change"], [0.0])
    moved = audit.concept_vectors(net, planted, ablated, located, [concept])
    assert moved["l2"][0] == pytest.approx(2.0) and moved["projection_change"][0] < 0
    x = jnp.full((2, T), 5).at[:, 0].set(1)
    y = jnp.where(jnp.arange(T) == 4, concept, IGN) * jnp.ones((2, 1), jnp.int32)
    effect = lr.ablation_effect(net, planted, located, (x, y), (x, jnp.where(y == IGN, IGN, 9)))
    assert set(effect) == {"concept_drop", "unrelated_drop"}
    with pytest.raises(ValueError, match="concept_ids"):
        audit.locate_concept_vectors(net, planted, [V])


# ------------------------------------------------------------------------- on the corpus


@pytest.fixture(scope="module")
def corpus_model():
    corpus = fa.FictitiousAuthors(num_authors=10, qa_per_author=4, num_utility=8, seed=0)
    tok = corpus.train_tokenizer(vocab_size=600)
    net, variables = _net(vocab=tok.vocab_size, max_len=128)
    return corpus, fv.FormsCorpus(corpus), tok, net, variables


def test_forms_and_in_context_on_the_corpus(corpus_model):
    corpus, forms, tok, net, variables = corpus_model
    records = corpus.split("forget10").records
    used = ("qa", "cloze", "multiple_choice")  # one open and one choice shape to compile
    correct = {f: lr.form_correct(net, variables, forms.encode(tok, records, f, 128)) for f in used}
    assert all(c.shape == (len(records),) and c.dtype == bool for c in correct.values())
    table = audit.form_consistency(correct)
    assert set(table) == {f"forget/{f}" for f in used} | {
        "forget/form_gap",
        "forget/form_spread",
    }
    retain = corpus.split("retain90").records
    out = audit.in_context_recovery(
        net,
        variables,
        tok,
        [r.question for r in records],
        [r.answer for r in records],
        [r.key_fact for r in records],
        pool=([r.question for r in retain], [r.answer for r in retain]),
        k=2,
    )
    assert set(out) == {"zero_shot", "k_shot", "self"}
    assert all(v.shape == (len(records),) for v in out.values())
    with pytest.raises(ValueError, match="`k` must be an integer >= 1; got 0"):
        audit.in_context_recovery(
            net, variables, tok, ["q"], ["a"], ["a"], pool=(["q"], ["a"]), k=0
        )
    prefix, postfix, target = lr.gcg_segments(tok, records[0].question, records[0].answer)
    assert tok.decode(np.concatenate([prefix, postfix, target])) == (
        f"Question: {records[0].question}\nAnswer: {records[0].answer}"
    )
