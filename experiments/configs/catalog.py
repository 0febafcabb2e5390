r"""The method catalog: every registered classification rule on `digits`, both default scenarios.

    python -m experiments.main --config=experiments/configs/catalog.py --workdir=/tmp/ju_catalog

The default config's data, model, scenarios and seeds; the rules are the foundation rules plus
every entry of the `catalog_parts/` fragments (one per family of methods, each tuned for this
problem). Results come in the same `results.json` format as the default experiment.
"""

import importlib
import pkgutil

from experiments.configs import catalog_parts, default


def catalog_rules() -> dict:
    """Rule config entries of the default config and of every fragment in `catalog_parts/`."""
    rules = default.get_config().rules.to_dict()
    for module in pkgutil.iter_modules(catalog_parts.__path__):
        part = importlib.import_module(f"{catalog_parts.__name__}.{module.name}")
        for name, entry in part.RULES.items():
            if name in rules:
                raise ValueError(f"Rule {name!r} is configured twice (catalog_parts/{module.name})")
            rules[name] = entry
    return rules


# `:smoke` is not one: it keeps one scenario, and the catalog tunes entries per scenario.
VARIANTS = ("", "tiny")


def get_config(arg=None):
    if arg not in (None, *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of the catalog config; valid: 'tiny'")
    c = default.get_config(arg)
    c.rules = catalog_rules()
    if arg == "tiny":
        for rule in c.rules.values():
            if "epochs" in rule:
                rule.epochs = min(rule.epochs, 1)  # keeps an int an int (ConfigDict types)
    return c
