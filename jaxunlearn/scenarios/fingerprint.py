"""Fingerprints: which config fields determine each artefact and record, and whether they changed.

Every artefact (the originals, a scenario's oracles, its U-LiRA shadows) and every records file
(one per scenario and method) is stored with the *fields* that determine it and their digest.
A rerun reuses what is stored only when the digest matches; otherwise it recomputes it and says
which fields changed. The fields are exactly what the result depends on:

* ``original``: the data (``dataset``, ``data_kwargs``), the model (``model``, ``model_kwargs``),
  the training recipe (the ``retrain`` rule's resolved entry; ``chunk_size`` only groups steps),
  the resolved ``augmentation`` of every training batch, ``root_seed``, ``seeds`` (the
  ensemble's size: the checkpoint holds every model), ``originals`` (one per run or one shared)
  and the code versions (jaxunlearn, jax);
* ``oracle`` of a scenario: the same, with the scenario's forget spec, ``forget_seed`` and the
  ``retrain`` entry as resolved for the scenario (``per_scenario`` merged);
* ``shadows`` of a scenario: data, model, augmentation, spec, training recipe, the U-LiRA
  shadow count and targets, ``root_seed``;
* records of (scenario, method): the fields of the originals and oracles (every audit compares
  with them), the rule's entry as resolved for the scenario (defaults filled), the audits, the
  ensemble audits (with the shadows' fields for a rule U-LiRA audits) and ``seeds``.

So a changed training recipe recomputes the originals, the oracles and every record, and a
changed rule hyperparameter only that rule's records. Pure functions of a :class:`Plan`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from jaxunlearn.scenarios.plan import ENTRY_DEFAULTS, ORIGINAL, RETRAIN, Plan, retrain_entry


def versions() -> dict[str, str]:
    """The versions of the code whose numbers a result depends on."""
    import jax

    import jaxunlearn

    return {"jaxunlearn": jaxunlearn.__version__, "jax": jax.__version__}


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON values (tuples as lists, keys as strings, numbers as numbers), so
    that a config read from a file, a flag or a dict gives the same fields."""
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if hasattr(obj, "to_dict"):
        return canonical(obj.to_dict())
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):  # 1.0 and 1 (an epoch count, a flag's value) are the same run
        return int(obj) if obj.is_integer() and abs(obj) < 2**53 else obj
    try:  # numpy scalars
        return canonical(obj.item())
    except AttributeError:
        return str(obj)


def digest(fields: Mapping) -> str:
    """The SHA-256 (hex, 16 characters) of ``fields`` in canonical JSON."""
    text = json.dumps(canonical(fields), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changes(old: Mapping | None, new: Mapping, *, limit: int = 3) -> str:
    """The fields that differ between ``old`` and ``new`` as ``a.b: old -> new`` (at most
    ``limit``, then a count)."""
    if old is None:
        return "no fingerprint stored (written by an earlier version)"
    a, b = _flat(canonical(old)), _flat(canonical(new))
    diffs = [
        f"{k}: {_short(a.get(k, '(unset)'))} -> {_short(b.get(k, '(unset)'))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, _UNSET) != b.get(k, _UNSET)
    ]
    if not diffs:
        return "fingerprint differs"
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


_UNSET = object()


def _flat(obj, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------------------------------
# The fields of each artefact and record.

# What data the runner gives a rule for a given config entry (its index sets, validation parts, row
# indices: ``plan.rule_index``). Raised when that changes, so records computed the old way are not
# restored as if they were current. 2: UNSIR's per-class retain subsample, bad teacher's 30% of
# retain per epoch, the merging rules' validation parts, amnesiac's per-row labels.
RULE_DATA_VERSION = 2


def _common(p: Plan) -> dict:
    return {
        "data": {"dataset": p.sources["dataset"], "data_kwargs": p.sources["data_kwargs"]},
        "model": {"model": p.sources["model"], "model_kwargs": p.sources["model_kwargs"]},
        "augmentation": p.augmentation,
        "root_seed": p.root_seed,
        "versions": versions(),
    }


def _scenario(p: Plan, scenario: str) -> dict:
    spec = p.scenarios[scenario]
    return {
        "kind": spec.kind,
        "fraction": spec.fraction,
        "count": spec.count,
        "classes": list(spec.classes),
        "forget_seed": p.forget_seed,
    }


def _recipe(p: Plan, entry: Mapping | None = None) -> dict:
    entry = retrain_entry(p.train, {}) if entry is None else entry
    return resolved_entry(entry)


def resolved_entry(entry: Mapping) -> dict:
    """A rule entry with :data:`ENTRY_DEFAULTS` filled in (an explicit default and an absent
    key are the same run); its ``note`` (a comment for the table) changes no result."""
    entry = {**ENTRY_DEFAULTS, **dict(entry)}
    entry.pop("note", None)
    return canonical(entry)


def original_fields(p: Plan) -> dict:
    """The fields that determine the N originals."""
    return {**_common(p), "train": _recipe(p), "seeds": p.seeds, "originals": p.originals}


def oracle_fields(p: Plan, scenario: str) -> dict:
    """The fields that determine the N oracles of ``scenario``."""
    return {
        **_common(p),
        "scenario": _scenario(p, scenario),
        "train": _recipe(p, p.entry(scenario, RETRAIN)),
        "seeds": p.seeds,
    }


def shadow_fields(p: Plan, scenario: str) -> dict:
    """The fields that determine U-LiRA's shadow models of ``scenario``."""
    return {
        **_common(p),
        "scenario": _scenario(p, scenario),
        "train": _recipe(p),
        "ulira": {"shadows": p.ulira["shadows"], "targets": p.ulira["targets"]},
    }


def record_fields(p: Plan, scenario: str, method: str) -> dict:
    """The fields that determine the records of ``method`` on ``scenario``."""
    fields: dict[str, Any] = {
        "original": original_fields(p),
        "oracle": oracle_fields(p, scenario),
        "audits": list(p.audits),
        "ensemble_audits": list(p.ensemble_audits),
        "seeds": p.seeds,
    }
    if method not in (ORIGINAL, RETRAIN):
        fields["rule"] = {
            "name": method,
            **resolved_entry(p.entry(scenario, method)),
            "data_version": RULE_DATA_VERSION,
        }
    ulira = p.ulira
    if ulira and scenario in ulira["scenarios"] and method not in (RETRAIN,):
        if method == ORIGINAL or method in ulira["rules"]:
            fields["shadows"] = shadow_fields(p, scenario)
    return fields
