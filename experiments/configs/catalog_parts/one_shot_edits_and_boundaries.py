"""Catalog entries for SSD, Fisher forgetting, IU, boundary shrink/expand, UNSIR and amnesiac.

Tuned on the default `digits` MLP (class-0 forgetting and random 10%); one entry serves both
scenarios unless it has ``per_scenario`` overrides (IU). Both forget sets are 10% of the training
data (the runner passes that share to SSD and IU as ``forget_fraction``), so SSD's
``selection_weighting`` must stay below 1 / 0.1 = 10 (its paper's 10 assumes forget sets of 5% or
less). Known limits on this problem, with these entries:

- ``fisher_forgetting``: the batch-level Fisher is not tiny (13-75x the per-example one), and
  its noise is barely class-specific, so Fisher noise alone forgets neither scenario: what
  removes class 0 is the reference codes' class-wise edit (the forgotten classes' output weights
  get mean 0, variance 1e-3), which the rule applies when the runner passes the scenario's
  ``forget_classes``. The entry (``alpha`` 1e-6) keeps the noise small. 3 seeds: class_0 UA/RA/
  TA/MIA 100/99.95/96.6/100, Avg. Gap 0.09 (retrain 100/100/96.9/100); random 10% 0.5/100/96.8/
  2.6, gap 2.29, the original model's own gap (2.30; retrain 4.9/100/97.6/6.5). ``alpha`` 1e-7
  to 3e-6 gives the same gaps within noise; 1e-5 costs class 0 its utility (gap 1.16) for little
  random forgetting (gap 2.09). Well under a second per seed.
- ``influence_unlearning``: the reference's damping of 1 swamps the empirical Fisher (largest
  eigenvalue <= 0.6), making IU a plain step along ``g_f - g_r``; the old entry (two-vector
  recursion, ``alpha`` 10) left class 0 unforgotten. The entry uses the exact inverse
  (``exact``, 1000 retain samples) with ``damping`` 0.01. One ``alpha`` cannot suit both
  scenarios: removing class 0 needs a step that over-forgets random examples, so the entry sets
  ``alpha`` per scenario (``per_scenario``): 2 for class_0 (Avg. Gap 0.21 over 3 seeds) and 1
  for random 10% (gap 1.63). The class_0 and random gaps at other ``alpha``: 1, 17.6 (UA 57.5)
  and 1.63; 1.5, 4.09 and 4.98; 1.75, 1.22 and 7.45; 2, 0.21 and 9.86. ``damping`` 0.001
  (``alpha`` 1) costs retain accuracy (class_0 90%, random 62%); 0.1 (``alpha`` 4) barely forgets
  class 0 (UA 9).
  20-30 s per seed on 2 shared CPU cores.
- ``boundary_shrink``: an FGSM step of 0.1 on 8x8 digits flips only ~13% of the forget set's
  predictions, so the entry uses 0.3; relabelling to neighbouring classes over-forgets random
  examples (the method targets class-wise forgetting), so the random scenario takes 0.05.
- ``unsir``: at lr 7e-3 one seed in three forgets class 0 only in part (forget accuracy ~22%);
  1e-2 removes it in every seed but over-forgets random examples, so the random scenario takes
  2e-3 (``per_scenario``).
"""

RULES = {
    "ssd": {
        "epochs": 1,
        "forget_batch_size": 128,
        "retain_batch_size": 128,
        "hparams": {"selection_weighting": 6.5},
    },
    "fisher_forgetting": {
        "epochs": 1,
        "retain_batch_size": 32,
        "hparams": {"alpha": 1e-6},
    },
    "influence_unlearning": {
        "epochs": 1,
        "forget_batch_size": 64,
        "retain_batch_size": 64,
        "hparams": {"exact": True, "damping": 0.01},
        # Removing class 0 needs a step that over-forgets random examples: one alpha each.
        "per_scenario": {
            "class_0": {"hparams": {"alpha": 2.0}},
            "random_10pct": {"hparams": {"alpha": 1.0}},
        },
    },
    "boundary_shrink": {
        "epochs": 10,
        "forget_batch_size": 32,
        "hparams": {"learning_rate": 2e-4, "bound": 0.3},
        # random_10pct: bound in {0.05, 0.1, 0.2, 0.3} -> 0.05 (gap 2.23, about the original's;
        # 0.3: 5.56, retain accuracy 95).
        "per_scenario": {"random_10pct": {"hparams": {"bound": 0.05}}},
    },
    "boundary_expand": {
        "epochs": 3,
        "forget_batch_size": 32,
        "hparams": {"learning_rate": 1e-3},
    },
    "unsir": {
        # 25 noise updates + 1 impair epoch + 1 repair epoch of 20 retain batches.
        "epochs": 3.25,
        "forget_batch_size": 32,
        "retain_batch_size": 64,
        # The schedule this entry was tuned with (the rule's default is now the reference's
        # step counts, which need ~169 updates on this problem and the reference's retain
        # subsample). Learning rate swept per scenario: class_0 in {5e-3, 7e-3, 1e-2, 1.5e-2}
        # -> 1e-2 (gap 11.0; 7e-3: 17.4, one seed in three forgets class 0 in part), random 10%
        # in {2e-3, 4e-3, 7e-3} -> 2e-3 (gap 1.14; 7e-3: 4.44).
        "hparams": {"learning_rate": 1e-2, "impair_epochs": 1.0},
        "per_scenario": {"random_10pct": {"hparams": {"learning_rate": 2e-3}}},
    },
    "amnesiac": {
        # 16 + 112: the forget set's 10% share of each batch of 128.
        "epochs": 3,
        "forget_batch_size": 16,
        "retain_batch_size": 112,
        "hparams": {"learning_rate": 5e-4},
    },
}
