"""A seconds-long experiment config for the tests of the experiment layer."""

from experiments.configs import default


def tiny_config(**overrides):
    """The default config's ``tiny`` variant on one device, with dotted-key overrides
    (``tiny_config(**{"rules.finetune.epochs": 2})``)."""
    c = default.get_config("tiny")
    c.data_parallel = False
    for k, v in overrides.items():
        node, *path = k.split(".")
        target = c
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = v
    return c
