r"""The embedded default: unlearning on scikit-learn's `digits` with an MLP, no download needed.

Two forget scenarios (a random 10% of the training set; the whole class 0), every foundation
rule, 3 seeds. Run:

    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/jaxunlearn

`--config=experiments/configs/default.py:tiny` is a seconds-long version (1 seed, few epochs) used
by the tests and the quickstart notebook; `:smoke` is smaller still (one scenario, one rule, two
audits), a check that a machine or a multi-process job runs the whole pipeline.

Hyperparameters follow the reference code (SGD with momentum 0.9 and weight decay 5e-4), with
learning rates and epoch counts scaled to this small problem.
"""

import ml_collections

# Every `--config=...:variant` this file accepts ("" is the plain config); a test plans each.
VARIANTS = ("", "tiny", "smoke")


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the default config; valid: 'tiny', 'smoke'")
    c = ml_collections.ConfigDict()
    c.dataset = "digits"
    c.data_kwargs = {}
    # Where TFDS datasets (mnist, cifar10, ...) are prepared: --config.data_dir=/path ("": TFDS's
    # default, ~/tensorflow_datasets); unused by in-memory data such as digits.
    c.data_dir = ""
    # On-device augmentation of every training batch: originals, oracles (retraining) and the
    # unlearning rules, as in the reference codebases. "auto" is the dataset's default:
    # "crop_flip" (random 32x32 crop of the image zero-padded by 4, then a horizontal flip with
    # probability 1/2; torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip) for cifar10
    # and cifar100, "none" for every other dataset (digits, mnist, fashion_mnist, svhn_cropped:
    # the references train SVHN unaugmented, and a mirrored digit is another digit). Other
    # values: "none", "crop" (the crop without the flip), "crop_flip".
    c.augmentation = "auto"
    c.model = "mlp"
    c.model_kwargs = {"hidden": (128, 128)}
    c.seeds = 3
    c.forget_seed = 0
    c.data_parallel = True  # split batches over every device along a `data` mesh axis
    c.distributed = False  # True on multi-host pods/clusters: calls jax.distributed.initialize()
    # Original model and retrain oracles: the same recipe, on all training data or on D_r.
    c.train = {
        "epochs": 30,
        "batch_size": 64,
        "learning_rate": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }
    c.scenarios = {
        "random_10pct": {"kind": "random", "fraction": 0.1},
        "class_0": {"kind": "class", "classes": (0,)},
    }
    c.rules = {
        "retrain": {},
        # Each rule tuned per scenario with the sweep (3 seeds, selection by the Avg. Gap on a
        # validation half of the test set; commands and grids in docs/tuning.md). An entry holds
        # the class_0 values (and note) and overrides them for random_10pct only, so that a
        # config that keeps one of the two scenarios (the gold notebook, benchmarks/) still
        # plans: `per_scenario` must name scenarios the config has.
        "finetune": {
            "epochs": 10,
            "retain_batch_size": 64,
            # class_0: lr in {0.01, ..., 0.4} -> 0.25 (gap 0.72): below 0.15 class 0 stays
            # (0.01: UA 0), 0.4 collapses a seed.
            "hparams": {"learning_rate": 0.25},
            # random_10pct: lr in {0.01, 0.03, 0.1, 0.2} -> 0.1 (gap 1.61; 0.01: 2.35).
            "per_scenario": {"random_10pct": {"hparams": {"learning_rate": 0.1}}},
        },
        "gradient_ascent": {
            "epochs": 5,
            "forget_batch_size": 32,
            # class_0: lr in {2e-3, ..., 5e-2} and {6e-3, ..., 9e-3} -> 8e-3 (gap 33.8).
            "hparams": {"learning_rate": 8e-3},
            "note": (
                "learning-rate cliff: no stable rate forgets class 0. Over 20 updates, "
                "lr <= 6e-3 keeps it (UA <= 6) and from 9e-3 seeds collapse the model "
                "(2e-2: RA 14 in every seed; 10 epochs at 3e-3 to 6e-3 collapse too); "
                "8e-3, the sweep's choice, forgets it in some seeds only."
            ),
            # random_10pct: lr in {2e-3, 5e-3, 8e-3, 1e-2} -> 2e-3 (gap 2.44, the original's;
            # 5e-3 costs retain accuracy); no cliff there, so no note.
            "per_scenario": {"random_10pct": {"hparams": {"learning_rate": 2e-3}, "note": ""}},
        },
        "neggrad_plus": {
            "epochs": 5,
            "forget_batch_size": 16,
            "retain_batch_size": 64,
            # class_0: beta in {0.5, ..., 0.95} and {0.91, ..., 0.94} -> 0.91 (gap 5.5).
            "hparams": {"beta": 0.91, "learning_rate": 0.01},
            "note": (
                "cliff in beta (the forget loss's weight 1 - beta): 0.93 and above "
                "keep class 0 (UA <= 8), 0.9 forgets it at a cost of ~10 points of "
                "test accuracy and 0.8 or less diverges; 0.91, the sweep's choice, "
                "forgets it in some seeds only (lr 2e-3 to 7e-3 at beta 0.9: UA <= 7)."
            ),
            # random_10pct: beta in {0.6, ..., 0.99} -> 0.75 (gap 1.16; 0.95: 2.40).
            "per_scenario": {"random_10pct": {"hparams": {"beta": 0.75}, "note": ""}},
        },
        "random_label": {
            "epochs": 5,
            "forget_batch_size": 32,
            "retain_batch_size": 64,
            # class_0: lr in {3e-3, 5e-3, 1e-2, 2e-2} -> 1e-2 (gap 0.54), with the forget batch's
            # share of the concatenated batch (32 of 96) stated explicitly.
            "hparams": {"learning_rate": 0.01, "forget_weight": 1 / 3},
            # random_10pct: forget_weight in {0.05, 0.1, 0.2, 1/3} -> 0.05 (gap 2.00; 1/3: 7.58,
            # the membership attack calls a third of the forget set non-members, the oracle 6%).
            "per_scenario": {"random_10pct": {"hparams": {"forget_weight": 0.05}}},
        },
    }
    c.audits = (
        "accuracy",
        "mia_efficacy",
        "mia_auc",
        "runtime",
        "representation",
        "relearn",
        "zrf",
    )
    if arg == "tiny":
        c.seeds = 1
        c.train.epochs = 5
        for rule in c.rules.values():
            if "epochs" in rule:
                rule.epochs = 1
    if arg == "smoke":
        c.seeds = 1
        c.train.epochs = 1
        c.train.chunk_size = 11  # two checkpoints per model (an epoch is 22 or 20 steps)
        c.scenarios = {"class_0": c.scenarios.class_0}
        # The class_0 entry (the random_10pct override goes with that scenario).
        smoke_rule = {k: v for k, v in c.rules.neggrad_plus.items() if k != "per_scenario"}
        c.rules = {"retrain": {}, "neggrad_plus": {**smoke_rule, "epochs": 0.25}}
        c.audits = ("accuracy", "mia_efficacy")
    return c
