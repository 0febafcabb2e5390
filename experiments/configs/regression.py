r"""Regression unlearning on scikit-learn's `diabetes` (standardised targets) with an MLP.

Forgets a random 10% of the training patients (class forgetting has no meaning for a real-valued
target) with the task-agnostic baselines and the two methods of Deep Regression Unlearning
(blindspot, Gaussian amnesiac), 3 seeds, audited by forget/retain/test MSE and the loss-threshold
membership AUC (Avg. Gap averages the absolute differences of those four to the retrain oracle).
Run:

    python -m experiments.main --config=experiments/configs/regression.py \
        --workdir=/tmp/ju_regression

The original model reaches a test MSE of about 0.6 (ordinary least squares: 0.56) with a training
MSE of about 0.35, so the forget set starts out better fitted than unseen data.

References:
  Tarun et al., "Deep Regression Unlearning", ICML 2023.
"""

import ml_collections

VARIANTS = ("",)


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the regression config; it has none")
    c = ml_collections.ConfigDict()
    c.dataset = "diabetes"
    c.data_kwargs = {}
    # Where TFDS datasets (mnist, cifar10, ...) are prepared: --config.data_dir=/path ("": TFDS's
    # default, ~/tensorflow_datasets); unused by in-memory data such as digits.
    c.data_dir = ""
    c.augmentation = "none"  # tabular data: nothing to augment
    c.model = "mlp"
    # Two hidden layers, so blindspot's attention transfer has more than one layer to match.
    c.model_kwargs = {"hidden": (32, 32)}
    c.seeds = 3
    c.forget_seed = 0
    c.data_parallel = True
    c.distributed = False  # True on multi-host pods/clusters: calls jax.distributed.initialize()
    # 353 training patients: a small, well-regularised recipe; longer training overfits.
    c.train = {
        "epochs": 20,
        "batch_size": 32,
        "learning_rate": 0.005,
        "momentum": 0.9,
        "weight_decay": 5e-3,
    }
    c.scenarios = {"random_10pct": {"kind": "random", "fraction": 0.1}}
    # Forget set: 35 patients, retain set: 318; batch sizes are multiples of 8.
    c.rules = {
        "retrain": {},
        "finetune": {"epochs": 5, "retain_batch_size": 32, "hparams": {"learning_rate": 0.005}},
        "gradient_ascent": {
            "epochs": 2,
            "forget_batch_size": 8,
            "hparams": {"learning_rate": 1e-3},
        },
        "neggrad_plus": {
            "epochs": 3,
            "forget_batch_size": 8,
            "retain_batch_size": 32,
            "hparams": {"beta": 0.8, "learning_rate": 0.005},
        },
        # epochs = 2 proxy epochs (as in the reference) + 2 unlearning epochs: an epoch of 318
        # patients is 10 steps, too few at the reference's lr 1e-3 (AgeDB epochs are ~40 steps).
        "blindspot": {
            "epochs": 4,
            "forget_batch_size": 8,
            "retain_batch_size": 32,
            "hparams": {"learning_rate": 3e-3},
        },
        "gaussian_amnesiac": {
            "epochs": 3,
            "forget_batch_size": 16,
            "retain_batch_size": 32,
            "hparams": {"learning_rate": 3e-3},
        },
    }
    c.audits = ("regression_error", "mia_auc", "runtime")
    return c
