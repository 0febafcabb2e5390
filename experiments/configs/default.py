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
        "finetune": {"epochs": 10, "retain_batch_size": 64, "hparams": {"learning_rate": 0.01}},
        "gradient_ascent": {
            "epochs": 5,
            "forget_batch_size": 32,
            "hparams": {"learning_rate": 2e-3},
        },
        "neggrad_plus": {
            "epochs": 5,
            "forget_batch_size": 16,
            "retain_batch_size": 64,
            "hparams": {"beta": 0.95, "learning_rate": 0.01},
        },
        "random_label": {
            "epochs": 5,
            "forget_batch_size": 32,
            "retain_batch_size": 64,
            # The forget batch's share of the concatenated batch (32 of 96), stated explicitly.
            "hparams": {"learning_rate": 0.01, "forget_weight": 1 / 3},
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
        c.rules = {"retrain": {}, "neggrad_plus": {**c.rules.neggrad_plus, "epochs": 0.25}}
        c.audits = ("accuracy", "mia_efficacy")
    return c
