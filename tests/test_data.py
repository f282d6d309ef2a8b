"""Data sets: the real Fashion-MNIST, .npz files and ImageFolder directories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kondense import KondenseError, data


@pytest.fixture(scope="module")
def fmnist() -> data.DataBundle:
    return data.load("fashion-mnist")


def test_fashion_mnist_splits(fmnist: data.DataBundle) -> None:
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (54000, 6000, 10000)
    assert fmnist.num_classes == 10 and fmnist.input_shape == (1, 28, 28)
    x, y = fmnist.test[0]
    assert x.shape == (1, 28, 28) and 0 <= int(y) < 10
    labels = torch.stack([fmnist.test[i][1] for i in range(0, 10000, 10)])
    assert set(labels.tolist()) == set(range(10))


def test_normalised(fmnist: data.DataBundle) -> None:
    x = torch.stack([fmnist.train[i][0] for i in range(0, 54000, 27)])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_validation_split_is_seeded_and_disjoint(fmnist: data.DataBundle) -> None:
    again = data.load("fashion-mnist")
    other = data.load("fashion-mnist", seed=1)
    assert fmnist.val.indices == again.val.indices
    assert fmnist.val.indices != other.val.indices
    assert not set(fmnist.val.indices) & set(fmnist.train.indices)
    assert len(set(fmnist.val.indices) | set(fmnist.train.indices)) == 60000


def test_subsets_and_loaders() -> None:
    bundle = data.load("fashion-mnist", train_samples=300, val_samples=50, test_samples=70)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (300, 50, 70)
    train, val, test = bundle.loaders(batch_size=64)
    assert sum(len(y) for _, y in train) == 256  # drop_last keeps batch norm away from tiny batches
    assert sum(len(y) for _, y in test) == 70
    first = [y for _, y in bundle.loaders(batch_size=64, seed=3)[0]]
    second = [y for _, y in bundle.loaders(batch_size=64, seed=3)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_resize_to_model_input() -> None:
    bundle = data.load("fashion-mnist", input_shape=(1, 32, 32), test_samples=4)
    assert bundle.input_shape == (1, 32, 32) and bundle.test[0][0].shape == (1, 32, 32)
    with pytest.raises(KondenseError, match="expects 3 input channels"):
        data.load("fashion-mnist", input_shape=(3, 32, 32))


def test_missing_fashion_mnist_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(KondenseError) as e:
        data.load("fashion-mnist", root=str(tmp_path))
    assert str(tmp_path) in str(e.value) and "apt-get install dataset-fashion-mnist" in str(e.value)


def test_unknown_source() -> None:
    with pytest.raises(KondenseError, match="neither a known data set"):
        data.load("cifar-1000")


def test_input_shape_parsing() -> None:
    assert data.parse_input_shape("3,32,32") == (3, 32, 32)
    for bad in ("3,32", "a,b,c", "3,0,32", ""):
        with pytest.raises(KondenseError, match="expected three positive integers C,H,W"):
            data.parse_input_shape(bad)


def test_npz_channels_last_with_carved_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 12, 10, 3), dtype=np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    bundle = data.load(str(tmp_path / "d.npz"), val_fraction=0.2)
    assert bundle.input_shape == (3, 12, 10) and bundle.num_classes == 5
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (32, 8, 10)


def test_npz_with_test_arrays(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4, x_test=x[:6], y_test=np.arange(6) % 4)
    bundle = data.load(str(tmp_path / "d.npz"))
    assert bundle.input_shape == (1, 8, 8) and len(bundle.test) == 6 and len(bundle.train) + len(bundle.val) == 40


def test_npz_without_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(KondenseError, match="expected at least 'x'"):
        data.load(str(tmp_path / "d.npz"))


def test_image_folder_with_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 3)):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    tmp_path / split / label / f"{i}.png"
                )
    bundle = data.load(str(tmp_path), val_fraction=0.25)
    assert bundle.num_classes == 2 and bundle.input_shape == (3, 16, 16)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (15, 5, 6)
    x, y = bundle.test[0]
    assert x.shape == (3, 16, 16)


def test_not_an_image_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(KondenseError, match="not an ImageFolder directory"):
        data.load(str(tmp_path / "empty"))
