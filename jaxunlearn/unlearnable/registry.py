"""The registry of unlearnable-example generators: names, papers, defaults.

Every generator has the signature ``generator(network, x, y, *, key, **hparams) -> Protection``;
those marked ``needs_surrogate`` also take ``surrogate=`` (variables of ``network`` trained on the
clean data), and those marked ``mix_aware`` take ``protect=`` (the mask of protected rows) and are
generated once per mix ratio by the evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxunlearn.core.checks import keyword_names
from jaxunlearn.unlearnable.bayes_error import bayes_error_noise
from jaxunlearn.unlearnable.clusters import unlearnable_clusters
from jaxunlearn.unlearnable.error_minimizing import error_minimizing_noise
from jaxunlearn.unlearnable.text_conditioned import text_conditioned_noise
from jaxunlearn.unlearnable.ungeneralizable import ungeneralizable_examples


@dataclasses.dataclass(frozen=True)
class GeneratorInfo:
    """What the registry knows about a generator.

    Attributes:
      name: registry name.
      fn: ``fn(network, x, y, *, key, **hparams) -> Protection``.
      paper: short citation shown in the README table.
      defaults: the paper's defaults, as a short text for the README table.
      needs_surrogate: takes ``surrogate=`` trained variables.
      mix_aware: takes ``protect=`` (the rows to perturb); optimised for the mixed setting.
      label_agnostic: never reads the labels.
    """

    name: str
    fn: Callable
    paper: str
    defaults: str
    needs_surrogate: bool = False
    mix_aware: bool = False
    label_agnostic: bool = False


_REGISTRY: dict[str, GeneratorInfo] = {}


def register(info: GeneratorInfo) -> GeneratorInfo:
    """Adds a generator (the name must be new)."""
    if info.name in _REGISTRY:
        raise ValueError(f"Generator {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def names() -> list[str]:
    """Names of every registered generator."""
    return sorted(_REGISTRY)


def get(name: str) -> GeneratorInfo:
    """The generator ``name``, or a ``ValueError`` listing the valid names."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown unlearnable-example generator {name!r}; valid: {names()}")
    return _REGISTRY[name]


# Arguments every generator receives from the caller, not from a config's hyperparameters.
_CONTEXT = ("network", "x", "y", "key", "surrogate", "protect")


def check_hparams(name: str, hparams, *, where: str = "hparams") -> None:
    """Rejects hyperparameter names that generator ``name`` does not take, listing the valid ones
    (before any compute: the generator would fail only when called)."""
    valid = keyword_names(get(name).fn, exclude=_CONTEXT)
    if valid is None:
        return
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(f"{where}: generator {name!r} has no setting(s) {unknown}; valid: {valid}")


def protect(name: str, network, x, y, *, key, surrogate=None, protect=None, **hparams):
    """Runs generator ``name`` (see the module doc for ``surrogate`` and ``protect``)."""
    info = get(name)
    kwargs = dict(hparams)
    if info.needs_surrogate:
        if surrogate is None:
            raise ValueError(
                f"Generator {name!r} needs `surrogate` variables trained on clean data"
            )
        kwargs["surrogate"] = surrogate
    if info.mix_aware and protect is not None:
        kwargs["protect"] = protect
    return info.fn(network, x, y, key=key, **kwargs)


def markdown_table() -> str:
    """The README's table: generator, paper, defaults."""
    lines = ["| generator | paper | defaults |", "|---|---|---|"]
    lines += [f"| `{i.name}` | {i.paper} | {i.defaults} |" for i in _REGISTRY.values()]
    return "\n".join(lines)


register(
    GeneratorInfo(
        "error_minimizing_noise",
        error_minimizing_noise,
        "Huang et al., Unlearnable Examples, ICLR 2021",
        "mode samplewise / classwise; L-inf eps 8/255, step eps/10; 20 / 1 PGD steps; "
        "10 surrogate steps per round; stop when surrogate error < 0.01 / 0.1",
    )
)
register(
    GeneratorInfo(
        "bayes_error_noise",
        bayes_error_noise,
        "Zhang et al., Towards Provably Unlearnable Examples via Bayes Error Optimisation, "
        "AAAI 2026 (arXiv 2511.08191)",
        "L-inf (or L2) eps 8/255; 20 PGA steps of 2.5 eps/20; leave-one-out RBF kernel "
        "estimate on surrogate features, sigma by leave-one-out likelihood; batch 512",
        needs_surrogate=True,
        mix_aware=True,
    )
)
register(
    GeneratorInfo(
        "unlearnable_clusters",
        unlearnable_clusters,
        "Zhang et al., Unlearnable Clusters, CVPR 2023",
        "k-means p = 10 on surrogate features; L-inf eps 16/255; one conv generator per "
        "cluster from fixed noise; KL toward centroid (i + 1) mod p; Adam 1e-3, 200 steps",
        needs_surrogate=True,
        label_agnostic=True,
    )
)
register(
    GeneratorInfo(
        "text_conditioned_noise",
        text_conditioned_noise,
        "T2UE's zero-contact idea: Ma, Huang et al., arXiv 2508.03091 (no CLIP: text encoder "
        "trained here)",
        "class-wise, from class descriptions only (hashed character trigrams, encoder + linear "
        "generator); L-inf eps 8/255; min-min on uniform-noise proxies, never the data; Adam "
        "1e-2, 300 steps",
    )
)
register(
    GeneratorInfo(
        "ungeneralizable_examples",
        ungeneralizable_examples,
        "Ye & Wang, Ungeneralizable Examples, CVPR 2024 (arXiv 2404.14016; no CLIP: shared "
        "feature space = surrogate trained here)",
        "authorised network (default: its initialisation); gradient matching + feature distance "
        "(maximised) + undistillation (weights 1 / 1 / 0.1, T = 4); L-inf eps 8/255; 20 signed "
        "PGD steps of eps/10 per batch of 128",
        needs_surrogate=True,
    )
)
