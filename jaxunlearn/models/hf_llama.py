"""Llama checkpoints in the Hugging Face layout: read into, and written from, the transformer.

A Hugging Face Llama directory holds ``config.json`` (``LlamaConfig``), the weights in one or
several ``*.safetensors`` files (``model.safetensors.index.json`` maps tensor names to files when
there are several) and usually ``tokenizer.json``. :func:`load_hf_llama` turns it into the
``transformer`` network of :mod:`jaxunlearn.models` and its variables; :func:`save_hf_llama`
writes the same layout back (so a fine-tuned or unlearned model, LoRA adapters merged, opens in
``transformers``). Tensor names map one to one onto our parameter paths
(``docs/language_models.md``): ``model.layers.3.mlp.down_proj.weight`` is
``params["layers"]["3"]["mlp"]["down_proj"]["kernel"]``; linear weights are stored ``(out, in)``
by PyTorch and ``(in, out)`` here, so they are transposed on the way in and out. Rotary
embeddings use Hugging Face's ``rotate_half`` layout (the two halves of each head are the pairs),
which the transformer implements too, so query and key rows are copied unpermuted.

References:
  Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models", 2023.
  Hugging Face ``transformers``, ``models/llama/modeling_llama.py`` and ``configuration_llama.py``
  (config field names and defaults).
  ``../shared/reference/lm_unlearning.md`` (why real checkpoints matter for the benchmarks).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core.types import Network, Variables

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
_ARCHITECTURE = "LlamaForCausalLM"
# Tensors some checkpoints carry that are recomputed, not learned.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def read_llama_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``transformer`` settings of the Llama checkpoint in directory ``path``.

    Reads ``config.json`` with ``LlamaConfig``'s defaults for absent fields
    (``num_key_value_heads = num_attention_heads``, ``rms_norm_eps = 1e-6``,
    ``rope_theta = 10000``, ``tie_word_embeddings = False``); the rotary base is read from
    ``rope_theta`` or, as ``transformers`` 5 writes it, ``rope_parameters["rope_theta"]``.

    Returns:
      ``make_network("transformer", ...)`` keyword arguments: ``vocab_size``, ``max_len``
      (``max_position_embeddings``), ``d_model``, ``num_layers``, ``num_heads``,
      ``num_kv_heads``, ``head_dim`` (``None``: ``hidden_size / num_attention_heads``),
      ``d_ff``, ``tie_embeddings``, ``rope_theta``, ``norm_eps``, ``pad_id`` (``pad_token_id``,
      0 when the checkpoint has none).

    Raises:
      ValueError: no ``config.json``; a ``model_type`` other than ``"llama"`` or
        ``architectures`` without ``LlamaForCausalLM``; a setting the transformer does not have
        (rotary scaling, attention or MLP biases, an activation other than SiLU).
    """
    file = os.path.join(os.fspath(path), CONFIG_FILE)
    if not os.path.isfile(file):
        raise ValueError(
            f"`path` {os.fspath(path)!r} has no {CONFIG_FILE}; load_hf_llama reads a Hugging Face "
            "model directory (config.json, *.safetensors)."
        )
    with open(file) as f:
        config = json.load(f)
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type != "llama" or (architectures and _ARCHITECTURE not in architectures):
        raise ValueError(
            f"{file} describes model_type {model_type!r} (architectures {architectures}); "
            f"load_hf_llama reads Llama checkpoints only (model_type 'llama', {_ARCHITECTURE})."
        )
    required = [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
    ]
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{file} lacks {missing}, needed to build the transformer.")
    # transformers >= 5 writes the rotary settings as rope_parameters {rope_theta, rope_type};
    # earlier versions as rope_theta and rope_scaling.
    rope = config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", "default")
    unsupported = {
        "rope_scaling": config.get("rope_scaling"),
        "rope_parameters.rope_type": None if rope_type == "default" else rope_type,
        "attention_bias": config.get("attention_bias", False),
        "mlp_bias": config.get("mlp_bias", False),
    }
    for name, value in unsupported.items():
        if value:
            raise ValueError(f"{file}: {name}={value!r} is not supported by the transformer.")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(
            f"{file}: hidden_act {act!r} is not supported (the transformer uses silu)."
        )
    num_heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim")
    pad = config.get("pad_token_id")
    return {
        "vocab_size": int(config["vocab_size"]),
        "max_len": int(config["max_position_embeddings"]),
        "d_model": int(config["hidden_size"]),
        "num_layers": int(config["num_hidden_layers"]),
        "num_heads": num_heads,
        "num_kv_heads": int(config.get("num_key_value_heads") or num_heads),
        "head_dim": None if head_dim is None else int(head_dim),
        "d_ff": int(config["intermediate_size"]),
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
        "rope_theta": float(config.get("rope_theta", rope.get("rope_theta", 10000.0))),
        "norm_eps": float(config.get("rms_norm_eps", 1e-6)),
        "pad_id": 0 if pad is None else int(pad),
    }


def hf_name(path: tuple[str, ...]) -> str:
    """The Hugging Face tensor name of the parameter at ``path`` (keys of ``params``).

    >>> hf_name(("layers", "3", "mlp", "down_proj", "kernel"))
    'model.layers.3.mlp.down_proj.weight'
    """
    module = ".".join(path[:-1])
    return f"{module}.weight" if path[0] == "lm_head" else f"model.{module}.weight"


def _is_linear(path: tuple[str, ...]) -> bool:
    # PyTorch's nn.Linear stores (out, in); flax's kernels are (in, out). Embeddings and norm
    # scales are stored the same way by both.
    return path[-1] == "kernel"


def _param_paths(network: Network) -> list[tuple[tuple[str, ...], jax.ShapeDtypeStruct]]:
    shapes = jax.eval_shape(network.init, jax.random.key(0))["params"]
    flat, _ = jax.tree_util.tree_flatten_with_path(shapes)
    return [(tuple(str(k.key) for k in p), leaf) for p, leaf in flat]


def _tensor_files(path: str) -> dict[str, str]:
    """``{tensor name: safetensors file}`` of the checkpoint in directory ``path``."""
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return {name: os.path.join(path, file) for name, file in weight_map.items()}
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise ValueError(
            f"`path` {path!r} has no *.safetensors weights (pytorch_model.bin is not read; "
            "re-save the model with safe_serialization=True)."
        )
    from safetensors import safe_open

    names = {}
    for file in files:
        with safe_open(os.path.join(path, file), framework="np") as f:
            names.update({name: os.path.join(path, file) for name in f.keys()})
    return names


def load_hf_llama(
    path: str | os.PathLike,
    *,
    dtype: Any = jnp.float32,
    max_len: int | None = None,
    pad_id: int | None = None,
    shardings: Any = None,
) -> tuple[Network, Variables]:
    """Loads a Llama checkpoint from a local Hugging Face directory.

    Args:
      path: directory with ``config.json`` and ``*.safetensors`` (plus
        ``model.safetensors.index.json`` when the weights are split over several files).
      dtype: dtype of the parameters and of the network's computation (``float32`` by default;
        ``bfloat16`` or ``float16`` halve memory).
      max_len: context length of the network (its ``input_shape``); the checkpoint's
        ``max_position_embeddings`` by default (often far longer than the sequences used).
      pad_id: the token id masked as padding; ``pad_token_id`` of ``config.json`` by default, 0
        when it has none (Llama checkpoints usually have none: choose an id your token data pads
        with and never uses otherwise, since the network masks it as an attention key).
      shardings: optional placement of the parameters: a pytree of
        :class:`jax.sharding.Sharding` shaped like the variables, or a function ``network ->``
        such a pytree (e.g. ``lambda net: train.sharding.param_shardings(net, mesh)``). Every
        tensor is placed with its sharding as it is read, so a model larger than one device
        loads.

    Returns:
      ``(network, variables)``: ``make_network("transformer", ...)`` built from the config and
      ``{"params": ..., "batch_stats": {}}`` holding the checkpoint's weights. The network's
      ``spec`` records the config; :func:`tokenizer_file` gives the checkpoint's tokenizer.

    Raises:
      ValueError: a missing ``config.json``, a config of another architecture (see
        :func:`read_llama_config`), no safetensors files, a tensor the network needs that the
        checkpoint lacks, a tensor the network does not have, or a tensor of the wrong shape;
        each names the file or tensor.

    >>> network, variables = load_hf_llama("/models/llama-3.2-1b", max_len=512)  # doctest: +SKIP
    >>> logits = network.apply(variables, tokens).logits  # doctest: +SKIP
    """
    from safetensors import safe_open

    from jaxunlearn.models import make_network

    path = os.fspath(path)
    settings = read_llama_config(path)
    if max_len is not None:
        settings["max_len"] = max_len
    if pad_id is not None:
        settings["pad_id"] = pad_id
    settings["dtype"] = np.dtype(dtype).name
    network = make_network("transformer", **settings)
    files = _tensor_files(path)
    expected = _param_paths(network)
    wanted = {hf_name(p) for p, _ in expected}
    unknown = sorted(
        name
        for name in files
        if name not in wanted
        and not name.endswith(_IGNORED_SUFFIXES)
        # A tied checkpoint may still store the (shared) output matrix.
        and not (name == "lm_head.weight" and settings["tie_embeddings"])
    )
    if unknown:
        raise ValueError(
            f"Checkpoint {path!r} has tensors the Llama network does not: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''} (is num_hidden_layers in config.json right?)."
        )
    if callable(shardings):
        shardings = shardings(network)
    leaf_shardings = (
        None if shardings is None else _sharding_by_path(shardings["params"], len(expected))
    )
    params: dict = {}
    handles: dict[str, Any] = {}
    try:
        for p, leaf in expected:
            name = hf_name(p)
            if name not in files:
                raise ValueError(f"Checkpoint {path!r} lacks the tensor {name!r}.")
            file = files[name]
            if file not in handles:
                handles[file] = safe_open(file, framework="np").__enter__()
            tensor = handles[file].get_tensor(name)
            want = tuple(reversed(leaf.shape)) if _is_linear(p) else tuple(leaf.shape)
            if tuple(tensor.shape) != want:
                raise ValueError(
                    f"Tensor {name!r} in {file} has shape {tuple(tensor.shape)}; config.json "
                    f"implies {want}."
                )
            array = np.asarray(tensor.T if _is_linear(p) else tensor).astype(np.dtype(dtype))
            if leaf_shardings is not None:
                value = jax.device_put(array, leaf_shardings[p])
            else:
                value = jnp.asarray(array)
            node = params
            for key in p[:-1]:
                node = node.setdefault(key, {})
            node[p[-1]] = value
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    return network, {"params": params, "batch_stats": {}}


def _sharding_by_path(tree, count: int) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )
    if len(flat) != count:
        raise ValueError(
            f"`shardings` has {len(flat)} parameter entries; the network has {count} parameters."
        )
    return {tuple(str(k.key) for k in p): s for p, s in flat}


def tokenizer_file(path: str | os.PathLike) -> str | None:
    """The checkpoint's ``tokenizer.json`` (for :class:`jaxunlearn.data.tokenizer.Tokenizer`),
    or ``None`` when the directory has none."""
    file = os.path.join(os.fspath(path), TOKENIZER_FILE)
    return file if os.path.isfile(file) else None


def llama_config(network: Network) -> dict[str, Any]:
    """The Hugging Face ``config.json`` contents (``LlamaConfig``) of a transformer network."""
    spec = network.spec
    if network.name != "transformer" or spec is None:
        raise ValueError(
            f"`network` must be the transformer (with its config in Network.spec); got "
            f"{network.name!r}."
        )
    return {
        "architectures": [_ARCHITECTURE],
        "model_type": "llama",
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_len,
        "hidden_size": spec.d_model,
        "intermediate_size": spec.d_ff,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(spec.norm_eps),
        "rope_theta": float(spec.rope_theta),
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": spec.tie_embeddings,
        "pad_token_id": spec.pad_id,
        "torch_dtype": "float32",
    }


def save_hf_llama(
    path: str | os.PathLike,
    network: Network,
    variables: Variables,
    *,
    tokenizer_json: Any = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Writes ``variables`` of the transformer ``network`` as a Hugging Face Llama directory.

    The inverse of :func:`load_hf_llama`: ``config.json`` from ``network.spec``, float32 weights
    under their Hugging Face names in ``model.safetensors`` (or, with ``max_shard_bytes``, in
    ``model-0000i-of-0000n.safetensors`` files and ``model.safetensors.index.json``), loadable by
    ``transformers.LlamaForCausalLM.from_pretrained``. Adapters (LoRA) must be merged into the
    variables first.

    Args:
      path: output directory (created; existing files of the same names are replaced).
      network: the ``transformer`` network the variables belong to.
      variables: its variables (``{"params": ..., ...}``).
      tokenizer_json: a ``tokenizer.json`` file to copy beside the weights, or an object with a
        ``save(path)`` method (a ``tokenizers.Tokenizer`` or the library's tokenizer); none if
        ``None``.
      max_shard_bytes: split the weights over several files of at most about this many bytes.

    Raises:
      ValueError: ``network`` is not the transformer, or ``variables`` do not fit it (naming the
        parameter).
    """
    from safetensors.numpy import save_file

    config = llama_config(network)
    path = os.fspath(path)
    expected = _param_paths(network)
    tensors: dict[str, np.ndarray] = {}
    for p, leaf in expected:
        node = variables["params"]
        for key in p:
            if not isinstance(node, Mapping) or key not in node:
                raise ValueError(f"`variables` lack the parameter {'.'.join(p)!r}.")
            node = node[key]
        array = np.asarray(jax.device_get(node), dtype=np.float32)
        if array.shape != tuple(leaf.shape):
            raise ValueError(
                f"`variables` parameter {'.'.join(p)!r} has shape {array.shape}; the network's is "
                f"{tuple(leaf.shape)}."
            )
        tensors[hf_name(p)] = np.ascontiguousarray(array.T if _is_linear(p) else array)

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)
    groups = _shard_groups(tensors, max_shard_bytes)
    metadata = {"format": "pt"}  # transformers refuses safetensors files without it
    if len(groups) == 1:
        save_file(groups[0], os.path.join(path, "model.safetensors"), metadata=metadata)
    else:
        weight_map = {}
        for i, group in enumerate(groups):
            file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
            save_file(group, os.path.join(path, file), metadata=metadata)
            weight_map.update(dict.fromkeys(group, file))
        total = sum(t.nbytes for t in tensors.values())
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if tokenizer_json is not None:
        target = os.path.join(path, TOKENIZER_FILE)
        if hasattr(tokenizer_json, "save"):
            tokenizer_json.save(target)
        elif os.path.abspath(os.fspath(tokenizer_json)) != os.path.abspath(target):
            shutil.copyfile(os.fspath(tokenizer_json), target)


def _shard_groups(tensors: dict[str, np.ndarray], max_bytes: int | None) -> list[dict]:
    if max_bytes is None:
        return [tensors]
    if max_bytes < 1:
        raise ValueError(f"`max_shard_bytes` must be positive; got {max_bytes}.")
    groups: list[dict] = [{}]
    size = 0
    for name, tensor in tensors.items():
        if groups[-1] and size + tensor.nbytes > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = tensor
        size += tensor.nbytes
    return groups
