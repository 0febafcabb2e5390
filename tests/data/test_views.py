"""View pipelines: hand-checkable transforms, keyed determinism, shapes, the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.data import views


def _image(h=8, w=8, c=1, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(h, w, c)).astype(np.float32))


def test_flip_grayscale_and_cutout_with_probability_one_and_zero():
    img = _image(4, 5, 3)
    key = jax.random.key(0)
    np.testing.assert_array_equal(views.horizontal_flip(key, img, p=1.0), img[:, ::-1])
    np.testing.assert_array_equal(views.horizontal_flip(key, img, p=0.0), img)
    gray = np.asarray(views.grayscale(key, img, p=1.0))
    luma = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    for c in range(3):
        np.testing.assert_allclose(gray[..., c], luma, rtol=1e-6)
    ones = jnp.ones((8, 8, 1))
    cut = np.asarray(views.cutout(key, ones, size=3, p=1.0))
    assert (cut == 0).sum() in (4, 6, 9)  # a 3x3 square, clipped at a border or corner
    zeros = np.argwhere(cut[..., 0] == 0)
    assert np.ptp(zeros[:, 0]) <= 2 and np.ptp(zeros[:, 1]) <= 2
    np.testing.assert_array_equal(views.cutout(key, ones, p=0.0), ones)


def test_random_shift_moves_a_pixel_by_at_most_one():
    img = jnp.zeros((8, 8, 1)).at[4, 4, 0].set(1.0)
    seen = set()
    for i in range(40):
        out = np.asarray(views.random_shift(jax.random.key(i), img, max_shift=1))
        ((y, x, _),) = np.argwhere(out == 1.0)
        assert abs(y - 4) <= 1 and abs(x - 4) <= 1 and out.sum() == 1.0
        seen.add((y, x))
    assert len(seen) == 9  # every shift in [-1, 1]^2 occurs


def test_full_crop_is_the_identity_and_blur_preserves_a_constant():
    img = _image(6, 6, 3)
    out = views.random_resized_crop(jax.random.key(1), img, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(out, img, atol=1e-5)
    const = jnp.full((9, 9, 3), 0.3)
    np.testing.assert_allclose(
        views.gaussian_blur(jax.random.key(2), const, p=1.0), const, atol=1e-6
    )
    k = np.asarray(views.gaussian_kernel(jnp.asarray(1.0), 5))
    expected = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-6)


def test_color_jitter_stays_in_range_and_elastic_noise_of_zero_is_identity():
    img = _image(8, 8, 3)
    out = np.asarray(views.color_jitter(jax.random.key(3), img, p=1.0))
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, img)
    np.testing.assert_array_equal(views.color_jitter(jax.random.key(3), img, p=0.0), img)
    img1 = _image()
    same = views.elastic_noise(jax.random.key(4), img1, alpha=0.0, p=1.0)
    np.testing.assert_allclose(same, img1, atol=1e-6)
    moved = views.elastic_noise(jax.random.key(4), img1, alpha=1.0, p=1.0)
    assert float(jnp.abs(moved - img1).mean()) > 0.01


@pytest.mark.parametrize("name", ["digits", "cifar_rgb"])
def test_make_views_is_keyed_jitted_and_independent_per_view_and_example(name):
    shape = (6, 8, 8, 1) if name == "digits" else (6, 16, 16, 3)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=shape).astype(np.float32))
    make = jax.jit(lambda k, x: views.make_views(name, k, x, 3))
    a = make(jax.random.key(0), x)
    assert a.shape == (3, *shape) and a.dtype == x.dtype
    np.testing.assert_array_equal(a, make(jax.random.key(0), x))  # same key, same views
    assert not np.allclose(a, make(jax.random.key(1), x))
    assert not np.allclose(a[0], a[1])  # two views differ
    # Every example draws its own transform: the same image twice gets two different views.
    twice = make(jax.random.key(2), jnp.stack([x[0], x[0]]))
    assert not np.allclose(twice[0, 0], twice[0, 1])


def test_registry_defaults_and_bad_input():
    assert {"digits", "simclr_rgb", "cifar_rgb", "grey", "noise", "identity"} <= set(views.names())
    assert views.default_pipeline((8, 8, 1)) == "digits"
    assert views.default_pipeline((32, 32, 3)) == "cifar_rgb"
    assert views.default_pipeline((224, 224, 3)) == "simclr_rgb"
    assert views.default_pipeline((28, 28, 1)) == "grey"
    assert views.default_pipeline((10,)) == "noise"
    with pytest.raises(ValueError, match="Unknown view pipeline 'nope'"):
        views.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        views.register("digits", lambda k, x: x)
    with pytest.raises(ValueError, match="`num_views`"):
        views.make_views("identity", jax.random.key(0), jnp.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match="`p`"):
        views.grayscale(jax.random.key(0), _image(c=3), p=1.5)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        views.horizontal_flip(jax.random.key(0), jnp.zeros((8, 8)))


def test_local_crop_pipelines_keep_the_shape_and_zoom_in():
    assert views.default_local_pipeline((8, 8, 1)) == "digits_local"
    assert views.default_local_pipeline((32, 32, 3)) == "cifar_rgb_local"
    assert views.default_local_pipeline((224, 224, 3)) == "simclr_rgb_local"
    assert views.default_local_pipeline((28, 28, 1)) == "grey_local"
    assert views.default_local_pipeline((10,)) == "noise"
    # One lit pixel at the centre of a blank image: a crop of at most 60% of the area, resized
    # to the full size, spreads it over more pixels (or crops it away) but never off [0, 1].
    x = jnp.zeros((16, 8, 8, 1)).at[:, 3:5, 3:5, 0].set(1.0)
    local = np.asarray(
        jax.jit(lambda k: views.make_views("digits_local", k, x, 2))(jax.random.key(0))
    )
    assert local.shape == (2, 16, 8, 8, 1)
    assert local.min() >= -1e-6 and local.max() <= 1 + 1e-6
    lit = (local > 0.05).reshape(32, -1).sum(1)
    assert np.median(lit) > 4  # the 2x2 square is magnified in most views


def test_rotations_turn_a_hand_made_image():
    x = jnp.asarray([[[1.0], [2.0]], [[3.0], [4.0]]])[None]  # one 2x2 image [[1, 2], [3, 4]]
    rotated, labels = views.rotations(x)
    np.testing.assert_array_equal(labels, [[0], [1], [2], [3]])
    np.testing.assert_array_equal(rotated[0, 0, ..., 0], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(rotated[1, 0, ..., 0], [[2, 4], [1, 3]])  # a quarter turn left
    np.testing.assert_array_equal(rotated[2, 0, ..., 0], [[4, 3], [2, 1]])
    np.testing.assert_array_equal(rotated[3, 0, ..., 0], [[3, 1], [4, 2]])
    with pytest.raises(ValueError, match="square images"):
        views.rotations(jnp.zeros((2, 8, 6, 1)))


def _digits(n=160):
    from jaxunlearn import data

    return jnp.asarray(data.load("digits").x_train[:n])


def test_select_policy_prefers_the_policy_that_keeps_rotations_learnable():
    x = _digits()
    blank = lambda k, x: jnp.zeros_like(x)  # noqa: E731  (rotation is unlearnable from it)
    shift = views.compose(lambda k, im: views.random_shift(k, im, max_shift=1))
    result = views.select_policy(
        {"blank": blank, "identity": "identity", "shift": shift},
        x,
        key=jax.random.key(0),
        steps=25,
        batch_size=32,
        learning_rate=0.2,
    )
    assert result.names == ("blank", "identity", "shift")
    assert result.best in ("identity", "shift")
    # Trained on blank images, the first layer gets no gradient: the proxy stays near chance.
    assert result.rotation_accuracy[0] < 0.4
    assert min(result.rotation_accuracy[1:]) > result.rotation_accuracy[0] + 0.2
    assert result.rotation_loss[0] > max(result.rotation_loss[1:])
    by_loss = views.select_policy(
        {"blank": blank, "identity": "identity"},
        x,
        key=jax.random.key(0),
        steps=25,
        batch_size=32,
        learning_rate=0.2,
        criterion="loss",
    )
    assert by_loss.best == "identity"
    # The proxy run is one pure function of the key: rerunning gives the same scores.
    init, apply = views.proxy_mlp(8)
    params = init(jax.random.key(1), x.shape[1:])
    run = jax.jit(
        lambda k: views.rotation_proxy(
            "identity", k, x[:96], x[96:], params=params, apply=apply, steps=5, batch_size=8
        )
    )
    np.testing.assert_array_equal(run(jax.random.key(2)), run(jax.random.key(2)))


def test_select_policy_rejects_bad_settings():
    x = jnp.zeros((16, 8, 8, 1))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`candidates`"):
        views.select_policy({}, x, key=key)
    with pytest.raises(ValueError, match="`criterion`"):
        views.select_policy(["identity"], x, key=key, criterion="best")
    with pytest.raises(ValueError, match="`eval_fraction`"):
        views.select_policy(["identity"], x, key=key, eval_fraction=1.0)
    with pytest.raises(ValueError, match="`steps`"):
        views.select_policy(["identity"], x, key=key, steps=0)
    with pytest.raises(ValueError, match="`learning_rate`"):
        views.select_policy(["identity"], x, key=key, learning_rate=-1.0)
    with pytest.raises(ValueError, match="at least 8 images"):
        views.select_policy(["identity"], x[:4], key=key)
    with pytest.raises(ValueError, match="Unknown view pipeline"):
        views.select_policy(["nope"], x, key=key)
