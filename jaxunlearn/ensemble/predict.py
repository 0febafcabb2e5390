"""The one predict path: ``[N, n, C]`` logits and ``[N, n, F]`` features of N models, cached.

Training N models is one vmapped program; so is evaluating them. A :class:`Predictor` holds one
jitted, vmapped ``apply`` per network (built once, so nothing is re-traced per call) and runs it
over batches of examples. :class:`Predictions` caches its outputs per (model group, data part),
keyed by those two names: every per-model audit of a run reads its model's row of the same
arrays, and every ensemble audit (epsilon, KLoM, U-LiRA) reads them whole.

>>> predictions = Predictions(Predictor(net), parts={"forget": x_forget})   # doctest: +SKIP
>>> predictions.add_group("oracle", oracles)                                  # [N, ...]
>>> predictions.logits("oracle", "forget").shape                              # (N, n, C)
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Network, Variables

EVAL_BATCH = 512
PAD_GRANULE = 64


def _num_models(variables: Variables) -> int:
    leaves = jax.tree.leaves(variables)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("A model group needs a leading model axis on every leaf")
    return int(np.shape(leaves[0])[0])


class Predictor:
    """Batched, vmapped inference of one network (BatchNorm in inference mode).

    Args:
      network: the functional model.
      batch_size: examples per call of the compiled program (every model sees the same batch).
    """

    def __init__(self, network: Network, *, batch_size: int = EVAL_BATCH):
        self.batch_size = check_count(batch_size, "batch_size", 1)
        self.network = network

        def logits(v, x):
            return network.apply(v, x).logits

        def outputs(v, x):
            out = network.apply(v, x)
            return out.logits, out.features

        self._logits = jax.jit(jax.vmap(logits, in_axes=(0, None)))
        self._outputs = jax.jit(jax.vmap(outputs, in_axes=(0, None)))

    def __call__(self, variables: Variables, x, *, features: bool = True):
        """``(logits [N, n, C], features [N, n, F] or None)`` as NumPy arrays.

        Args:
          variables: N models with a leading model axis.
          x: ``[n, ...]`` inputs, the same for every model.
          features: also return the penultimate features (otherwise ``None``).
        """
        count = _num_models(variables)
        x = np.asarray(x)
        fn = self._outputs if features else self._logits
        logits, feats = [], []
        for i in range(0, len(x), self.batch_size):
            chunk = x[i : i + self.batch_size]
            n = len(chunk)
            # A short last chunk is zero-padded to a power of two up to 64 rows, to a multiple
            # of 64 beyond: parts of every size then share a few compiled shapes (at most 7 +
            # batch_size / 64) while padding wastes little compute on large parts.
            granule = min(1 << (n - 1).bit_length(), PAD_GRANULE)
            padded = min(self.batch_size, -(-n // granule) * granule)
            if padded != n:
                chunk = np.concatenate([chunk, np.zeros((padded - n, *chunk.shape[1:]), x.dtype)])
            out = fn(variables, jnp.asarray(chunk))
            if features:
                logits.append(np.asarray(out[0])[:, :n])
                feats.append(np.asarray(out[1])[:, :n])
            else:
                logits.append(np.asarray(out)[:, :n])
        if not logits:
            empty = np.zeros((count, 0, self.network.num_outputs), np.float32)
            return empty, (np.zeros((count, 0, 0), np.float32) if features else None)
        return np.concatenate(logits, 1), (np.concatenate(feats, 1) if features else None)


_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def predictor_for(network: Network) -> Predictor:
    """The shared :class:`Predictor` (default batch size) of ``network``, kept as long as its
    ``apply`` function lives, so that contexts built one by one do not re-trace it."""
    if network.apply not in _PREDICTORS:
        _PREDICTORS[network.apply] = Predictor(network)
    predictor = _PREDICTORS[network.apply]
    if predictor.network != network:  # same apply, other metadata: not this network's
        return Predictor(network)
    return predictor


class Predictions:
    """Cached outputs of named model groups on named data parts.

    Args:
      predictor: the :class:`Predictor` of the network.
      parts: ``{part name: inputs [n, ...]}``; more can be added with :meth:`add_part`.
      groups: ``{group name: variables [N, ...]}``; more with :meth:`add_group`.
    """

    def __init__(
        self,
        predictor: Predictor,
        parts: Mapping[str, np.ndarray] | None = None,
        groups: Mapping[str, Variables] | None = None,
    ):
        self.predictor = predictor
        self._parts: dict[str, np.ndarray] = {}
        self._subsets: dict[str, tuple[str, np.ndarray]] = {}
        self._groups: dict[str, Variables] = {}
        self._logits: dict[tuple[str, str], np.ndarray] = {}
        self._features: dict[tuple[str, str], np.ndarray] = {}
        for name, x in (parts or {}).items():
            self.add_part(name, x)
        for name, variables in (groups or {}).items():
            self.add_group(name, variables)

    def add_part(self, name: str, x) -> None:
        """Adds the data part ``name`` (its inputs); a name is given once."""
        if name in self._parts:
            raise ValueError(f"Data part {name!r} is already defined")
        self._parts[name] = np.asarray(x)

    def add_subset(self, name: str, of: str, rows) -> None:
        """Adds the data part ``name``: rows ``rows`` of part ``of``. Its outputs are sliced from
        ``of``'s when those are computed already, and computed for the rows alone otherwise."""
        self._check_part(of)
        rows = np.asarray(rows)
        self.add_part(name, self._parts[of][rows])
        self._subsets[name] = (of, rows)

    def add_group(self, name: str, variables: Variables) -> None:
        """Adds the model group ``name`` (variables with a leading model axis)."""
        if name in self._groups:
            raise ValueError(f"Model group {name!r} is already defined")
        _num_models(variables)
        self._groups[name] = variables

    def drop_group(self, name: str) -> None:
        """Forgets model group ``name`` and its cached outputs (to free memory)."""
        self._check(name, None)
        del self._groups[name]
        for cache in (self._logits, self._features):
            for key in [k for k in cache if k[0] == name]:
                del cache[key]

    def has_group(self, name: str) -> bool:
        return name in self._groups

    def has_part(self, name: str) -> bool:
        return name in self._parts

    def variables(self, group: str) -> Variables:
        """The variables of model group ``group``."""
        self._check(group, None)
        return self._groups[group]

    def _check(self, group: str, part: str | None) -> None:
        if group not in self._groups:
            raise ValueError(f"Unknown model group {group!r}; defined: {sorted(self._groups)}")
        if part is not None:
            self._check_part(part)

    def _check_part(self, part: str) -> None:
        if part not in self._parts:
            raise ValueError(f"Unknown data part {part!r}; defined: {sorted(self._parts)}")

    def _from_superset(self, cache: dict, group: str, part: str) -> np.ndarray | None:
        if part in self._subsets:
            of, rows = self._subsets[part]
            if (group, of) in cache:
                return cache[(group, of)][:, rows]
        return None

    def logits(self, group: str, part: str) -> np.ndarray:
        """``[N, n, C]`` logits of every model of ``group`` on ``part`` (computed once)."""
        key = (group, part)
        if key not in self._logits:
            self._check(group, part)
            sliced = self._from_superset(self._logits, group, part)
            if sliced is not None:
                self._logits[key] = sliced
                return sliced
            self._logits[key], _ = self.predictor(
                self._groups[group], self._parts[part], features=False
            )
        return self._logits[key]

    def features(self, group: str, part: str) -> np.ndarray:
        """``[N, n, F]`` penultimate features of every model of ``group`` on ``part``."""
        key = (group, part)
        if key not in self._features:
            self._check(group, part)
            sliced = self._from_superset(self._features, group, part)
            if sliced is not None:
                self._features[key] = sliced
                return sliced
            logits, self._features[key] = self.predictor(self._groups[group], self._parts[part])
            # Logits read before stay what they were (no audit sees two versions of them).
            self._logits.setdefault(key, logits)
        return self._features[key]
