import json
import os

import pytest

from experiments.configs import unlearnable as config_module
from jaxunlearn import models
from jaxunlearn.scenarios import report, track_config
from jaxunlearn.unlearnable import experiment


def test_the_tiny_config_writes_the_table_results_and_plot(tmp_path):
    records = experiment.run(config_module.get_config("tiny"), str(tmp_path), log=lambda m: None)
    for name in ("results.json", "results.txt", "results.png", "generation.json"):
        assert os.path.getsize(tmp_path / name) > 0
    loaded = report.load_results(str(tmp_path / "results.json"))
    assert [r.to_json() for r in loaded] == [r.to_json() for r in records]
    rows = {(r.scenario, r.method) for r in loaded}
    for method in ("em_classwise", "bayes_error"):
        assert {(method, "none"), (method, "jpeg")} <= rows
    assert ("clean", "none") in rows and ("clean_part_alone", "none") in rows
    em = next(r for r in loaded if r.scenario == "em_classwise" and r.method == "none")
    assert set(em.metrics) == {"TA@100%", "TA@50%"} and 0 <= em.metrics["TA@100%"] <= 100
    part = next(r for r in loaded if r.scenario == "clean_part_alone")
    assert set(part.metrics) == {"TA@50%"}
    generation = json.loads((tmp_path / "generation.json").read_text())
    for label in ("em_classwise", "bayes_error"):
        assert generation[label]["max_abs_delta_x255"] <= 8 + 1e-3
    assert "TA@100%" in (tmp_path / "results.txt").read_text()


def test_adversarial_training_at_a_methods_own_budget_has_its_own_clean_reference(tmp_path):
    cfg = config_module.get_config("tiny")
    cfg.fractions = (1.0,)
    cfg.countermeasures = ("adversarial_training",)
    cfg.victim.adversarial_steps = 1
    cfg.methods = {
        "same": {"generator": "bayes_error_noise", "hparams": {"steps": 1}},
        "big": {"generator": "bayes_error_noise", "hparams": {"steps": 1, "epsilon": 16 / 255}},
    }
    records = experiment.run(cfg, str(tmp_path), log=lambda m: None)
    metrics = {(r.scenario, r.method): r.metrics for r in records}
    assert set(metrics["clean", "adversarial_training"]) == {"TA@0%"}
    assert set(metrics["same", "adversarial_training"]) == {"TA@100%"}  # the clean row's budget
    big = metrics["big", "adversarial_training"]
    assert set(big) == {"TA@0%", "TA@100%"}
    # A different budget trains a different clean victim.
    assert big["TA@0%"] != metrics["clean", "adversarial_training"]["TA@0%"]


@pytest.mark.parametrize(
    "override, match",
    [
        ({"fractions": (1.0, 1.5)}, "`fractions` must be in \\[0, 1\\]"),
        ({"fractions": (-0.1,)}, "`fractions` must be in \\[0, 1\\]"),
        ({"epsilon": 0.0}, "`epsilon`"),
        ({"epsilon": float("inf")}, "`epsilon`"),
        ({"countermeasures": ("none", "mixup")}, "Unknown countermeasure 'mixup'"),
        ({"methods": {"x": {"generator": "em"}}}, "Unknown unlearnable-example generator 'em'"),
        (
            {"methods": {"x": {"generator": "bayes_error_noise", "hparams": {"epsilon": -1}}}},
            "`x.epsilon`",
        ),
        ({"dataset": "imagenet21k"}, "Unknown dataset"),
        (
            {"methods": {"x": {"generator": "error_minimizing_noise", "hparams": {"stepz": 3}}}},
            r"`methods.x.hparams`: generator 'error_minimizing_noise' has no setting.*stepz.*"
            "pgd_steps",
        ),
        ({"victim": {"epochs": 0}}, "`victim.epochs` must be an integer >= 1"),
        ({"victim": {"batch_size": 2.5}}, "`victim.batch_size`"),
        (
            {"victim": {"jpeg_quality": 101}},
            r"`victim.jpeg_quality` must be an integer in \[1, 100\]",
        ),
        ({"victim": {"learning_rate": float("nan")}}, "`victim.learning_rate`"),
    ],
)
def test_bad_settings_fail_before_compute(tmp_path, override, match):
    c = config_module.get_config("tiny")
    for k, v in override.items():
        c[k] = v
    with pytest.raises(ValueError, match=match):
        experiment.run(c, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_unknown_variants_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        config_module.get_config("huge")


@pytest.mark.parametrize("variant", config_module.VARIANTS)
def test_every_config_variant_checks_and_builds(variant):
    # The config check, the data (with its data_kwargs) and the victim network: no compute.
    cfg = experiment.check_config(config_module.get_config(variant))
    ds = track_config.load_dataset(cfg)
    net = models.make_network(
        cfg["model"],
        input_shape=ds.input_shape,
        num_outputs=ds.num_outputs,
        **track_config.plain(cfg["model_kwargs"]),
    )
    assert net.input_shape == ds.input_shape and ds.num_outputs == 10
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    if variant == "cnn32":
        assert ds.input_shape == (32, 32, 1) and cfg["model"] == "cnn"
    if variant == "translated":
        assert ds.input_shape == (16, 16, 1)
        # The translated variant changes the data only: the same methods and victims.
        default = experiment.check_config(config_module.get_config())
        assert {k: v for k, v in cfg.items() if k != "data_kwargs"} == {
            k: v for k, v in default.items() if k != "data_kwargs"
        }
