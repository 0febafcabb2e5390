"""Verified checkpoints: a damaged, truncated or non-finite step is named and set aside, and the
previous intact step is restored; with none left, a one-line error names the directory."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.train import checkpoint

# When orbax fails to read one array, tensorstore's callbacks for the others reach an asyncio loop
# that orbax has already closed and print "Event loop is closed" (harmless, orbax's own).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _tree(seed: int, *, nan: bool = False):
    # Random (incompressible) values, so bytes written into the array file land in the data.
    w = jax.random.normal(jax.random.key(seed), (64, 64))
    if nan:
        w = w.at[3, 5].set(jnp.nan)
    return {
        "variables": {"params": {"w": w, "b": jnp.arange(8.0) * seed}},
        "state": {"count": jnp.int32(seed), "key": jax.random.key(seed)},
    }


def _saved(directory, trees: dict[int, dict]):
    mngr = checkpoint.manager(str(directory))
    for step, tree in trees.items():
        checkpoint.save(mngr, step, tree)
    mngr.wait_until_finished()
    mngr.close()


def _restore(directory):
    mngr = checkpoint.manager(str(directory))
    try:
        return checkpoint.restore_latest(mngr, _tree(0))
    finally:
        mngr.close()


def _array_files(step_dir) -> list[str]:
    """The step's array data files, largest (the 64x64 leaf) first."""
    files = glob.glob(os.path.join(str(step_dir), "**", "d", "*"), recursive=True)
    return sorted(files, key=os.path.getsize, reverse=True)


def _overwrite(path: str, count: int = 100) -> None:
    """Random bytes in the middle of ``path``: orbax reads them back as wrong numbers, silently
    (more bytes in this small, compressed file would also break its framing, an orbax error)."""
    data = bytearray(open(path, "rb").read())
    start = max(len(data) // 2 - count // 2, 0)
    noise = np.random.default_rng(0).integers(0, 256, count, dtype=np.uint8).tobytes()
    data[start : start + count] = noise[: len(data) - start]
    with open(path, "wb") as f:
        f.write(data)


def _assert_trees_equal(a, b):
    a, b = jax.tree.map(np.asarray, (a, b), is_leaf=_is_key)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _is_key(x):
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_data(tree):
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def test_each_step_has_a_checksum_and_an_intact_restore_is_silent(tmp_path, recwarn):
    _saved(tmp_path, {10: _tree(10), 20: _tree(20), 30: _tree(30)})
    step, tree = _restore(tmp_path)
    assert step == 30
    # max_to_keep=2: orbax deleted step 10, and its checksum went with it.
    assert sorted(os.listdir(tmp_path)) == ["20", "30", "checksum_20.json", "checksum_30.json"]
    _assert_trees_equal(_key_data(tree), _key_data(_tree(30)))
    assert not [w for w in recwarn if issubclass(w.category, checkpoint.DamagedCheckpointWarning)]


def test_bytes_written_into_an_array_fall_back_to_the_previous_step(tmp_path):
    _saved(tmp_path, {10: _tree(10), 20: _tree(20)})
    _overwrite(_array_files(tmp_path / "20")[0])
    with pytest.warns(checkpoint.DamagedCheckpointWarning, match=str(tmp_path / "20")) as w:
        step, tree = _restore(tmp_path)
    assert step == 10
    _assert_trees_equal(_key_data(tree), _key_data(_tree(10)))
    message = str(w[0].message)
    assert "does not match its checksum" in message and "resuming from step 10" in message
    # The damaged step is kept for inspection, out of the way of the resumed run's next save.
    assert os.path.isdir(tmp_path / "20.damaged")
    _saved(tmp_path, {20: _tree(21)})
    step, tree = _restore(tmp_path)
    assert step == 20
    _assert_trees_equal(_key_data(tree), _key_data(_tree(21)))


def test_a_truncated_latest_step_falls_back(tmp_path):
    _saved(tmp_path, {10: _tree(10), 20: _tree(20)})
    for path in _array_files(tmp_path / "20"):
        os.truncate(path, os.path.getsize(path) // 2)
    with pytest.warns(checkpoint.DamagedCheckpointWarning, match=str(tmp_path / "20")):
        step, tree = _restore(tmp_path)
    assert step == 10
    _assert_trees_equal(_key_data(tree), _key_data(_tree(10)))


def test_no_intact_step_is_a_one_line_error_naming_the_directory(tmp_path):
    directory = tmp_path / "artefact"
    checkpoint.save_tree(str(directory), _tree(1))
    _overwrite(_array_files(directory / "0")[0])
    with pytest.raises(checkpoint.DamagedCheckpointError, match=str(directory)) as e:
        checkpoint.load_tree(str(directory), _tree(0))
    assert isinstance(e.value, OSError) and "\n" not in str(e.value)
    assert "checksum" in str(e.value)


def test_an_unreadable_only_step_chains_the_orbax_error(tmp_path):
    _saved(tmp_path, {10: _tree(10)})
    for path in _array_files(tmp_path / "10"):
        os.truncate(path, 1)
    with pytest.raises(checkpoint.DamagedCheckpointError, match=str(tmp_path)) as e:
        _restore(tmp_path)
    assert "\n" not in str(e.value) and e.value.__cause__ is not None


def test_a_non_finite_restored_tree_is_rejected(tmp_path):
    _saved(tmp_path, {10: _tree(10), 20: _tree(20, nan=True)})
    with pytest.warns(checkpoint.DamagedCheckpointWarning, match="NaN or inf"):
        step, _ = _restore(tmp_path)
    assert step == 10
    assert os.path.isdir(tmp_path / "20.nonfinite")


def test_only_non_finite_steps_start_the_run_over(tmp_path):
    _saved(tmp_path, {10: _tree(10, nan=True)})
    with pytest.warns(checkpoint.DamagedCheckpointWarning, match="starts over"):
        assert _restore(tmp_path) is None


def test_a_step_without_checksum_restores_with_an_unverified_warning(tmp_path):
    _saved(tmp_path, {10: _tree(10)})
    os.remove(tmp_path / "checksum_10.json")  # as written before checksums were stored
    with pytest.warns(checkpoint.DamagedCheckpointWarning, match="unverified"):
        step, _ = _restore(tmp_path)
    assert step == 10


def test_a_garbled_checksum_file_is_named(tmp_path):
    _saved(tmp_path, {10: _tree(10), 20: _tree(20)})
    with open(tmp_path / "checksum_20.json", "w") as f:
        f.write('{"format": 1, "leaves": {')
    with pytest.warns(checkpoint.DamagedCheckpointWarning, match="checksum_20.json"):
        step, _ = _restore(tmp_path)
    assert step == 10
