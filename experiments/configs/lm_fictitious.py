r"""The language-model track: TOFU-style unlearning on the generated `fictitious_authors` corpus.

A small Llama-architecture transformer is trained on every non-holdout author's QA pairs and the
utility facts until it has memorised them (the *target*); one *retain* model per forget split
never sees that split's authors (the exact-unlearning oracle), and a second retain seed measures
the noise floor of forget quality. Every LM rule then unlearns `forget10` from the target, with
audits every few steps along the way, and the full battery at the end (TOFU: forget quality,
model utility, ROUGE, truth ratio; MUSE: privleak and verbatim memorisation of the forget
authors' passages, which the models also train on; leak@k from sampled answers). Run:

    python -m experiments.main --config=experiments/configs/lm_fictitious.py --workdir=/tmp/ju_lm

`--config=experiments/configs/lm_fictitious.py:tiny` is a seconds-long version used by the tests
and the notebook (few authors, a 1-layer model, few steps, two rules).

Rule hyperparameters: OpenUnlearning's defaults (`../shared/reference/lm_unlearning.md`) where they
carry over; learning rates and epochs are ours, scaled to this small model (Adam, as OU's AdamW).
"""

import ml_collections

VARIANTS = ("", "tiny")

# The sweeps behind the SimNPO, IdkDPO and SatImp defaults (OpenUnlearning's lr 1e-5 for 10 epochs
# is for 7B models; at this config's first 5e-4 for one epoch they barely moved the target). Each
# is one vmapped grid from the default target, scored on half of forget10's authors; the default
# is the highest forget quality that keeps 0.85 of the target's validation utility (0.857), i.e.
# `--utility_floor=0.85` (the sweep's default floor, 0.9, chose points of IdkDPO and SatImp that
# still left the full forget10 run's forget quality at 1e-13 and 1e-19, the target's 1e-21;
# NPO's default keeps 0.79 of the target's utility). E.g.
#
#   python -m experiments.sweep --config=experiments/configs/lm_fictitious.py --workdir=/tmp/ju_lm \
#       --scenario=forget10 --rule=simnpo --param=learning_rate --values=5e-4,1e-3,2e-3,4e-3 \
#       --param2=beta --values2=2.5,4.5
#
# Validation forget quality / model utility (the target's utility: 0.857):
#   simnpo  lr x beta    5e-4: 1.6e-6/0.863 (2.5), 4.9e-7/0.862 (4.5); 1e-3: 3.8e-5/0.85 (both);
#                        2e-3: 3.9e-2/0.811 (2.5, chosen), 2.8e-3/0.820 (4.5);
#                        4e-3: 0.40/0.657 (2.5), 1.2e-2/0.668 (4.5)
#   idk_dpo lr x beta    5e-4..1e-3: < 1e-7 (both betas, utility 0.83-0.85);
#                        2e-3: 3.8e-5/0.816 (0.1), 1.5e-7/0.821 (0.5);
#                        4e-3: 5.8e-4/0.752 (0.1, chosen), 1e-4/0.760; 8e-3: 0.11/0.536,
#                        1.2e-2/0.547;
#                        1.6e-2: 0.97/0.404, 0.72/0.409
#   satimp  lr x beta1   1e-3: 2.6e-9/0.849 (1 and 5: no movement); 3e-3: 2.8e-3/0.734 (1,
#                        chosen), 2.8e-3/0.726 (5);
#                        1e-2: 0.40/0.43 (1), 0.18/0.47 (5); 3e-2: 0.72/0.33 (both)
#                        then 1.5e-3 and 2e-3: 1e-8 to 4e-8/0.81-0.82; 2.5e-3: 5.8e-4/0.753 (1),
#                        1e-4/0.764 (5)
# Cliffs: utility falls off past 2e-3 (SimNPO, SatImp) or 4e-3 (IdkDPO), and no IdkDPO or SatImp
# point reaches a forget quality of 1e-2 above the floor: on a model that has memorised its answers
# (p_t ~ 1) SatImp's weight p^beta1 (1 - p)^beta2 is ~0 until a large step moves p, and IdkDPO's
# preference for "I don't know" removes the answer only with the utility (TOFU's finding too).

# Every LM rule of issue 11 with its config entry (epochs are passes over the forget set for
# rules reading only it, else over the retain set: see `scenarios.plan.rule_schedule`).
_ADAM = {"name": "adam"}


def _rules():
    # Learning rates and epochs: ours, for this model (the target trains with Adam at 3e-3; an
    # epoch of a rule reading the retain set is 62 steps of 16). The tuning run behind them:
    # NPO at 1e-3 peaks in forget quality after 32 steps and over-forgets after 128, gradient
    # ascent at 1e-3 has collapsed the model (utility 0) by step 24.
    fb, rb = 16, 16
    both = {"forget_batch_size": fb, "retain_batch_size": rb}
    lr = {"learning_rate": 5e-4}
    return {
        "gradient_ascent": {
            "epochs": 5,
            "forget_batch_size": fb,
            "hparams": {**lr, "optimizer": _ADAM},
        },
        "grad_diff": {"epochs": 1, **both, "hparams": {**lr, "optimizer": _ADAM}},
        "npo": {"epochs": 1, **both, "hparams": lr},
        # SimNPO, IdkDPO, SatImp: the sweeps above (at 5e-4 they barely moved).
        "simnpo": {"epochs": 1, **both, "hparams": {"learning_rate": 2e-3, "beta": 2.5}},
        "idk_dpo": {"epochs": 1, **both, "hparams": {"learning_rate": 4e-3, "beta": 0.1}},
        "altpo": {"epochs": 1, **both, "hparams": lr},
        "rmu": {"epochs": 1, **both, "hparams": lr},
        "undial": {"epochs": 1, **both, "hparams": lr},
        "wga": {"epochs": 1, **both, "hparams": lr},
        "satimp": {"epochs": 1, **both, "hparams": {"learning_rate": 3e-3, "beta1": 1.0}},
        "ce_u": {"epochs": 5, "forget_batch_size": fb, "hparams": lr},
        "pdu": {"epochs": 1, **both, "hparams": lr},
        "task_vector_negation": {
            "epochs": 5,
            "forget_batch_size": fb,
            "hparams": {"learning_rate": 1e-3, "optimizer": _ADAM},
        },
        "ties_merge": {"epochs": 1, **both, "hparams": {}},
        "weight_attribution_mask": {
            "epochs": 1,
            **both,
            "hparams": {"inner": {"name": "npo", "hparams": lr}},
        },
    }


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the lm_fictitious config; valid: 'tiny'")
    c = ml_collections.ConfigDict()
    c.track = "lm"  # experiments.main runs jaxunlearn.scenarios.lm for this config
    c.dataset = "fictitious_authors"
    # TOFU's shape at half its size (100 authors x 10 facts, 100 utility facts): what a CPU
    # memorises in minutes (the corpus's own default is TOFU's 200 x 20).
    c.data_kwargs = {
        "num_authors": 100,
        "qa_per_author": 10,
        "num_utility": 100,
        "vocab_size": 512,
        "seed": 0,
    }
    c.model = "transformer"
    c.model_kwargs = {"d_model": 64, "num_layers": 2, "num_heads": 4}
    c.root_seed = 0
    c.seeds = 1  # unlearning runs per rule (an ensemble from the same target)
    c.retain_seeds = 2  # retain models per split: seed 0 is the reference, seed 1 the noise floor
    c.data_parallel = True
    c.distributed = False
    # Target and retain models: trained from scratch by the `retrain` rule with this recipe.
    # The target and retain models also learn the authors' passages (in windows of the QA
    # context; a retain model never its forget authors'), for MUSE's verbatim memorisation.
    c.train_passages = True
    c.train = {"epochs": 60, "batch_size": 32, "learning_rate": 3e-3, "optimizer": _ADAM}
    c.scenarios = ("forget10", "forget05", "forget01")
    c.main_scenario = "forget10"  # the TOFU table and the trajectory plot
    c.scenario_rules = ("npo", "gradient_ascent")  # run on the other scenarios
    c.rules = _rules()
    for name in c.scenario_rules:  # forget01 is one author (10 rows): a smaller forget batch
        c.rules[name].per_scenario = {"forget01": {"forget_batch_size": 8}}
    c.audit_points = 5  # audits along each rule's run (forget quality and model utility)
    c.eval = {
        "batch_size": 64,
        "retain_questions": 200,  # retain QA evaluated (TOFU: retain_perturbed, 400)
        "max_new_tokens": 24,
        # leak@k: 200 samples (the leak@k paper's) for every forget question (issue 11 asks for
        # 400 questions; forget10 here has 100), decoded as one compiled program in chunks of
        # `sample_rows` sequences (one question's samples: a chunk stops at its longest answer).
        "leak_questions": 400,
        "leak_samples": 200,
        "sample_rows": 200,
        "leak_ks": (1, 4, 16, 64),
        "leak_rouge": 0.1,  # ROUGE-L recall a leaking answer must reach (leak@k paper)
        "min_k": 0.4,
    }
    # MUSE's sustainability/scalability and the relearning attack (on the main scenario's rules
    # listed here; empty: off).
    c.muse_rules = ("npo",)
    c.sustainability_requests = 3
    c.scalability_fractions = (0.25, 0.5, 1.0)
    c.relearn_steps = 10
    if arg == "tiny":
        c.data_kwargs = {
            "num_authors": 20,
            "qa_per_author": 4,
            "num_utility": 8,
            "seed": 0,
            "vocab_size": 300,
        }
        c.model_kwargs = {"d_model": 32, "num_layers": 1, "num_heads": 2}
        c.retain_seeds = 2
        c.train = {"epochs": 40, "batch_size": 8, "learning_rate": 5e-3, "optimizer": _ADAM}
        c.scenarios = ("forget10",)
        c.scenario_rules = ()
        rules = _rules()
        small = {"forget_batch_size": 8, "retain_batch_size": 8}
        c.rules = {
            "gradient_ascent": {**rules["gradient_ascent"], "epochs": 2, "forget_batch_size": 8},
            "npo": {**rules["npo"], **small, "epochs": 1},
        }
        c.audit_points = 2
        c.eval = {
            **c.eval.to_dict(),
            "batch_size": 32,
            "retain_questions": 16,
            "max_new_tokens": 12,
            "leak_questions": 8,
            "leak_samples": 16,
            "leak_ks": (1, 4, 16),
        }
        c.muse_rules = ()
    return c
