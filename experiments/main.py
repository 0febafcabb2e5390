r"""The experiment binary: train originals and oracles, run unlearning rules, audit, report.

    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju
    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju \
        --config.seeds=1 --config.rules.gradient_ascent.hparams.learning_rate=1e-3

A config with ``track = "lm"`` (``experiments/configs/lm_fictitious.py``) runs the language-model
experiment instead (:mod:`jaxunlearn.scenarios.lm`: target and retain models, LM rules, the TOFU
table and the forget quality vs model utility plot); ``track = "learned_rule"``
(``experiments/configs/learned_rule.py``) meta-trains the learned unsupervised rule
(:mod:`jaxunlearn.scenarios.learned_rule`); ``track = "ssl"`` (``experiments/configs/ssl.py``) the
self-supervised experiment (:mod:`jaxunlearn.scenarios.ssl`: every representation rule trained
and evaluated, then unlearning in the encoders).

Writes ``results.json`` (one record per scenario, method and seed), ``results.txt`` (the table
also printed here) and ``results.png`` into ``--workdir``. Rerunning with the same workdir
resumes: trained originals and oracles are restored from their checkpoints, finished rules are
skipped, as long as their config fingerprints match (what changed is recomputed, one line each).
A configuration or I/O error ends it with one line (``--verbose`` or ``JAXUNLEARN_VERBOSE=1``:
the traceback).

One job over several processes (hosts): start the same command on each with
``--config.distributed=True``; on TPU VMs, Slurm and Open MPI that is all (see ``launch/``),
elsewhere add ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.
``launch/local.sh 2 experiments/configs/default.py:smoke /tmp/ju_mp`` does this on one machine.
"""

from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    common.set_up(_CONFIG.value)
    common.check_workdir(_WORKDIR.value)
    from jaxunlearn.scenarios.lm import is_lm_config

    if is_lm_config(_CONFIG.value):  # track = "lm": the language-model experiment
        from jaxunlearn.scenarios.lm import run_lm_experiment

        run_lm_experiment(_CONFIG.value, _WORKDIR.value)
        return
    if _CONFIG.value.get("track") == "ssl":  # self-supervised encoders and their unlearning
        from jaxunlearn.scenarios import ssl

        ssl.run(_CONFIG.value, _WORKDIR.value)
        return
    if _CONFIG.value.get("track") == "unlearnable":
        from jaxunlearn.unlearnable import experiment

        experiment.run(_CONFIG.value, _WORKDIR.value)
        return
    if _CONFIG.value.get("track") == "learned_rule":
        from jaxunlearn.scenarios import learned_rule

        learned_rule.run(_CONFIG.value, _WORKDIR.value)
        return
    from jaxunlearn.scenarios import run_experiment

    run_experiment(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    common.run(main)
