"""Each SSL loss equals its reference formula: NumPy versions written from the papers' equations
(not from the code's vectorised form) and hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.repr import common, losses


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------ SimCLR


def nt_xent_numpy(z1, z2, tau):
    """The paper's l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) over all 2N
    anchors of the stacked views, averaged; the reference code sums both directions (x 2)."""
    z = _unit(np.concatenate([z1, z2]))
    n2 = len(z)
    n = n2 // 2
    s = z @ z.T
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denom = sum(math.exp(s[i, k] / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(s[i, j] / tau) / denom)
    return 2.0 * total / n2


def test_nt_xent_hand_computed():
    # Two orthogonal examples, each view equal to its pair: s_ij = 1, every other similarity 0.
    z = np.eye(2, dtype=np.float32)
    # Anchor i: positive logit 1/tau, one negative of 0 in each view -> -log(e^(1/tau) /
    # (e^(1/tau) + 2)) per direction, summed over both.
    for tau in (1.0, 0.5):
        expected = 2.0 * math.log(1.0 + 2.0 * math.exp(-1.0 / tau))
        assert float(losses.nt_xent(z, z, tau)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_the_paper_formula(tau):
    z1, z2 = _rng().normal(size=(2, 6, 5)).astype(np.float32)
    got = float(jax.jit(losses.nt_xent, static_argnums=2)(z1, z2, tau))
    assert got == pytest.approx(nt_xent_numpy(z1, z2, tau), rel=1e-4)


# -------------------------------------------------------------------------------- BYOL, SimSiam


def test_byol_loss_hand_computed_and_formula():
    p = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    z_orth = np.array([[0.0, 3.0], [5.0, 0.0]], np.float32)
    # Orthogonal: 2 - 2 cos = 2 per direction, summed over both directions -> 4.
    assert float(losses.byol_loss(p, p, z_orth, z_orth)) == pytest.approx(4.0)
    # Aligned (any positive scale): 0.
    assert float(losses.byol_loss(p, p, 7 * p, 0.5 * p)) == pytest.approx(0.0, abs=1e-6)
    p1, p2, z1, z2 = _rng(1).normal(size=(4, 5, 3)).astype(np.float32)
    reg = lambda a, b: np.sum((_unit(a) - _unit(b)) ** 2, -1)  # ||p/|p| - z/|z| ||^2
    expected = np.mean(reg(p1, z2) + reg(p2, z1))
    assert float(losses.byol_loss(p1, p2, z1, z2)) == pytest.approx(expected, rel=1e-5)


def test_byol_and_simsiam_stop_the_target_gradient():
    p1, p2, z1, z2 = (jnp.asarray(a) for a in _rng(2).normal(size=(4, 3, 2)).astype(np.float32))
    g = jax.grad(lambda z: losses.byol_loss(p1, p2, z, z2))(z1)
    assert float(jnp.abs(g).max()) == 0.0
    g = jax.grad(lambda z: losses.simsiam_loss(p1, p2, z, z2))(z1)
    assert float(jnp.abs(g).max()) == 0.0


def test_simsiam_loss_hand_computed():
    p = np.array([[1.0, 0.0]], np.float32)
    assert float(losses.simsiam_loss(p, p, 2 * p, 3 * p)) == pytest.approx(-1.0)
    q = np.array([[0.0, 1.0]], np.float32)
    # D(p1, z2) = -cos(p, -p) = 1; D(p2, z1) = -cos(q, p) = 0 -> (1 + 0) / 2.
    assert float(losses.simsiam_loss(p, q, p, -p)) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- VICReg


def vicreg_numpy(z1, z2, lam=25.0, mu=25.0, nu=1.0):
    n, d = z1.shape
    inv = np.mean((z1 - z2) ** 2)
    var = 0.0
    cov = 0.0
    for z in (z1, z2):
        zc = z - z.mean(0)
        std = np.sqrt(zc.var(0, ddof=1) + 1e-4)
        var += np.mean(np.maximum(0.0, 1.0 - std)) / 2
        c = zc.T @ zc / (n - 1)
        cov += sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return lam * inv + mu * var + nu * cov


def test_vicreg_hand_computed():
    # z1 = z2 = [[1, 0], [-1, 0]]: invariance 0; std = (sqrt(2 + 1e-4), sqrt(1e-4)) -> variance
    # term per view mean(relu(1 - std)) = (0 + (1 - 0.01)) / 2; covariance off-diagonal 0.
    z = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    expected = 25.0 * (0.99 / 2)
    assert float(losses.vicreg_loss(z, z)) == pytest.approx(expected, rel=1e-5)
    inv, var, cov = losses.vicreg_terms(z, z)
    assert float(inv) == 0.0 and float(cov) == pytest.approx(0.0, abs=1e-7)


def test_vicreg_matches_the_formula():
    z1, z2 = _rng(3).normal(size=(2, 8, 4)).astype(np.float32)
    got = float(jax.jit(losses.vicreg_loss)(z1, z2))
    assert got == pytest.approx(vicreg_numpy(z1, z2), rel=1e-4)
    got = float(losses.vicreg_loss(z1, z2, sim_weight=1.0, var_weight=2.0, cov_weight=3.0))
    assert got == pytest.approx(vicreg_numpy(z1, z2, 1.0, 2.0, 3.0), rel=1e-4)


# ---------------------------------------------------------------------------- Barlow Twins


def barlow_numpy(z1, z2, lam=5e-3):
    n = len(z1)
    bn = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
    c = bn(z1).T @ bn(z2) / n
    d = c.shape[0]
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lam * off


def test_barlow_twins_hand_computed():
    # Two uncorrelated standardised dimensions, identical views: C = I (up to the BN epsilon).
    z = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], np.float32)
    assert float(losses.barlow_twins_loss(z, z)) == pytest.approx(0.0, abs=1e-4)
    # Second view's dimensions swapped: C = [[0, 1], [1, 0]] -> 2 on-diagonal + lambda * 2.
    got = float(losses.barlow_twins_loss(z, z[:, ::-1], redundancy_weight=0.5))
    assert got == pytest.approx(2.0 + 0.5 * 2.0, rel=1e-4)


def test_barlow_twins_matches_the_formula():
    z1, z2 = _rng(4).normal(size=(2, 7, 3)).astype(np.float32)
    assert float(losses.barlow_twins_loss(z1, z2)) == pytest.approx(barlow_numpy(z1, z2), rel=1e-4)


# ------------------------------------------------------------------------------------ DINO


def dino_numpy(student, teacher, center, ts=0.1, tt=0.04):
    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    total, n = 0.0, 0
    for t in range(len(teacher)):
        q = softmax((teacher[t] - center) / tt)
        for s in range(len(student)):
            if s == t:
                continue
            logp = np.log(softmax(student[s] / ts))
            total += np.mean(np.sum(-q * logp, -1))
            n += 1
    return total / n


def test_dino_loss_hand_computed():
    # K = 2, teacher logits equal -> q = (1/2, 1/2); student logits (0, 0) -> CE = log 2.
    student = np.zeros((2, 1, 2), np.float32)
    teacher = np.ones((2, 1, 2), np.float32)
    center = np.zeros(2, np.float32)
    assert float(losses.dino_loss(student, teacher, center)) == pytest.approx(math.log(2))


def test_dino_loss_matches_the_formula_with_more_student_views():
    rng = _rng(5)
    student = rng.normal(size=(3, 4, 5)).astype(np.float32)
    teacher = rng.normal(size=(2, 4, 5)).astype(np.float32)
    center = rng.normal(size=5).astype(np.float32) * 0.1
    got = float(losses.dino_loss(student, teacher, center, teacher_temperature=0.5))
    assert got == pytest.approx(dino_numpy(student, teacher, center, tt=0.5), rel=1e-4)


def test_dino_center_update():
    teacher = np.array([[[1.0, 3.0]], [[3.0, 5.0]]], np.float32)  # mean over views: (2, 4)
    got = np.asarray(losses.dino_center(jnp.array([10.0, 0.0]), teacher, 0.9))
    np.testing.assert_allclose(got, [0.9 * 10 + 0.1 * 2, 0.1 * 4], rtol=1e-6)


# ------------------------------------------------------------------------------------- LwF


def test_lwf_distillation_is_the_papers_tempered_cross_entropy():
    rng = _rng(6)
    new, old = rng.normal(size=(2, 3, 4)).astype(np.float32)

    def tempered(logits, t):  # y'^(i) = (y^(i))^(1/T) / sum_j (y^(j))^(1/T), y = softmax
        y = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        y = y ** (1 / t)
        return y / y.sum(-1, keepdims=True)

    expected = np.mean(-np.sum(tempered(old, 2.0) * np.log(tempered(new, 2.0)), -1))
    assert float(losses.lwf_distillation(new, old, 2.0)) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- CKA alignment


def cka_numpy(x, y):
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.sum((h @ a @ h) * (h @ b @ h))
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_cka_alignment_matches_hsic_cka():
    rng = _rng(7)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 4))
    c = rng.normal(size=(6, 2))
    got = float(losses.cka_alignment([a, c], [b, 2.0 * c + 1.0]))
    expected = ((1 - cka_numpy(a, b)) + (1 - cka_numpy(c, 2.0 * c + 1.0))) / 2
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="as many guide layers"):
        losses.cka_alignment([a], [b, c])


# ---------------------------------------------------------------------------- EMA schedule


def test_cosine_ema_rate_schedule():
    rate = lambda k: float(common.cosine_ema_rate(jnp.asarray(k), 100, 0.996))
    assert rate(0) == pytest.approx(0.996)
    assert rate(50) == pytest.approx(1 - 0.004 * 0.5, rel=1e-6)
    assert rate(100) == pytest.approx(1.0)
    assert float(common.cosine_ema_rate(jnp.asarray(7), None, 0.9)) == pytest.approx(0.9)
    ema = common.ema({"w": jnp.array(0.0)}, {"w": jnp.array(10.0)}, 0.9)
    assert float(ema["w"]) == pytest.approx(1.0)
