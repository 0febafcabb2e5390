"""Bad teaching: distilling a random teacher on the forget set lowers forget accuracy."""

import jax
from rule_testing import forget_accuracy, smoke_test_rule, tiny_problem


def test_bad_teacher_reduces_forget_accuracy():
    res = smoke_test_rule("bad_teacher", steps=40, learning_rate=5e-3)
    before = forget_accuracy(tiny_problem()[3])
    for seed in range(2):
        after = forget_accuracy(jax.tree.map(lambda x, s=seed: x[s], res.variables))
        assert after < before - 0.5, f"bad_teacher seed {seed}: forget acc {before} -> {after}"
