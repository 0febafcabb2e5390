r"""The sweep binary: one rule, a grid over one hyperparameter, selected on a validation split.

    python -m experiments.sweep --config=experiments/configs/default.py --workdir=/tmp/ju_sweep \
        --scenario=class_0 --rule=gradient_ascent --param=learning_rate \
        --values=5e-4,1e-3,2e-3,4e-3,8e-3
    python -m experiments.sweep --config=experiments/configs/default.py --workdir=/tmp/ju_sweep \
        --scenario=random_10pct --rule=neggrad_plus --param=beta --values=0.8,0.9,0.95,0.99 \
        --config.seeds=1

An LM config (``track = "lm"``) sweeps a grid over one or two hyperparameters (``--param2``,
``--values2``: learning rate x beta), selected by forget quality and model utility on a validation
half of the forget authors (:mod:`jaxunlearn.scenarios.lm.sweep`):

    python -m experiments.sweep --config=experiments/configs/lm_fictitious.py --workdir=/tmp/ju_lm \
        --scenario=forget10 --rule=npo --param=learning_rate --values=1e-4,3e-4,1e-3 \
        --param2=beta --values2=0.05,0.1,0.5

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
# LM configs (track = "lm"): a second grid axis (learning rate x beta), and the utility floor.
_PARAM2 = flags.DEFINE_string("param2", None, "LM configs: a second hyperparameter to sweep.")
_VALUES2 = flags.DEFINE_list("values2", None, "LM configs: the second hyperparameter's grid.")
_UTILITY_FLOOR = flags.DEFINE_float(
    "utility_floor", 0.9, "LM configs: share of the target's model utility a choice must keep."
)
flags.mark_flags_as_required(["config", "workdir", "scenario", "rule", "values"])


def main(argv):
    del argv
    common.set_up(_CONFIG.value)
    common.check_workdir(_WORKDIR.value)
    from jaxunlearn.scenarios.lm import is_lm_config

    if is_lm_config(_CONFIG.value):
        from jaxunlearn.scenarios.lm.sweep import run_lm_sweep

        grid = {_PARAM.value: _VALUES.value}
        if bool(_PARAM2.value) != bool(_VALUES2.value):
            raise ValueError("--param2 and --values2 go together")
        if _PARAM2.value:
            grid[_PARAM2.value] = _VALUES2.value
        run_lm_sweep(
            _CONFIG.value,
            _WORKDIR.value,
            scenario=_SCENARIO.value,
            rule=_RULE.value,
            grid=grid,
            utility_floor=_UTILITY_FLOOR.value,
        )
        return
    if _PARAM2.value or _VALUES2.value:
        raise ValueError("--param2/--values2 are for LM configs (track = 'lm') only")
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
