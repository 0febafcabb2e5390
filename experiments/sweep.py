r"""The sweep binary: one rule, a grid over one hyperparameter, selected on a validation split.

    python -m experiments.sweep --config=experiments/configs/default.py --workdir=/tmp/ju_sweep \
        --scenario=class_0 --rule=gradient_ascent --param=learning_rate \
        --values=5e-4,1e-3,2e-3,4e-3,8e-3
    python -m experiments.sweep --config=experiments/configs/default.py --workdir=/tmp/ju_sweep \
        --scenario=random_10pct --rule=neggrad_plus --param=beta --values=0.8,0.9,0.95,0.99 \
        --config.seeds=1

The grid x seeds runs as one compiled program (see :mod:`jaxunlearn.scenarios.sweep`); the rule's
epochs, batch sizes and other hyperparameters come from the config's entry for it. Writes
``sweep.json``, ``sweep.txt`` and ``sweep.png`` into ``--workdir`` (originals and oracles are
reused from an ``experiments.main`` run in the same workdir).
"""

from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and the sweep report.")
_SCENARIO = flags.DEFINE_string("scenario", None, "Forget scenario of the config to sweep on.")
_RULE = flags.DEFINE_string("rule", None, "Registered rule to sweep.")
_PARAM = flags.DEFINE_string("param", "learning_rate", "The rule's hyperparameter to sweep.")
_VALUES = flags.DEFINE_list("values", None, "Comma-separated grid of values.")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.5, "Share of the test set used to select.")
flags.mark_flags_as_required(["config", "workdir", "scenario", "rule", "values"])


def main(argv):
    del argv
    common.set_up(_CONFIG.value)
    common.check_workdir(_WORKDIR.value)
    from jaxunlearn.scenarios.sweep import run_sweep

    run_sweep(
        _CONFIG.value,
        _WORKDIR.value,
        scenario=_SCENARIO.value,
        rule=_RULE.value,
        param=_PARAM.value,
        values=_VALUES.value,
        val_fraction=_VAL_FRACTION.value,
    )


if __name__ == "__main__":
    common.run(main)
