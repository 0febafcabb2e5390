"""Label-Agnostic Forgetting (LAF): supervision-free unlearning through the representation.

LAF never reads labels (unless the optional head repair is switched on). Its three stages are
phases of one rule (:func:`~jaxunlearn.core.combinators.phases`), each handing its state to the
next:

1. **Density models.** Two small VAEs are fitted to the extractor's embeddings (the model's
   penultimate ``Outputs.features``) of the retain data (``retain_vae``) and of the forget data
   (``forget_vae``), with loss ``sum-MSE / B + 0.025 KL`` and Adam (lr 1e-3). The model itself is
   left unchanged during this stage.
2. **Extractor unlearning**, alternating two Adam steps per update on the extractor (all
   parameters except the head subtree ``params[head_key]``):

   - ``L_UE = g(retain_vae(e_r), e_r) - g(forget_vae(e_f), e_f)`` with
     ``g(e', e) = sum_n exp(m_n / (m_n + 1))`` and ``m_n = ||e'_n - e_n||^2``: retain embeddings
     stay where the retain VAE reconstructs them while forget embeddings are pushed off the
     forget VAE's manifold;
   - ``L_RA = sum_n log(exp(c_r,n) / sum_m exp(c_f,m / tau))`` with ``c = 1 - cos(e, e_teacher)``
     against the frozen original: retain embeddings are pulled back to the original's, forget
     embeddings pushed away from theirs.

3. **Head repair** (only with ``repair=True``, the one use of labels): the head is fine-tuned with
   cross-entropy on retain data while the extractor stays fixed.

The VAEs are tiny pure-JAX MLPs held as parameter dicts in the rule state, with their optimizer
states. Their decoder ends in a sigmoid as in the reference (``Model.py::CNN_VAE_Decoder``,
``ResNet_VAE_Decoder``); ``decoder_output="linear"`` drops it (this library's earlier choice).

The embedding. The reference's models return as embedding the output of a linear layer
(``fc1``) that no activation follows, and classify it with a further linear head. The functional
view of our models exposes only ``Outputs.features``, the head's input, which the built-in MLP
and CNN take *after* a ReLU (ResNet-18: the pooled output of a ReLU block); their pre-activation
is not returned, so this rule reads ``Outputs.features`` (the default ``embedding=None``). Pass
``embedding=fn``, ``fn(apply, variables, x, train) -> [batch, dim]``, to use another
representation, e.g. the last dense layer's pre-activation of a model that returns it in
``Outputs.hidden``. A sigmoid decoder reconstructs embeddings only within (0, 1): as in the
reference, embeddings outside that range keep a reconstruction error, which ``L_UE`` bounds.

Further deviations: the reference's notebook fits the "retain" VAE on the whole training set,
ours on the retain set as the paper describes; and the stages are fractions of one stream of
updates (each update gets one forget and one retain batch) instead of epoch loops.

References:
  Shen et al., "Label-Agnostic Forgetting: A Supervision-Free Unlearning in Deep Models",
  ICLR 2024 (code: ShaofeiShen768/LAF; ``Train.py::vae_loss_function``,
  ``VUnlearning.py::extractor_unlearning``, ``hyperparameter.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import optim
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.combinators import phases
from jaxunlearn.core.rule import optimizer_step
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import part_loss

OptimizerSpec = optax.GradientTransformation | Mapping | None

# ---------------------------------------------------------------------------------------------
# A tiny VAE over embeddings
# ---------------------------------------------------------------------------------------------


def _linear_init(key: Array, fan_in: int, fan_out: int) -> dict:
    # PyTorch's nn.Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the reference VAEs use.
    bound = 1.0 / math.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
        "b": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
    }


def init_vae(
    key: Array, input_dim: int, *, hidden: Sequence[int] = (128, 32), latent_dim: int = 8
) -> dict:
    """Parameters of an MLP VAE ``input -> hidden -> (mu, logvar) -> reversed hidden -> input``."""
    enc_sizes = [input_dim, *hidden]
    dec_sizes = [latent_dim, *reversed(hidden), input_dim]
    keys = iter(jax.random.split(key, len(enc_sizes) + len(dec_sizes)))
    return {
        "encoder": {
            str(i): _linear_init(next(keys), a, b)
            for i, (a, b) in enumerate(zip(enc_sizes[:-1], enc_sizes[1:], strict=True))
        },
        "mu": _linear_init(next(keys), enc_sizes[-1], latent_dim),
        "logvar": _linear_init(next(keys), enc_sizes[-1], latent_dim),
        "decoder": {
            str(i): _linear_init(next(keys), a, b)
            for i, (a, b) in enumerate(zip(dec_sizes[:-1], dec_sizes[1:], strict=True))
        },
    }


def _dense(layer: dict, x: Array) -> Array:
    return x @ layer["w"] + layer["b"]


DECODER_OUTPUTS = ("sigmoid", "linear")


def apply_vae(
    params: dict, x: Array, noise: Array, output: str = "sigmoid"
) -> tuple[Array, Array, Array]:
    """``(reconstruction, mu, logvar)`` of ``x``, decoding the latent ``mu + sigma * noise``.

    ``noise`` is standard normal, ``[batch, latent_dim]`` (the reparameterisation sample);
    ``output`` is the decoder's last activation: ``"sigmoid"`` (the reference's
    ``torch.sigmoid``) or ``"linear"`` (none).
    """
    h = x
    for i in range(len(params["encoder"])):
        h = jax.nn.relu(_dense(params["encoder"][str(i)], h))
    mu, logvar = _dense(params["mu"], h), _dense(params["logvar"], h)
    h = mu + jnp.exp(0.5 * logvar) * noise
    n = len(params["decoder"])
    for i in range(n):
        h = _dense(params["decoder"][str(i)], h)
        if i < n - 1:
            h = jax.nn.relu(h)
    if output == "sigmoid":
        h = jax.nn.sigmoid(h)
    elif output != "linear":
        raise ValueError(f"Unknown decoder output {output!r}; valid: {DECODER_OUTPUTS}")
    return h, mu, logvar


def vae_loss(
    params: dict, x: Array, noise: Array, kl_weight: float = 0.025, output: str = "sigmoid"
) -> Array:
    """LAF's VAE loss: summed squared error / batch + ``kl_weight`` * KL / batch."""
    recon, mu, logvar = apply_vae(params, x, noise, output)
    batch = x.shape[0]
    mse = jnp.sum(jnp.square(recon - x)) / batch
    kl = -0.5 * jnp.sum(logvar + 1.0 - jnp.square(mu) - jnp.exp(logvar)) / batch
    return mse + kl_weight * kl


# ---------------------------------------------------------------------------------------------
# LAF's extractor losses
# ---------------------------------------------------------------------------------------------


def reconstruction_energy(reconstruction: Array, embedding: Array) -> Array:
    """``g(e', e) = sum_n exp(m_n / (m_n + 1))`` with ``m_n = ||e'_n - e_n||^2`` (bounded in
    ``[1, e)`` per example)."""
    m = jnp.sum(jnp.square(reconstruction - embedding), axis=-1)
    return jnp.sum(jnp.exp(m / (m + 1.0)))


def _cosine_distance(a: Array, b: Array) -> Array:
    # torch.nn.CosineEmbeddingLoss with target 1: 1 - cos, with its epsilon on the squared norms.
    eps = 1e-12
    num = jnp.sum(a * b, axis=-1)
    den = jnp.sqrt((jnp.sum(a * a, axis=-1) + eps) * (jnp.sum(b * b, axis=-1) + eps))
    return 1.0 - num / den


def representation_alignment(
    retain_e: Array,
    retain_teacher: Array,
    forget_e: Array,
    forget_teacher: Array,
    temperature: float,
) -> Array:
    """``L_RA = sum_n log(exp(c_r,n) / sum_m exp(c_f,m / tau))``, ``c = 1 - cos(e, e_teacher)``."""
    c_r = _cosine_distance(retain_e, retain_teacher)
    c_f = _cosine_distance(forget_e, forget_teacher)
    return jnp.sum(c_r - jax.nn.logsumexp(c_f / temperature))


# ---------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------


class VAEState(NamedTuple):
    """State of LAF's first phase (fitting the density models).

    Attributes:
      vaes: ``{"retain": vae params, "forget": vae params}``.
      opt_state: the VAEs' optimizer state.
    """

    vaes: dict
    opt_state: PyTree


class ExtractorState(NamedTuple):
    """State of LAF's second phase (extractor unlearning).

    Attributes:
      vaes: the fitted VAEs, handed over by the first phase (frozen).
      ue_opt_state: the extractor's optimizer state for ``L_UE``.
      ra_opt_state: the extractor's optimizer state for ``L_RA``.
      reference: the frozen original variables (the teacher of ``L_RA``; the first phase leaves
        the model unchanged, so the model this phase starts from is the original).
    """

    vaes: dict
    ue_opt_state: PyTree
    ra_opt_state: PyTree
    reference: Variables


class HeadRepairState(NamedTuple):
    """State of LAF's optional third phase (head repair).

    Attributes:
      opt_state: the head's optimizer state.
    """

    opt_state: PyTree


def _feature_dim(head: PyTree) -> int:
    for leaf in jax.tree.leaves(head):
        if leaf.ndim == 2:
            return int(leaf.shape[0])
    raise ValueError(
        "label_agnostic_forgetting cannot infer the feature size from the head "
        "(no 2-D kernel); pass `feature_dim`"
    )


def _flat_adam(optimizer: OptimizerSpec, learning_rate: float) -> optax.GradientTransformation:
    """``optim.resolve`` over the reference Adam; a resolved one runs on one flat vector.

    ``optax.flatten`` runs each of these small optimizers on one concatenated vector: the same
    arithmetic, a fraction of the XLA compile time of per-leaf updates. A given
    ``optax.GradientTransformation`` is used as it is.
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=optim.REFERENCE_ADAM)
    return opt if isinstance(optimizer, optax.GradientTransformation) else optax.flatten(opt)


@registry.rule(
    "label_agnostic_forgetting",
    parts=("forget", "retain"),
    paper="Shen et al., Label-Agnostic Forgetting, ICLR 2024",
    needs_labels=False,
    retain_labels=False,
    label_hparams=("repair",),
    cost="medium",
    task="any",
    sweepable=(
        "vae_learning_rate",
        "kl_weight",
        "ue_learning_rate",
        "ra_learning_rate",
        "temperature",
        "repair_learning_rate",
    ),
)
def label_agnostic_forgetting(
    apply: Callable,
    *,
    num_steps: int,
    head_key: str = "head",
    latent_dim: int = 8,
    vae_hidden: Sequence[int] = (128, 32),
    vae_learning_rate: float = 1e-3,
    kl_weight: float = 0.025,
    vae_fraction: float = 1.0 / 3.0,
    ue_learning_rate: float = 5e-5,
    ra_learning_rate: float = 1e-4,
    temperature: float = 20.0,
    repair: bool = False,
    repair_fraction: float = 0.2,
    repair_learning_rate: float = 1e-3,
    feature_dim: int | None = None,
    decoder_output: str = "sigmoid",
    embedding: Callable | None = None,
    train_mode: bool = False,
    vae_optimizer: OptimizerSpec = None,
    ue_optimizer: OptimizerSpec = None,
    ra_optimizer: OptimizerSpec = None,
    repair_optimizer: OptimizerSpec = None,
) -> UnlearningRule:
    """LAF: VAE density models of the embeddings, then label-free extractor unlearning.

    Schedule: ``phases((n_vae, fit VAEs), (n_ue, unlearn extractor)[, (None, repair head)])``
    with ``n_vae = round(vae_fraction * num_steps)`` (at least 1, at most ``num_steps - 1``;
    the reference runs 10 VAE epochs before 20 unlearning epochs, hence 1/3). The VAE phase
    leaves the variables unchanged; the extractor phase receives the fitted VAEs (the
    ``previous=`` hand-off) and alternates the ``L_UE`` and ``L_RA`` optimizer steps on the
    extractor; with ``repair=True`` the last ``round(repair_fraction * num_steps)`` updates
    (at least 1) fine-tune the head on retain labels instead. The VAEs are drawn at ``init``
    from ``fold_in(key, 0)``.

    Labels: with ``repair=False`` (the default) the rule reads only ``batch[...]["x"]``, so it
    gives the same result whatever the labels are; ``repair=True`` is the only use of labels
    (retain labels, never forget labels).

    Args:
      apply: the model's functional ``apply``; ``Outputs.features`` must be the head's input.
      num_steps: total number of updates (given by the registry).
      head_key: key of the classifier head in ``variables["params"]``; everything else is the
        extractor.
      latent_dim: VAE latent size (reference: 8 for the MNIST CNN, 16 for ResNets).
      vae_hidden: VAE encoder hidden sizes (the decoder mirrors them); reference ``(128, 32)``.
      vae_learning_rate: learning rate of the VAEs (reference 1e-3).
      kl_weight: weight of the VAEs' KL term (reference 0.025).
      vae_fraction: fraction of the updates spent fitting the VAEs, in (0, 1).
      ue_learning_rate: learning rate of ``L_UE`` (reference 5e-5 for the MNIST CNN).
      ra_learning_rate: learning rate of ``L_RA`` (reference 1e-4 for the MNIST CNN).
      temperature: ``tau`` of ``L_RA`` (reference 20 for class and noisy-label forgetting, 5 for
        random forgetting on MNIST).
      repair: fine-tune the head with retain cross-entropy at the end (uses labels).
      repair_fraction: fraction of the updates given to the repair, in (0, 1), with ``repair``.
      repair_learning_rate: learning rate of the repair (not given in the reference
        hyperparameters; our choice).
      feature_dim: embedding size; inferred from the head's kernel when ``None``.
      decoder_output: ``"sigmoid"`` (the reference's decoder) or ``"linear"``.
      embedding: ``fn(apply, variables, x, train) -> [batch, dim]``, the representation the VAEs
        model, or ``None`` for ``Outputs.features`` (see the module docstring).
      train_mode: run BatchNorm in training mode in the extractor's forward passes (one per
        part, as the reference's separate retain and forget passes, whose refreshed
        statistics the model keeps). The reference never sets the mode (its model stays in
        whatever mode training left it), so the default is inference mode.
      vae_optimizer, ue_optimizer, ra_optimizer, repair_optimizer: the four optimizers: each an
        optax optimizer, or settings over the reference Adam (no weight decay); see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``, whose state
      is a :class:`~jaxunlearn.core.combinators.PhasesState` of a :class:`VAEState`, an
      :class:`ExtractorState` and, with ``repair``, a :class:`HeadRepairState`.

    References:
      Shen et al., "Label-Agnostic Forgetting: A Supervision-Free Unlearning in Deep Models",
      ICLR 2024.
    """
    try:
        num_steps = check_count(num_steps, "num_steps", 2)
        latent_dim = check_count(latent_dim, "latent_dim", 1)
    except ValueError as error:
        raise ValueError(f"label_agnostic_forgetting: {error}") from None
    if not 0.0 < vae_fraction < 1.0:
        raise ValueError(
            f"label_agnostic_forgetting `vae_fraction` must lie in (0, 1); got {vae_fraction}"
        )
    if repair and not 0.0 < repair_fraction < 1.0 - vae_fraction:
        raise ValueError(
            "label_agnostic_forgetting `repair_fraction` must lie in "
            f"(0, 1 - vae_fraction); got {repair_fraction}"
        )
    if concrete(temperature) and temperature <= 0:
        raise ValueError(
            f"label_agnostic_forgetting `temperature` must be positive; got {temperature}"
        )
    if decoder_output not in DECODER_OUTPUTS:
        raise ValueError(
            f"label_agnostic_forgetting `decoder_output` must be one of {DECODER_OUTPUTS}; "
            f"got {decoder_output!r}"
        )
    vae_steps = min(max(int(round(vae_fraction * num_steps)), 1), num_steps - 1)
    repair_steps = 0
    if repair:
        repair_steps = min(
            max(int(round(repair_fraction * num_steps)), 1), num_steps - vae_steps - 1
        )
    vae_opt = _flat_adam(vae_optimizer, vae_learning_rate)
    ue_opt = _flat_adam(ue_optimizer, ue_learning_rate)
    ra_opt = _flat_adam(ra_optimizer, ra_learning_rate)
    head_opt = _flat_adam(repair_optimizer, repair_learning_rate)

    def embed(variables, x, train):
        if embedding is not None:
            return embedding(apply, variables, x, train), None
        out = apply(variables, x, train=train)
        return out.features, out.batch_stats if train else None

    def features(variables, batch):
        # One forward pass over retain and forget inputs together (inference mode, so the
        # examples do not interact): half the model code to compile of two separate passes.
        x_r, x_f = batch["retain"]["x"], batch["forget"]["x"]
        e, _ = embed(variables, jnp.concatenate([x_r, x_f]), False)
        return e[: x_r.shape[0]], e[x_r.shape[0] :]

    def student_features(variables, batch):
        """``(e_r, e_f, batch_stats)``: in train mode, retain then forget in separate passes."""
        if not train_mode:
            return (*features(variables, batch), None)
        e_r, stats = embed(variables, batch["retain"]["x"], True)
        if stats is not None:
            variables = {**variables, "batch_stats": stats}
        e_f, stats_f = embed(variables, batch["forget"]["x"], True)
        return e_r, e_f, stats_f if stats_f is not None else stats

    def with_params(variables, params):
        return {**variables, "params": params}

    def zero_head(tree):
        return {**tree, head_key: jax.tree.map(jnp.zeros_like, tree[head_key])}

    def keep_head(moved, variables):
        # The head stays exactly as it was whatever the optimizer does (weight decay, say).
        params = {**moved["params"], head_key: variables["params"][head_key]}
        return with_params(moved, params)

    def latent_noise(key, batch):
        # One draw for both VAEs: each random call adds its own generator to the compiled step.
        n_r = batch["retain"]["x"].shape[0]
        noise = jax.random.normal(key, (n_r + batch["forget"]["x"].shape[0], latent_dim))
        return noise[:n_r], noise[n_r:]

    # ---- phase 1: fit the VAEs (the model is untouched)

    def vae_init(variables: Variables, *, key: Array) -> VAEState:
        params = variables["params"]
        if head_key not in params:
            raise ValueError(
                f"label_agnostic_forgetting: no head {head_key!r} among the "
                f"parameters {sorted(params)}; set `head_key`"
            )
        dim = feature_dim or _feature_dim(params[head_key])
        k_r, k_f = jax.random.split(key)
        vaes = {
            "retain": init_vae(k_r, dim, hidden=vae_hidden, latent_dim=latent_dim),
            "forget": init_vae(k_f, dim, hidden=vae_hidden, latent_dim=latent_dim),
        }
        return VAEState(vaes, vae_opt.init(vaes))

    def vae_update(variables: Variables, state: VAEState, batch: Batch, *, key: Array):
        e_r, e_f = jax.lax.stop_gradient(features(variables, batch))
        noise_r, noise_f = latent_noise(key, batch)

        def objective(vaes):
            return vae_loss(vaes["retain"], e_r, noise_r, kl_weight, decoder_output) + vae_loss(
                vaes["forget"], e_f, noise_f, kl_weight, decoder_output
            )

        loss, grads = jax.value_and_grad(objective)(state.vaes)
        moved, opt_state = optimizer_step(vae_opt, grads, state.opt_state, {"params": state.vaes})
        return variables, VAEState(moved["params"], opt_state), {"vae_loss": loss}

    # ---- phase 2: unlearn the extractor (the head's gradients are zeroed)

    def extractor_init(
        variables: Variables, *, key: Array, previous: VAEState | None = None
    ) -> ExtractorState:
        del key
        if previous is None:
            raise ValueError("LAF's extractor phase needs the VAEs of the phase before it")
        params = variables["params"]
        return ExtractorState(previous.vaes, ue_opt.init(params), ra_opt.init(params), variables)

    def extractor_update(variables: Variables, state: ExtractorState, batch: Batch, *, key):
        noise_r, noise_f = latent_noise(key, batch)

        def ue_objective(params):
            e_r, e_f, stats = student_features(with_params(variables, params), batch)
            rec_r, _, _ = apply_vae(state.vaes["retain"], e_r, noise_r, decoder_output)
            rec_f, _, _ = apply_vae(state.vaes["forget"], e_f, noise_f, decoder_output)
            energy = reconstruction_energy(rec_r, e_r) - reconstruction_energy(rec_f, e_f)
            return energy, stats

        (ue_loss, stats), grads = jax.value_and_grad(ue_objective, has_aux=True)(
            variables["params"]
        )
        moved, ue_opt_state = optimizer_step(
            ue_opt, zero_head(grads), state.ue_opt_state, variables, batch_stats=stats
        )
        variables = keep_head(moved, variables)

        teacher_r, teacher_f = jax.lax.stop_gradient(features(state.reference, batch))

        def ra_objective(params):
            e_r, e_f, stats = student_features(with_params(variables, params), batch)
            return representation_alignment(e_r, teacher_r, e_f, teacher_f, temperature), stats

        (ra_loss, stats), grads = jax.value_and_grad(ra_objective, has_aux=True)(
            variables["params"]
        )
        moved, ra_opt_state = optimizer_step(
            ra_opt, zero_head(grads), state.ra_opt_state, variables, batch_stats=stats
        )
        variables = keep_head(moved, variables)
        state = state._replace(ue_opt_state=ue_opt_state, ra_opt_state=ra_opt_state)
        return variables, state, {"ue_loss": ue_loss, "ra_loss": ra_loss}

    # ---- phase 3 (optional): repair the head on retain labels (the extractor is fixed)

    def head_init(variables: Variables, *, key: Array) -> HeadRepairState:
        del key
        return HeadRepairState(head_opt.init(variables["params"][head_key]))

    def head_update(variables: Variables, state: HeadRepairState, batch: Batch, *, key: Array):
        del key
        params = variables["params"]

        def objective(head):
            return part_loss(
                apply, with_params(variables, {**params, head_key: head}), batch, "retain"
            )[0]

        loss, grads = jax.value_and_grad(objective)(params[head_key])
        moved, opt_state = optimizer_step(
            head_opt, grads, state.opt_state, {"params": params[head_key]}
        )
        variables = with_params(variables, {**params, head_key: moved["params"]})
        return variables, HeadRepairState(opt_state), {"repair_loss": loss}

    vae_phase = UnlearningRule(vae_init, vae_update)
    extractor_phase = UnlearningRule(extractor_init, extractor_update)
    if not repair:
        return phases((vae_steps, vae_phase), (None, extractor_phase))
    return phases(
        (vae_steps, vae_phase),
        (num_steps - repair_steps - vae_steps, extractor_phase),
        (None, UnlearningRule(head_init, head_update)),
    )
