r"""Gold-standard audits on `digits`: N oracles and N unlearning runs per rule, as ensembles.

The default experiment's data, model, training recipe, scenarios (a random 10%, the whole class 0)
and rules, with N = 32 seeds instead of 3. Every seed trains its own original and its own oracle,
and every rule unlearns each original once, so each method is an ensemble of N models and the
retrained oracles are another. On top of every per-model audit, the ensemble audits compare the
two ensembles example by example:

* ``competition``: per-example epsilon and score of the NeurIPS 2023 unlearning competition
  (``epsilon_mean``, ``epsilon_median``, ``forget_score`` F, ``competition_score``
  F * RA_u/RA_r * TA_u/TA_r);
* ``klom``: KLoM of margins on forget, retain and test examples (``klom_<part>_mean`` / ``_p95``);
* ``ulira``: U-LiRA on the random-forgetting scenario for two rules: 16 shadow models each train
  on the retain set plus a random half of the forget set and unlearn that half (``ulira_auc``,
  ``ulira_tpr_at_1pct_fpr``; on the ``original`` row: the attack on shadows that never unlearned).
  The shadows are artefacts of the experiment, checkpointed like the originals and oracles.

Run (N = 32: 3.9 minutes on 2 CPU cores at a load of 2-4, 12.7 minutes when they were shared
with about 8 busy processes; over half of it is the per-model audits of 384 models):

    python -m experiments.main --config=experiments/configs/gold.py --workdir=/tmp/ju_gold

The competition's ensemble size (512 originals, 512 oracles per scenario, 512 runs per rule),
with the per-model audits cut to the cheap ones (4.8 minutes on one H200, most of it those
audits' Python loop over 6,144 models on the host; the training takes seconds there):

    python -m experiments.main --config=experiments/configs/gold.py --workdir=/tmp/ju_gold512 \
        --config.seeds=512 '--config.audits=("accuracy","mia_efficacy","mia_auc","runtime")'

Besides ``results.json``/``.txt``/``.png`` the workdir gets ``per_example.png`` (per-example
epsilon and KLoM distributions per method and scenario) and the arrays behind it in
``ensemble/<scenario>/<method>.npz``. ``--config=experiments/configs/gold.py:tiny`` is a
seconds-long version for tests.

Which original each run unlearns is the field ``originals``. This config uses ``"per_run"``: run
``s`` starts from its own original ``s`` (as in KLoM's benchmark, data-unlearning-bench), so the
spread of the unlearned ensemble includes the originals' training randomness, like the oracles'
spread does. ``--config.originals=shared`` is the NeurIPS 2023 competition's protocol: one
original is trained and all N runs unlearn it (512 runs from one model there), so the unlearned
spread is the unlearning's randomness alone while the oracles still vary with training:

    python -m experiments.main --config=experiments/configs/gold.py --workdir=/tmp/ju_gold_shared \
        --config.originals=shared

KLoM here is ``KL(unlearned || oracle)``; data-unlearning-bench's published values are
``KL(oracle || unlearned)`` (its ``run.py`` passes the oracle margins first). The
``klom_published`` ensemble audit computes that direction beside it (``klom_pub_*``).

References:
  Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
  unlearning competition", arXiv 2406.09073 (2024).
  Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching",
  arXiv 2410.23232 (ICLR 2025) (KLoM).
  Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
  Privacy", arXiv 2403.01218 (SaTML 2025) (U-LiRA).
"""

from experiments.configs import default

# Every per-model audit of the library; "linear_probe" trains a probe per model and is left out.
PER_MODEL_AUDITS = (
    "accuracy",
    "mia_efficacy",
    "mia_auc",
    "runtime",
    "representation",
    "relearn",
    "relearn_retain",
    "zrf",
)


VARIANTS = ("", "tiny")


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the gold config; valid: 'tiny'")
    c = default.get_config()
    c.seeds = 32
    c.audits = PER_MODEL_AUDITS
    c.ensemble_audits = ("competition", "klom", "klom_published", "ulira")
    # "per_run": run s unlearns original s; "shared": every run unlearns one original (the
    # NeurIPS 2023 competition's protocol). See the module docstring.
    c.originals = "per_run"
    c.ulira_shadows = 16
    c.ulira_rules = ("finetune", "random_label")
    c.ulira_scenarios = ("random_10pct",)
    c.ulira_targets = 0  # 0: the whole forget set (rounded down to an even count)
    if arg == "tiny":
        c.seeds = 4
        c.train.epochs = 3
        c.audits = ("accuracy", "mia_efficacy", "runtime")
        c.ulira_shadows = 6
        c.ulira_rules = ("gradient_ascent",)
        c.ulira_targets = 64
        for rule in c.rules.values():
            if "epochs" in rule:
                rule.epochs = 1
    return c
