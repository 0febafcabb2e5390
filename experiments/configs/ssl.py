r"""Self-supervised encoders on scikit-learn's `digits`, then unlearning in them.

Every representation rule of `jaxunlearn.repr` that trains an encoder from unlabelled data alone
(the registry is iterated: `lwf` and `representational_alignment` need labels, a guide or an old
task, `learned_unsupervised_rule` trains MLPs only; they are listed as skipped, with the reason)
trains the digits CNN with its projection head, 300 steps of batch 256; the table holds weighted
20-NN and linear-probe accuracy, RankMe effective rank and training time per rule, against raw
pixels, the randomly initialised CNN and supervised training on the labels; the plot holds k-NN
accuracy over training. Then class 0 and a random 10% of the training set are unlearned, without
labels, from the SimCLR and BYOL encoders (the SSL loss turned around, LAF, bad teaching) and
audited against encoders retrained without them. Run:

    python -m experiments.main --config=experiments/configs/ssl.py --workdir=/tmp/ssl

About 50 minutes of wall time on the shared, busy 2-core machine it was run on (8 encoders of
300 steps, 4 oracles, 12 unlearning runs). `:tiny` is a seconds-long version (SimCLR on a small
MLP, a few steps, one request, bad teaching) used by the tests. CIFAR-10 through TFDS, once
prepared under a data directory (`jaxunlearn.data.tfds_datasets.prepare_command`), is the same
code path: `--config.dataset=cifar10 --config.data_dir=/path/to/tensorflow_datasets`.
"""

import ml_collections

VARIANTS = ("", "tiny")


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the ssl config; valid: 'tiny'")
    c = ml_collections.ConfigDict()
    c.track = "ssl"  # experiments/main.py runs jaxunlearn.scenarios.ssl
    c.dataset = "digits"
    c.data_kwargs = {}
    c.data_dir = ""
    c.model = "cnn"  # a random ReLU MLP keeps digits' pixel neighbourhoods: little to gain
    c.model_kwargs = {}
    c.width = 256  # hidden width of the projection heads
    c.steps = 300
    c.batch_size = 256
    c.eval_every = 50  # k-NN accuracy over training
    c.probe_epochs = 100
    c.supervised_learning_rate = 0.05
    c.root_seed = 0
    c.rules = ()  # every rule of the registry that trains an encoder alone
    c.hparams = {}  # {rule: {hyperparameter: value}}
    c.unlearn = {
        "encoders": ("simclr", "byol"),
        "forget": {
            "class 0": {"kind": "class", "classes": (0,)},
            "random 10%": {"kind": "random", "fraction": 0.1},
        },
        "steps": 100,
        "forget_batch_size": 64,
        "retain_batch_size": 128,
        "ascent": {"learning_rate": 3e-4, "forget_weight": 1.0},
        "rules": {"label_agnostic_forgetting": {}, "bad_teacher": {}},
    }
    if arg == "tiny":
        c.rules = ("simclr",)
        c.model = "mlp"
        c.model_kwargs = {"hidden": (16,)}
        c.width = 16
        c.steps = 4
        c.batch_size = 32
        c.eval_every = 2
        c.probe_epochs = 5
        c.unlearn.encoders = ("simclr",)
        c.unlearn.forget = {"class 0": {"kind": "class", "classes": (0,)}}
        c.unlearn.steps = 4
        c.unlearn.forget_batch_size = 16
        c.unlearn.retain_batch_size = 32
        c.unlearn.rules = {"bad_teacher": {}}  # LAF on an encoder: tests/repr/test_unlearning.py
    return c
