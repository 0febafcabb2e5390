"""Tests for the TFDS dataset loaders, offline: mocked TFDS data and tiny prepared datasets."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from jaxunlearn import data  # noqa: E402
from jaxunlearn.data import tfds_datasets  # noqa: E402

EXPECTED = {  # name -> (image shape, num_classes)
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "svhn_cropped": ((32, 32, 3), 10),
}


def test_every_tfds_name_is_registered():
    assert set(EXPECTED) <= set(data.names())
    assert set(EXPECTED) == set(tfds_datasets.SPECS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loads_under_mock_data(name):
    shape, num_classes = EXPECTED[name]
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load(name, max_train=10)
    assert ds.name == name
    assert ds.num_classes == num_classes and ds.task == "classification"
    assert ds.x_train.shape == (10, *shape) and ds.x_test.shape == (12, *shape)
    assert ds.input_shape == shape
    for x, y in [(ds.x_train, ds.y_train), (ds.x_test, ds.y_test)]:
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert y.shape == (x.shape[0],)
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.0
        assert 0 <= y.min() and y.max() < num_classes


def test_max_test_takes_leading_examples():
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        full = data.load("mnist")
        head = data.load("mnist", max_train=3, max_test=5)
    np.testing.assert_array_equal(head.x_train, full.x_train[:3])
    np.testing.assert_array_equal(head.y_test, full.y_test[:5])


def test_not_prepared_raises_without_downloading(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("the loader must never download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(tfds_datasets.DatasetNotPreparedError) as info:
        data.load("cifar10", data_dir=str(tmp_path))
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "download_and_prepare" in message and "'cifar10'" in message
    assert str(tmp_path) in message and "--config.data_dir" in message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10.*digits|digits.*cifar10"):
        data.load("nope")


class _TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A real (not mocked) TFDS builder with 6 train and 4 test examples."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(4, 4, 3)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(6), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((4, 4, 3), 50 * i, np.uint8), "label": i % 3}


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_reads_prepared_data(tmp_path, file_format):
    if file_format == "tfrecord":
        pytest.importorskip("tensorflow")
    _TinyImages(data_dir=str(tmp_path), file_format=file_format).download_and_prepare()
    builder = _TinyImages(data_dir=str(tmp_path))  # as a user would open it: format from disk
    train = tfds_datasets.read_split(builder, "train")
    head = tfds_datasets.read_split(builder, "test", limit=2)
    assert train["image"].shape == (6, 4, 4, 3) and train["image"].dtype == np.uint8
    # TFDS shuffles examples when preparing, so compare as sets.
    assert sorted(train["image"][:, 0, 0, 0].tolist()) == [0, 50, 100, 150, 200, 250]
    assert sorted(train["label"].tolist()) == [0, 0, 1, 1, 2, 2]
    assert head["image"].shape == (2, 4, 4, 3) and head["label"].shape == (2,)


def test_prepare_command_names_the_data_dir():
    command = tfds_datasets.prepare_command("svhn_cropped", "/data/tfds")
    assert "tfds.builder('svhn_cropped', data_dir='/data/tfds'" in command
    assert "download_and_prepare()" in command
