r"""The experiment binary: train originals and oracles, run unlearning rules, audit, report.

    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju
    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju \
        --config.seeds=1 --config.rules.gradient_ascent.hparams.learning_rate=1e-3

Writes ``results.json`` (one record per scenario, method and seed), ``results.txt`` (the table
also printed here) and ``results.png`` into ``--workdir``. Rerunning with the same workdir
resumes: trained originals and oracles are restored from their checkpoints, finished rules are
skipped.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    import jax

    if _CONFIG.value.get("distributed", False):
        jax.distributed.initialize()
    from jaxunlearn.scenarios import run_experiment

    run_experiment(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
