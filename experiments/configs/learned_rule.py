r"""Meta-learn an unsupervised update rule on `digits` (Metz et al., ICLR 2019) and judge it.

Meta-trains `learned_unsupervised_rule` (a 16-wide per-unit network) for a 64-32 ReLU MLP: 8
tasks per meta-step (5 random classes each, a quarter of them seen through a random orthogonal
projection of the pixels), truncated unrolls of 10 inner steps (batch 32) carried over 100-step
inner runs, the few-shot ridge meta-objective (10 shots per class, ridge 0.1), Adam 3e-3 on
theta, 150 meta-steps; then applies the saved rule for 100 unsupervised steps to fresh networks
and reports k-NN and linear-probe accuracy against a random encoder and the rule before
meta-training (3 seeds). Run:

    python -m experiments.main --config=experiments/configs/learned_rule.py --workdir=/tmp/lr

`:tiny` is a seconds-long version (a 16-wide network, 2 tasks, 3 meta-steps of 2 inner steps)
used by the tests.
"""

import ml_collections

VARIANTS = ("", "tiny")


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the learned_rule config; valid: 'tiny'")
    c = ml_collections.ConfigDict()
    c.track = "learned_rule"  # experiments/main.py runs jaxunlearn.scenarios.learned_rule
    c.dataset = "digits"
    c.data_kwargs = {}
    c.data_dir = ""
    c.model = "mlp"
    c.model_kwargs = {"hidden": (64, 32)}
    c.seed = 0
    c.rule = {"hidden": 16, "channels": 4, "rank": 4}
    c.meta = {
        "num_steps": 150,
        "num_tasks": 8,
        "unroll_length": 10,
        "trajectory_length": 100,
        "batch_size": 32,
        "num_ways": 5,
        "shots": 10,
        "queries": 10,
        "ridge": 0.1,
        "projection_prob": 0.25,
        "learning_rate": 3e-3,
        "clip_norm": 1.0,
        "eval_every": 25,
        "eval_tasks": 16,
        "checkpoint_every": 50,
    }
    c.evaluation = {"seeds": 3, "steps": 100, "batch_size": 32, "knn_k": 20, "probe_epochs": 100}
    if arg == "tiny":
        c.model_kwargs = {"hidden": (16,)}
        c.rule = {"hidden": 8, "channels": 2, "rank": 2}
        c.meta.update(
            num_steps=3,
            num_tasks=2,
            unroll_length=2,
            trajectory_length=4,
            batch_size=16,
            num_ways=3,
            shots=4,
            queries=4,
            eval_every=2,
            eval_tasks=2,
            checkpoint_every=2,
        )
        c.evaluation = {"seeds": 1, "steps": 3, "batch_size": 16, "knn_k": 5, "probe_epochs": 2}
    return c
