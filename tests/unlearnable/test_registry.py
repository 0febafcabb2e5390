import jax
import pytest

from jaxunlearn import unlearnable


def test_every_generator_is_registered_with_its_paper():
    assert unlearnable.names() == [
        "bayes_error_noise",
        "error_minimizing_noise",
        "text_conditioned_noise",
        "ungeneralizable_examples",
        "unlearnable_clusters",
    ]
    table = unlearnable.registry.markdown_table()
    for name in unlearnable.names():
        assert f"`{name}`" in table and unlearnable.get(name).paper in table


def test_unknown_generators_list_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown unlearnable-example generator 'em'.*valid"):
        unlearnable.protect("em", None, None, None, key=jax.random.key(0))


def test_generators_that_need_a_surrogate_say_so(digits_small, tiny_net):
    x, y, _, _ = digits_small
    with pytest.raises(ValueError, match="needs `surrogate`"):
        unlearnable.protect("bayes_error_noise", tiny_net, x, y, key=jax.random.key(0))


def test_the_readme_lists_every_generator_with_its_paper():
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    readme = open(os.path.join(root, "README.md")).read()
    section = readme.split("## Unlearnable examples", 1)[1].split("\n## ", 1)[0]
    assert unlearnable.registry.markdown_table() in section, "regenerate it from the registry"
    assert "experiments/configs/unlearnable.py" in section
