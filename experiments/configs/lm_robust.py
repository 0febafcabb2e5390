r"""Does the language model truly forget? Every LM rule x every robustness audit (issue 12).

A small Llama-architecture transformer learns a `fictitious_authors` corpus in five forms (QA,
cloze, multiple choice, true/false, narrative), its knowledge graph (publishers, co-authors,
contracts) and its owners' watermarked QA; the retain model learns the same without the forget10
authors. Every rule the registry marks `task="language_model"` (plus gradient ascent, gradient
difference and fine-tuning, the classic baselines) unlearns forget10 from the target, seeing the
QA form only, in `seeds` vmapped runs; each run then goes through forms, structure, relearning,
in-context, latent probes, concept vectors, GCG, WaterDrum and retain similarity. Run:

    python -m experiments.main --config=experiments/configs/lm_robust.py --workdir=/tmp/ju_lmr

`--config=experiments/configs/lm_robust.py:tiny` is the seconds-long version the tests run
(`d_model` 16, 1 layer, three rules, few steps, none of the wrappers and analyses).

Besides the rules: ECO prompts (an inference-time guard: audited as a row, `n/a` under the
audits that read the weights), UnTrac (data attribution by unlearning, ranked against
leave-dataset-out retraining) and a synthetic forget set sampled from the target
(`jaxunlearn.scenarios.lm_robust.methods`).

Rule settings: the LM scenario's (`lm_fictitious.py`: Adam at 5e-4, batches of 16, one epoch of
the retain set for rules that read it); ROCR edits one layer in one step from the whole forget
set.
"""

import ml_collections

VARIANTS = ("", "tiny")
_ADAM = {"name": "adam"}


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the lm_robust config; valid: 'tiny'")
    c = ml_collections.ConfigDict()
    c.track = "lm_robust"  # experiments.main runs jaxunlearn.scenarios.lm_robust for this config
    c.dataset = "fictitious_authors"
    # 40 training authors x 5 facts (forget10 = 4 authors, 20 facts) + 20 utility facts; with
    # the five forms and the graph about 1,260 training rows.
    c.data_kwargs = {
        "num_authors": 40,
        "qa_per_author": 5,
        "num_utility": 20,
        "seed": 0,
        "vocab_size": 512,
    }
    c.variants = {
        "train_forms": ("qa", "cloze", "multiple_choice", "true_false", "narrative"),
        "unlearn_form": "qa",
        "num_options": 4,
        "co_authors": 1,
        "contracts": 1,
        "num_owners": 10,  # the last owner holds exactly the forget10 authors
        "context_shots": 2,
    }
    c.model = "transformer"
    c.model_kwargs = {"d_model": 64, "num_layers": 2, "num_heads": 4}
    c.root_seed = 0
    c.seeds = 2  # unlearning runs per rule (one vmapped ensemble): the error bars
    c.data_parallel = True
    c.distributed = False
    c.train = {"epochs": 50, "batch_size": 32, "learning_rate": 3e-3, "optimizer": _ADAM}
    # Every registered LM rule, plus these task="any" rules; minus exclude_rules.
    c.rule_tasks = ("language_model",)
    c.extra_rules = ("gradient_ascent", "grad_diff", "finetune")
    c.exclude_rules = ()
    # Every rule's entry, unless `rules` overrides it (learning_rate only if the rule takes it).
    c.rule_defaults = {
        "epochs": 1,
        "forget_batch_size": 16,
        "retain_batch_size": 16,
        "hparams": {"learning_rate": 5e-4},
    }
    c.rules = {
        # A rule reading only the forget set: epochs are passes over its 48 rows.
        "gradient_ascent": {"epochs": 5, "hparams": {"optimizer": _ADAM}},
        "ce_u": {"epochs": 5},
        "grad_diff": {"hparams": {"optimizer": _ADAM}},
        "finetune": {"hparams": {"optimizer": _ADAM}},
        # One closed-form edit from the whole forget set (48 rows) and a retain batch.
        "rocr": {"forget_batch_size": 48, "retain_batch_size": 64, "hparams": {"layer": 0}},
        # ConceptVectors' needle: zero the 4 value vectors that carry the forget set's concept
        # tokens (found from the whole forget set and a retain batch), one edit.
        "concept_ablation": {"forget_batch_size": 48, "retain_batch_size": 64},
    }
    c.audits = ()  # () = every audit
    c.audit = {
        "batch_size": 64,
        "retain_facts": 60,
        "relearn_steps": 8,
        "relearn_learning_rate": 1e-3,
        "relearn_batch_size": 8,
        "probe_ridge": 1.0,
        "concept_top": 2,
        "gcg_questions": 3,
        "gcg_budget": 16,
        "gcg_suffix_length": 4,
        "gcg_top_k": 16,
        "gcg_candidates": 32,
        "max_new_tokens": 24,
    }
    # Extension points (jaxunlearn.scenarios.lm_robust.extensions; the methods in
    # jaxunlearn.scenarios.lm_robust.methods): inference wrappers audited as rows (ECO prompts:
    # n/a under concept vectors and GCG, which read the weights), and analyses run after the
    # rules (UnTrac's attribution vs retraining; a forget set sampled from the target vs the
    # true one). `methods[name]` overrides a method's defaults (methods.DEFAULTS).
    c.wrappers = ("eco",)
    c.analyses = ("untrac", "synthetic_forget_set")
    c.methods = {
        "eco": {"threshold": 0.5, "sigma": 0.1, "learning_rate": 1.0, "steps": 10},
        # 5 datasets of 8 authors' QA (40 rows); 6 retrainings (all, and without each) of
        # 300 Adam steps at batch 16 (24 epochs of the 200 rows), vmapped.
        "untrac": {"train_steps": 300, "train_learning_rate": 3e-3, "unlearn_steps": 5},
        "synthetic_forget_set": {"samples": 8, "rule": "npo", "steps": 20},
    }
    if arg == "tiny":
        c.data_kwargs = {
            "num_authors": 20,
            "qa_per_author": 2,
            "num_utility": 4,
            "seed": 0,
            "vocab_size": 512,  # fewer, longer tokens than 300: rows of 80 tokens instead of 120
        }
        c.variants = {
            **c.variants.to_dict(),
            "train_forms": ("qa", "cloze", "multiple_choice"),
            "context_shots": 1,
        }
        c.model_kwargs = {"d_model": 16, "num_layers": 1, "num_heads": 2}
        c.data_parallel = False  # forget batches of 4 do not split over a mesh of 8 devices
        c.seeds = 2
        c.train = {"epochs": 4, "batch_size": 16, "learning_rate": 5e-3, "optimizer": _ADAM}
        c.rule_tasks = ()
        c.extra_rules = ("gradient_ascent", "npo", "rocr")
        c.rule_defaults = {
            **c.rule_defaults.to_dict(),
            "forget_batch_size": 4,
            "retain_batch_size": 8,
        }
        c.rules = {
            "gradient_ascent": {"epochs": 1, "hparams": {"optimizer": _ADAM}},
            "rocr": {"forget_batch_size": 8, "retain_batch_size": 16, "hparams": {"layer": 0}},
        }
        c.audit = {
            **c.audit.to_dict(),
            "retain_facts": 12,
            "relearn_steps": 2,
            "gcg_questions": 1,
            "gcg_budget": 2,
            "gcg_suffix_length": 2,
            "gcg_top_k": 4,
            "gcg_candidates": 4,
            "max_new_tokens": 12,
        }
        # The methods are tested on their own (tests/scenarios/test_lm_robust_methods.py).
        c.wrappers = ()
        c.analyses = ()
        c.methods = {}
    return c
