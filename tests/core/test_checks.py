import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default as default_config
from experiments.configs import lm_fictitious as lm_config
from experiments.configs import unlearnable as unlearnable_config
from jaxunlearn import ensemble, models, rules, scenarios
from jaxunlearn.audit import (
    attribution,
    competition,
    forget_sets,
    lm_robust,
    relearn,
    representation,
)
from jaxunlearn.audit.klom import klom
from jaxunlearn.core import combinators, lm_losses, lora
from jaxunlearn.core.checks import check_count, concrete, is_count, keyword_names
from jaxunlearn.data import anti_samples, augment, synthetic_forget, views
from jaxunlearn.models import generation, transformer
from jaxunlearn.rules import passes
from jaxunlearn.rules.unsir import reference_retain_subsample
from jaxunlearn.scenarios.artefacts import role_keys
from jaxunlearn.scenarios.lm import lm_plan
from jaxunlearn.scenarios.lm.benchmark import passage_windows
from jaxunlearn.scenarios.lm_robust.audits import resolve_settings
from jaxunlearn.scenarios.lm_robust.benchmark import check_variants
from jaxunlearn.train import fit
from jaxunlearn.train.loop import check_batch_sizes
from jaxunlearn.unlearnable import (
    bayes_error,
    clusters,
    error_minimizing,
    evaluate,
    experiment,
    text_conditioned,
    ungeneralizable,
)


@pytest.mark.parametrize(
    "value, minimum, expected",
    [(3, 1, True), (np.int64(3), 1, True), (0, 0, True), (0, 1, False), (-2, -3, True),
     (1, 2, False), (2.0, 1, False), (True, 0, False), (False, 0, False), ("3", 1, False),
     (None, 0, False), (np.asarray(3), 1, False), (jnp.asarray(3), 1, False)],
)  # fmt: skip
def test_is_count(value, minimum, expected):
    assert is_count(value, minimum) is expected


def test_check_count_returns_a_python_int_and_names_the_argument():
    out = check_count(np.int32(7), "steps", 1)
    assert out == 7 and type(out) is int
    assert check_count(0, "eval_every", 0) == 0
    with pytest.raises(ValueError, match=r"^`steps` must be an integer >= 1; got 0$"):
        check_count(0, "steps", 1)
    with pytest.raises(ValueError, match=r"^`num_views` must be an integer >= 2; got 2\.0$"):
        check_count(2.0, "num_views", 2)
    with pytest.raises(ValueError, match=r"^`count` must be an integer >= 1; got True$"):
        check_count(True, "count", 1)


def test_concrete():
    assert concrete(1.0, {"a": jnp.ones(2)})
    assert jax.jit(lambda x: jnp.asarray(concrete(x)))(1.0).item() is False


def _transformer():
    return models.make_network(
        "transformer", vocab_size=16, max_len=8, d_model=16, num_layers=1, num_heads=2
    )


_PROMPTS = np.ones((1, 2), np.int32)
_FEATURES, _LABELS = np.eye(4, 3), np.arange(4) % 2
_IMAGE = jnp.zeros((8, 8, 1))
_IMAGES, _DIGITS = np.zeros((10, 8, 8, 1), np.float32), np.arange(10)


def _mlp():
    return models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(4,))


def _config(module, key: str, value) -> dict:
    """``module``'s tiny config as a plain dict with the dotted ``key`` set to ``value``."""
    cfg = module.get_config("tiny").to_dict()
    node, (*path, last) = cfg, key.split(".")
    for part in path:
        node = node[part]
    node[last] = value
    return cfg


def _generator(fn, **settings):
    """A call of the unlearnable generator ``fn`` on ten blank digits; it fails at its checks."""
    return fn(_mlp(), _IMAGES, _DIGITS, key=None, surrogate=None, **settings)


def _relearn(**settings):
    return relearn.relearn_steps(
        None, None, *(_IMAGES, _DIGITS) * 2, target_accuracy=1.0, learning_rate=0.1, key=None,
        **{"max_steps": 2, "batch_size": 2, **settings},
    )  # fmt: skip


# Every former private copy of the count check now goes through check_count: a float count (even
# a whole one) and a bool are refused with the argument's name. Each call fails at its checks,
# before any compute.
SITES = {
    "attribution.author_groups": (
        lambda n: attribution.author_groups(np.zeros(4, int), np.arange(4), n),
        "`num_groups` must be an integer >= 2",
    ),
    "passes.check_num_steps": (
        lambda n: passes.check_num_steps("scrub", "scrub_num_steps", n, 3, 2),
        "^scrub: `num_steps` must be an integer >= 1",
    ),
    "generation.generate": (
        lambda n: generation.generate(_transformer(), None, _PROMPTS, key=None, max_new_tokens=n),
        "`max_new_tokens` must be an integer >= 1",
    ),
    "generation.score": (
        lambda n: generation.score(_transformer(), None, _PROMPTS, _PROMPTS, batch_size=n),
        "`batch_size` must be an integer >= 1",
    ),
    "transformer.make_config": (
        lambda n: transformer.make_config(vocab_size=16, max_len=8, num_layers=n),
        "`num_layers` must be an integer >= 1",
    ),
    "transformer.init_cache": (
        lambda n: transformer.init_cache(_transformer().spec, n),
        "`batch_size` must be an integer >= 1",
    ),
    "models.check_settings": (
        lambda n: models.check_settings("mlp", input_shape=(8,), num_outputs=n),
        "`num_outputs` must be a positive integer",
    ),
    "models.check_settings (widths)": (
        lambda n: models.check_settings("mlp", input_shape=(8,), num_outputs=2, hidden=(4, n)),
        "option `hidden` must be positive integer width",
    ),
    "ensemble.replicate": (
        lambda n: ensemble.replicate({"params": {"w": jnp.zeros(1)}}, n),
        "`count` must be an integer >= 2",
    ),
    "synthetic_forget.synthetic_forget_set": (
        lambda n: synthetic_forget.synthetic_forget_set(None, None, None, "Ada", key=None, ngram=n),
        "`ngram` must be an integer >= 1",
    ),
    "forget_sets.compare_forget_sets": (
        lambda n: forget_sets.compare_forget_sets(
            None,
            None,
            {"t": None},
            retain=None,
            eval_forget=None,
            eval_retain=None,
            steps=n,
            batch_size=8,
            key=None,
        ),
        "`steps` must be an integer >= 1",
    ),  # fmt: skip
    "lm_robust.relearn_lm": (
        lambda n: lm_robust.relearn_lm(
            _transformer(),
            None,
            (_PROMPTS.repeat(2, 0), _PROMPTS.repeat(2, 0)),
            batch_size=n,
            key=None,
        ),
        "`batch_size` must be an integer >= 1",
    ),  # fmt: skip
    "lm_robust.adversarial_prompt": (
        lambda n: lm_robust.adversarial_prompt(
            _transformer(), None, [1], [2], [3], budget=4, key=None, top_k=n
        ),
        "`top_k` must be an integer >= 1",
    ),
    "views.select_policy": (
        lambda n: views.select_policy(["digits"], jnp.zeros((4, 8, 8, 1)), key=None, steps=n),
        "`steps` must be an integer >= 1",
    ),
    "klom.klom": (
        lambda n: klom(np.zeros((2, 1)), np.zeros((2, 1)), bins=n),
        "`bins` must be an integer >= 1",
    ),
    "representation.linear_cka": (
        lambda n: representation.linear_cka(_FEATURES, _FEATURES, batch_size=n),
        "`batch_size` must be an integer >= 2",
    ),
    "representation.weighted_knn_accuracy (k)": (
        lambda n: representation.weighted_knn_accuracy(_FEATURES, _LABELS, _FEATURES, _LABELS, k=n),
        "`k` must be an integer >= 1",
    ),
    "representation.weighted_knn_accuracy (chunk_size)": (
        lambda n: representation.weighted_knn_accuracy(
            _FEATURES, _LABELS, _FEATURES, _LABELS, chunk_size=n
        ),
        "`chunk_size` must be an integer >= 1",
    ),
    "representation.linear_probe_accuracy (epochs)": (
        lambda n: representation.linear_probe_accuracy(
            _FEATURES, _LABELS, _FEATURES, _LABELS, epochs=n
        ),
        "`epochs` must be an integer >= 1",
    ),
    "representation.linear_probe_accuracy (batch_size)": (
        lambda n: representation.linear_probe_accuracy(
            _FEATURES, _LABELS, _FEATURES, _LABELS, batch_size=n
        ),
        "`batch_size` must be an integer >= 1",
    ),
    "views.cutout": (
        lambda n: views.cutout(None, _IMAGE, size=n),
        "`size` must be an integer >= 1",
    ),
    "views.make_views": (
        lambda n: views.make_views("digits", None, _IMAGE[None], n),
        "`num_views` must be an integer >= 1",
    ),
    "combinators.saliency_masked": (
        lambda n: combinators.saliency_masked(None, score=None, fraction=0.5, score_steps=n),
        "`score_steps` must be an integer >= 1",
    ),
    "salun (mask_steps)": (
        lambda n: rules.salun(None, num_classes=2, mask_steps=n),
        "^salun: `mask_steps` must be an integer >= 1",
    ),
    "weight_attribution_mask (mask_steps)": (
        lambda n: rules.weight_attribution_mask(None, mask_steps=n),
        "^weight_attribution_mask: `mask_steps` must be an integer >= 1",
    ),
    "rocr": (
        lambda n: rules.rocr(None, num_classes=16, max_positions=n),
        r"^rocr: `max_positions` must be an integer >= 1; got .* \(concept positions",
    ),
    "concept_ablation": (
        lambda n: rules.concept_ablation(None, num_classes=16, top=n),
        r"^concept_ablation: `top` must be an integer >= 1; got .* \(value vectors ablated\)$",
    ),
    "lora.init_adapters": (
        lambda n: lora.init_adapters({"w": jnp.zeros((2, 2))}, "w", n, None),
        "^lora: `rank` must be an integer >= 1",
    ),
    "lora.lora": (
        lambda n: lora.lora(rules.gradient_ascent(None), rank=n),
        "^lora: `rank` must be an integer >= 1",
    ),
    # Third pass: the unlearnable generators and experiment, ensembles, relearning, the plans.
    **{
        f"{fn.__name__} ({name})": (
            lambda n, fn=fn, name=name: _generator(fn, **{name: n}),
            f"`{name}` must be an integer >= {minimum}",
        )
        for fn, name, minimum in [
            (bayes_error.bayes_error_noise, "steps", 1),
            (bayes_error.bayes_error_noise, "batch_size", 2),
            (clusters.unlearnable_clusters, "num_clusters", 1),
            (clusters.unlearnable_clusters, "steps", 1),
            (clusters.unlearnable_clusters, "batch_size", 1),
            (ungeneralizable.ungeneralizable_examples, "steps", 1),
            (ungeneralizable.ungeneralizable_examples, "batch_size", 1),
            (ungeneralizable.ungeneralizable_examples, "authorized_steps", 0),
            (ungeneralizable.ungeneralizable_examples, "rounds", 1),
        ]
    },
    **{
        f"error_minimizing_noise ({name})": (
            lambda n, name=name: error_minimizing.error_minimizing_noise(
                _mlp(), _IMAGES, _DIGITS, key=None, **{name: n}
            ),
            f"`{name}` must be an integer >= {minimum}",
        )
        for name, minimum in [
            ("pgd_steps", 1),
            ("max_rounds", 1),
            ("train_steps", 0),
            ("batch_size", 1),
        ]
    },  # fmt: skip
    **{
        f"text_conditioned_noise ({name})": (
            lambda n, name=name: text_conditioned.text_conditioned_noise(
                _mlp(), _IMAGES, _DIGITS, key=None, **{name: n}
            ),
            f"`{name}` must be an integer >= 1",
        )
        for name in ("steps", "batch_size")
    },
    "unlearnable.early_stopping": (
        lambda n: evaluate.early_stopping(None, None, _IMAGES, _DIGITS, every=n),
        "`every` must be an integer >= 1",
    ),
    "unlearnable.check_config (seeds)": (
        lambda n: experiment.check_config(_config(unlearnable_config, "seeds", n)),
        "`seeds` must be an integer >= 1",
    ),
    "ensemble.seed_keys": (lambda n: ensemble.seed_keys(n), "`num_models` must be an integer >= 1"),
    "ensemble.Predictor": (
        lambda n: ensemble.Predictor(_mlp(), batch_size=n),
        "`batch_size` must be an integer >= 1",
    ),
    "relearn.relearn_steps (max_steps)": (
        lambda n: _relearn(max_steps=n),
        "`max_steps` must be an integer >= 1",
    ),
    "relearn.relearn_steps (batch_size)": (
        lambda n: _relearn(batch_size=n),
        "`batch_size` must be an integer >= 1",
    ),
    "artefacts.role_keys": (lambda n: role_keys(0, "oracle", n), "`count` must be an integer >= 1"),
    "lm_robust.resolve_settings": (
        lambda n: resolve_settings({"gcg_budget": n}),
        "`audit.gcg_budget` must be an integer >= 1",
    ),
    "lm_robust.check_variants": (
        lambda n: check_variants({"context_shots": n}),
        "`variants.context_shots` must be an integer >= 1",
    ),
    **{
        f"scenarios.plan ({key})": (
            lambda n, key=key: scenarios.plan(_config(default_config, key, n)),
            f"`{key}` must be an integer >= 1",
        )
        for key in ("seeds", "train.epochs")
    },
    **{
        f"lm_plan ({key})": (
            lambda n, key=key: lm_plan(_config(lm_config, key, n)),
            f"`{key}` must be an integer >= 1",
        )
        for key in (
            "train.epochs",
            "eval.batch_size",
            "eval.leak_questions",
            "eval.leak_samples",
            "eval.sample_rows",
            "seeds",
            "retain_seeds",
            "audit_points",
            "sustainability_requests",
            "relearn_steps",
        )
    },  # fmt: skip
    # Rules (messages keep the rule's name) and the other private copies.
    **{
        f"{rule} ({name})": (
            lambda n, rule=rule, name=name, given=given: getattr(rules, rule)(
                None, **{**given, name: n}
            ),
            f"^{owner}: `{name}` must be an integer >= {minimum}",
        )
        for rule, owner, name, minimum, given in [
            ("l1_sparse", "l1_sparse", "num_steps", 1, {"steps_per_epoch": 2}),
            ("l1_sparse", "l1_sparse", "steps_per_epoch", 1, {"num_steps": 2}),
            ("adapt_then_unlearn", "adapt_then_unlearn", "num_adapted", 1, {"num_steps": 4}),
            ("adapt_then_unlearn", "adapt_then_unlearn", "num_steps", 1, {}),
            (
                "influence_unlearning",
                "influence_unlearning",
                "num_samples",
                1,
                {"forget_fraction": 0.1},
            ),
            ("unsir", "unsir", "noise_batch_size", 1, {"steps_per_epoch": 2, "input_shape": (2,)}),
            ("unsir", "unsir", "noise_steps", 0, {"steps_per_epoch": 2, "input_shape": (2,)}),
            ("scrub", "scrub", "msteps", 0, {"steps_per_epoch": 2}),
            ("scrub", "scrub", "max_steps_per_epoch", 1, {"steps_per_epoch": 2}),
            ("scrub", "scrub", "steps_per_epoch", 1, {}),
            (
                "scrub",
                "scrub",
                "forget_steps_per_epoch",
                1,
                {"steps_per_epoch": 2, "schedule": "reference"},
            ),
            (
                "random_label",
                "random_label",
                "steps_per_epoch",
                1,
                {"num_classes": 2, "mode": "sequential", "forget_steps_per_epoch": 2},
            ),
            (
                "random_label",
                "random_label",
                "forget_steps_per_epoch",
                1,
                {"num_classes": 2, "mode": "sequential", "steps_per_epoch": 2},
            ),
            ("label_agnostic_forgetting", "label_agnostic_forgetting", "num_steps", 2, {}),
            (
                "label_agnostic_forgetting",
                "label_agnostic_forgetting",
                "latent_dim",
                1,
                {"num_steps": 4},
            ),
            ("boundary_expand", "boundary_expand", "feature_dim", 1, {"num_classes": 2}),
            ("amnesiac", "amnesiac", "num_classes", 2, {}),
            ("ce_u", "ce_u", "ignore_first", 0, {}),
        ]
    },  # fmt: skip
    "unsir.reference_retain_subsample": (
        lambda n: reference_retain_subsample(
            np.zeros(4, int), np.arange(4), num_classes=2, retain_per_class=n
        ),
        "^unsir: `retain_per_class` must be an integer >= 1",
    ),
    "lm_losses.ce_u": (
        lambda n: lm_losses.ce_u(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), int), ignore_first=n),
        "^ce_u: `ignore_first` must be an integer >= 0",
    ),
    "train.fit (num_steps)": (
        lambda n: fit(None, None, None, batch_sizes={"retain": 2}, num_steps=n, key=None),
        "`num_steps` must be an integer >= 0",
    ),
    "train.check_batch_sizes": (
        lambda n: check_batch_sizes({"retain": n}, {"retain": 4}),
        r"`batch_sizes\['retain'\]` must be an integer >= 1",
    ),
    "passes.sequential_num_steps": (
        lambda n: passes.sequential_num_steps(n, 2, 1),
        "`epochs` must be an integer >= 0",
    ),
    "combinators.phases": (
        lambda n: combinators.phases(
            (n, rules.gradient_ascent(None)), (None, rules.gradient_ascent(None))
        ),
        "phases: phase 0 must run a positive int of updates",
    ),
    "competition.forgetting_score": (
        lambda n: competition.forgetting_score(np.zeros(2), num_models=n),
        "`num_models` must be an integer >= 2",
    ),
    "ensemble.train (epochs)": (
        lambda n: ensemble.train(
            None,
            None,
            None,
            None,
            np.arange(4),
            keys=ensemble.seed_keys(2),
            epochs=n,
            batch_size=2,
        ),
        "`epochs` must be an integer >= 0",
    ),  # fmt: skip
    "views.random_shift": (
        lambda n: views.random_shift(None, _IMAGE, max_shift=n),
        "`max_shift` must be an integer >= 0",
    ),
    "augment.random_crop": (
        lambda n: augment.random_crop(jnp.zeros((2, 8, 8, 1)), None, padding=n),
        "`padding` must be an integer >= 0",
    ),
    "anti_samples.anti_samples": (
        lambda n: anti_samples.anti_samples(None, [], seed=n),
        "`seed` must be an integer >= 0",
    ),
    "lm.benchmark.passage_windows": (
        lambda n: passage_windows([5, 6], n, bos_id=1, eos_id=2, pad_id=0),
        r"^`width` must be an integer >= 3; got .* \(BOS, a token, EOS\)$",
    ),
}


@pytest.mark.parametrize("bad", [2.0, True])
@pytest.mark.parametrize("site", sorted(SITES))
def test_every_former_copy_refuses_floats_and_bools(site, bad):
    call, message = SITES[site]
    with pytest.raises(ValueError, match=message):
        call(bad)


def test_keyword_names_lists_what_a_config_may_set():
    def f(a, b=1, *, c=2, d=3):
        pass

    def g(a, **kwargs):
        pass

    assert keyword_names(f) == ["a", "b", "c", "d"]
    assert keyword_names(f, exclude=("a", "d")) == ["b", "c"]
    assert keyword_names(f, keyword_only=True) == ["c", "d"]
    assert keyword_names(g) is None
