r"""The experiment binary: train originals and oracles, run unlearning rules, audit, report.

    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju
    python -m experiments.main --config=experiments/configs/default.py --workdir=/tmp/ju \
        --config.seeds=1 --config.rules.gradient_ascent.hparams.learning_rate=1e-3

Writes ``results.json`` (one record per scenario, method and seed), ``results.txt`` (the table
also printed here) and ``results.png`` into ``--workdir``. Rerunning with the same workdir
resumes: trained originals and oracles are restored from their checkpoints, finished rules are
skipped.

One job over several processes (hosts): start the same command on each with
``--config.distributed=True``; on TPU VMs, Slurm and Open MPI that is all (see ``launch/``),
elsewhere add ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.
``launch/local.sh 2 experiments/configs/default.py:smoke /tmp/ju_mp`` does this on one machine.
"""

from absl import app, flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
# With --config.distributed=True on a cluster that JAX does not detect (TPU VMs, Slurm and Open MPI
# are detected): process 0's host:port, the number of processes and this one's id.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Coordinator host:port.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id, 0 to num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    common.set_up()
    import jax

    process_flags = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if not _CONFIG.value.get("distributed", False) and any(v is not None for v in process_flags):
        raise app.UsageError(
            "--coordinator_address/--num_processes/--process_id need --config.distributed=True"
        )
    if _CONFIG.value.get("distributed", False):
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    from jaxunlearn.scenarios import run_experiment

    run_experiment(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
