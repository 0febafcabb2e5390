"""What the experiments of the other tracks (ssl, learned_rule, unlearnable) share in reading a
config: plain dicts, required and known keys with defaults, and loading the dataset it names."""

from __future__ import annotations

from jaxunlearn import data as data_lib


def plain(node) -> dict:
    """A config node (``ConfigDict``, dict or ``None``) as a plain dict."""
    to_dict = getattr(node, "to_dict", None)
    return to_dict() if to_dict is not None else dict(node or {})


def with_defaults(config, required, defaults: dict, what: str) -> dict:
    """``config`` as a plain dict with ``defaults`` filled in; a ``ValueError`` naming the missing
    ``required`` keys or any key that is neither required nor defaulted (``what``: whose config)."""
    given = plain(config)
    missing = [k for k in required if k not in given]
    if missing:
        raise ValueError(f"The {what} config has no {missing}")
    unknown = sorted(set(given) - set(required) - set(defaults))
    if unknown:
        raise ValueError(f"The {what} config has unknown key(s) {unknown}")
    return {**defaults, **given}


def load_dataset(cfg: dict):
    """The dataset of ``cfg["dataset"]`` with its ``data_kwargs``, and ``data_dir`` for the TFDS
    datasets (the embedded ``digits`` and ``diabetes`` take none)."""
    kwargs = dict(plain(cfg["data_kwargs"]))
    if cfg["data_dir"] and cfg["dataset"] not in ("digits", "diabetes"):
        kwargs["data_dir"] = cfg["data_dir"]
    return data_lib.load(cfg["dataset"], **kwargs)
