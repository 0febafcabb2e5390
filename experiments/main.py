r"""The experiment binary: train originals and oracles, run unlearning rules, audit, report.

    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju
    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju \
        --config.seeds=1 --config.rules.gradient_ascent.hparams.learning_rate=1e-3

A config with ``track = "lm"`` (``experiments/configs/lm_fictitious.py``) runs the language-model
experiment instead (:mod:`jaxunlearn.scenarios.lm`: target and retain models, LM rules, the TOFU
table and the forget quality vs model utility plot); ``track = "lm_robust"``
(``experiments/configs/lm_robust.py``) runs every LM rule through the robustness audits
(:mod:`jaxunlearn.scenarios.lm_robust`: the rule x audit table and heat map);
``track = "learned_rule"`` (``experiments/configs/learned_rule.py``) meta-trains the learned
unsupervised rule (:mod:`jaxunlearn.scenarios.learned_rule`); ``track = "ssl"``
(``experiments/configs/ssl.py``) the self-supervised experiment (:mod:`jaxunlearn.scenarios.ssl`:
every representation rule trained and evaluated, then unlearning in the encoders);
``track = "unlearnable"`` (``experiments/configs/unlearnable.py``) the unlearnable examples.

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
    common.TRACKS[common.track(_CONFIG.value)].runner()(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    common.run(main)
