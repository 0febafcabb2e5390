"""The README tells the truth: quickstart shape, every rule, audit and config is listed."""

import os
import re

from jaxunlearn import audit, rules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def test_quickstart_has_exactly_two_commands():
    section = README.split("## Quickstart", 1)[1]
    block = re.search(r"```[^\n]*\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "experiments.main" in commands[0] and "pytest" in commands[1]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "pytest -n 2 tests" in ci and "pytest -n 2 tests" in commands[1]


def test_every_rule_is_in_the_methods_table():
    table = README.split("## Methods", 1)[1].split("\n## ", 1)[0]
    assert rules.registry.markdown_table() in table, "regenerate the table from the registry"
    for name in rules.names():
        assert f"`{name}`" in table


def test_every_audit_is_explained():
    section = README.split("## Audits", 1)[1].split("\n## ", 1)[0]
    for name in audit.names() + audit.ensemble_names():
        assert f"`{name}`" in section, name


def test_every_config_is_listed():
    for name in os.listdir(os.path.join(ROOT, "experiments", "configs")):
        if name.endswith(".py") and not name.startswith("__"):
            assert f"experiments/configs/{name}" in README, name
