"""The curated top-level namespace: every public name resolves, and is the object it names."""

import jaxunlearn as ju


def test_every_public_name_resolves():
    missing = [name for name in ju.__all__ if getattr(ju, name, None) is None]
    assert not missing


def test_top_level_names_are_the_library_objects():
    assert ju.fit is ju.train.fit
    assert ju.phases is ju.core.combinators.phases
    assert ju.make_network is ju.models.make_network
    assert ju.scenarios.__name__ == "jaxunlearn.scenarios"
    assert set(ju.rules.names()) <= set(dir(ju.rules))
