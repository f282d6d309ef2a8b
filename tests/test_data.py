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
    bundle = data.load("fashion-mnist", input_size=(32, 32), test_samples=4)
    assert bundle.input_shape == (1, 32, 32) and bundle.test[0][0].shape == (1, 32, 32)
    with pytest.raises(KondenseError, match="expects 2 input channels"):
        data.load("fashion-mnist", channels=2)


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


# ---- input size, channels, augmentation and normalisation ----------------------------------------------


def _pixels(x: torch.Tensor, bundle: data.DataBundle) -> torch.Tensor:
    """A model input back in pixel space, [0, 1]."""
    return x * torch.tensor(bundle.std).view(-1, 1, 1) + torch.tensor(bundle.mean).view(-1, 1, 1)


def _write_images(root: Path, shape: tuple[int, ...], per_class: int = 4, mode: str | None = None) -> None:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / label / f"{i}.png")


def test_input_size_parsing() -> None:
    assert data.parse_input_size("32") == (32, 32)
    assert data.parse_input_size("224,192") == data.parse_input_size("224x192") == (224, 192)
    for bad in ("", "0", "a", "32,0", "1,2,3", "-4", "32,"):
        with pytest.raises(KondenseError, match="malformed input size"):
            data.parse_input_size(bad)


def test_bad_input_size_and_augment() -> None:
    assert data.load("fashion-mnist", input_size=(np.int64(8), 8), test_samples=1).input_shape == (1, 8, 8)
    for bad in ((0, 32), (32,), (32, 32, 3), (32.5, 32), (True, 8)):
        with pytest.raises(KondenseError, match="input_size must be two positive integers"):
            data.load("fashion-mnist", input_size=bad)  # type: ignore[arg-type]
    with pytest.raises(KondenseError, match="unknown augmentation 'mixup'.*crop-flip"):
        data.load("fashion-mnist", augment="mixup")


def test_fashion_mnist_resized_bilinear_non_square() -> None:
    native = data.load("fashion-mnist", train_samples=8, val_samples=8, test_samples=8)
    bundle = data.load("fashion-mnist", input_size=(40, 36), train_samples=8, val_samples=8, test_samples=8)
    assert bundle.input_shape == (1, 40, 36)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split[0][0].shape == (1, 40, 36)
    # normalising is affine and bilinear weights sum to one, so resizing the normalised image agrees
    expected = torch.nn.functional.interpolate(native.test[3][0][None], size=(40, 36), mode="bilinear", antialias=True)
    assert torch.allclose(bundle.test[3][0], expected[0], atol=1e-5)
    assert torch.equal(native.test[3][1], bundle.test[3][1])


def test_grayscale_repeated_for_a_three_channel_model() -> None:
    bundle = data.load("fashion-mnist", input_size=(32, 32), channels=3, test_samples=4)
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.mean == pytest.approx([0.2860] * 3) and bundle.std == pytest.approx([0.3530] * 3)
    x = bundle.test[0][0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    x, _ = next(iter(bundle.loaders(batch_size=4)[2]))
    assert x.shape == (4, 3, 32, 32)


def test_channel_mismatch_names_both_numbers(tmp_path: Path) -> None:
    with pytest.raises(KondenseError, match="expects 2 input channels but 'fashion-mnist' has 1"):
        data.load("fashion-mnist", channels=2)
    np.savez(tmp_path / "rgb.npz", x=np.zeros((10, 8, 8, 3), dtype=np.uint8), y=np.arange(10) % 2)
    with pytest.raises(KondenseError, match="expects 1 input channels but .* has 3"):
        data.load(str(tmp_path / "rgb.npz"), channels=1)
    assert data.load(str(tmp_path / "rgb.npz"), channels=3).input_shape == (3, 8, 8)


def test_given_mean_and_std_are_applied() -> None:
    default = data.load("fashion-mnist", test_samples=4)
    given = data.load("fashion-mnist", mean=[0.5], std=[0.25], test_samples=4)
    assert (given.mean, given.std) == ([0.5], [0.25]) and (default.mean, default.std) == ([0.2860], [0.3530])
    raw = default.test[2][0] * 0.3530 + 0.2860
    assert torch.allclose(given.test[2][0], (raw - 0.5) / 0.25, atol=1e-5)
    assert torch.allclose(_pixels(given.test[2][0], given), raw, atol=1e-5)
    # one given, the other measured
    half = data.load("fashion-mnist", mean=[0.0], test_samples=1)
    assert (half.mean, half.std) == ([0.0], [0.3530])


def test_bad_mean_and_std() -> None:
    for kwargs, match in (
        ({"mean": [0.5, 0.5]}, "mean has 2 values but the model sees 1 input channels"),
        ({"std": [0.2], "channels": 3}, "std has 1 values but the model sees 3 input channels"),
        ({"std": [0.0]}, "std must be positive"),
        ({"std": [-1.0]}, "std must be positive"),
        ({"std": [float("nan")]}, "std must be positive"),
        ({"mean": [float("inf")]}, "mean must be a finite number"),
    ):
        with pytest.raises(KondenseError, match=match):
            data.load("fashion-mnist", **kwargs)


def _stack(split) -> torch.Tensor:
    return torch.stack([split[i][0] for i in range(len(split))])


def test_augmentation_only_on_the_training_split() -> None:
    kwargs = {"train_samples": 64, "val_samples": 16, "test_samples": 16}
    plain = data.load("fashion-mnist", **kwargs)
    aug = data.load("fashion-mnist", augment="crop-flip", **kwargs)
    assert (plain.augment, aug.augment) == ("none", "crop-flip")
    assert torch.equal(_stack(plain.train), _stack(plain.train))  # "none" has no randomness at all
    assert not torch.equal(_stack(aug.train), _stack(aug.train))  # every read, so every epoch, differs
    for split in ("val", "test"):
        once, again = _stack(getattr(aug, split)), _stack(getattr(aug, split))
        assert torch.equal(once, again) and torch.equal(once, _stack(getattr(plain, split)))
    # batched reads through a DataLoader give the same evaluation inputs as one by one
    assert torch.equal(torch.cat([x for x, _ in aug.loaders(eval_batch_size=5)[1]]), _stack(aug.val))


def test_crop_flip_is_a_padded_shift_and_a_flip() -> None:
    plain = data.load("fashion-mnist", train_samples=6)
    aug = data.load("fashion-mnist", augment="crop-flip", train_samples=6)
    pad = 4  # an eighth of 28, rounded
    for i in range(6):
        original = _pixels(plain.train[i][0], plain)
        padded = torch.nn.functional.pad(original, (pad,) * 4)  # padding is black in pixel space
        crops = [padded[:, dy : dy + 28, dx : dx + 28] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        candidates = torch.stack(crops + [c.flip(2) for c in crops])
        got = _pixels(aug.train[i][0], aug)
        assert (candidates - got).abs().flatten(1).amax(1).min() < 1e-5


def test_npz_resized_crop_augmentation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (40, 12, 10, 3), dtype=np.uint8), y=np.arange(40) % 4)
    bundle = data.load(str(tmp_path / "d.npz"), input_size=(24, 20), augment="resized-crop-flip")
    assert bundle.input_shape == (3, 24, 20) and len(bundle.mean) == len(bundle.std) == 3
    for split in (bundle.train, bundle.val, bundle.test):
        assert split[0][0].shape == (3, 24, 20)
    assert not torch.equal(_stack(bundle.train), _stack(bundle.train))
    assert torch.equal(_stack(bundle.val), _stack(bundle.val)) and torch.equal(_stack(bundle.test), _stack(bundle.test))
    torch.manual_seed(0)
    first = _stack(bundle.train)
    torch.manual_seed(0)
    assert torch.equal(first, _stack(bundle.train))  # reproducible given torch's seed


def test_npz_shrunk_to_input_size(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (30, 1, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    bundle = data.load(str(tmp_path / "d.npz"), input_size=(8, 8), test_samples=2)
    assert bundle.input_shape == (1, 8, 8) and bundle.test[0][0].shape == (1, 8, 8)
    # the mean is measured on the data, so normalised training inputs centre on zero
    assert abs(_stack(bundle.train).mean().item()) < 0.05


def test_image_folder_center_crop_of_non_square_images(tmp_path: Path) -> None:
    # 40 wide, 20 high: red and green quarters at the sides, blue in the middle half
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, :10, 0], image[:, 10:30, 2], image[:, 30:, 1] = 255, 255, 255
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.fromarray(image).save(tmp_path / label / f"{i}.png")
    bundle = data.load(str(tmp_path), input_size=(16, 16), mean=[0.0] * 3, std=[1.0] * 3)
    assert bundle.input_shape == (3, 16, 16)
    for split in (bundle.train, bundle.val, bundle.test):
        x = split[0][0]
        # resized to cover 18x18 (16 / 0.875) keeping the aspect ratio, then the center 16x16: all blue
        assert x.shape == (3, 16, 16)
        assert x[2].min() > 0.95 and x[:2].max() < 0.05


def test_image_folder_given_normalisation(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for label in ("a", "b"):
        for i in range(3):
            Image.new("RGB", (12, 12), (51, 102, 153)).save(tmp_path / label / f"{i}.png")
    bundle = data.load(str(tmp_path), input_size=(8, 8), mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.25])
    x = bundle.test[0][0]
    expected = (torch.tensor([0.2, 0.4, 0.6]) - torch.tensor([0.1, 0.2, 0.3])) / torch.tensor([0.5, 0.5, 0.25])
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-5) and x.std(dim=(1, 2)).max() < 1e-5


def test_image_folder_augmentation_and_sizes(tmp_path: Path) -> None:
    _write_images(tmp_path, (30, 20, 3), per_class=6)
    for augment in ("crop-flip", "resized-crop-flip"):
        bundle = data.load(str(tmp_path), input_size=(16, 12), augment=augment, val_fraction=0.25)
        assert bundle.input_shape == (3, 16, 12) and bundle.augment == augment
        assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 2, 2)
        assert _stack(bundle.train).shape == (8, 3, 16, 12)
        assert not torch.equal(_stack(bundle.train), _stack(bundle.train))
        assert torch.equal(_stack(bundle.val), _stack(bundle.val)) and torch.equal(
            _stack(bundle.test), _stack(bundle.test)
        )
        # validation is the evaluation view of training files: the same as without augmentation
        assert torch.equal(
            _stack(bundle.val), _stack(data.load(str(tmp_path), input_size=(16, 12), val_fraction=0.25).val)
        )


def test_image_folder_grayscale_for_three_channels(tmp_path: Path) -> None:
    _write_images(tmp_path, (10, 10), mode="L")
    assert data.load(str(tmp_path)).input_shape == (1, 10, 10)
    bundle = data.load(str(tmp_path), input_size=(8, 8), channels=3)
    assert bundle.input_shape == (3, 8, 8) and len(bundle.mean) == 3 and bundle.mean[0] == pytest.approx(bundle.mean[2])
    x = bundle.test[0][0]
    assert x.shape == (3, 8, 8) and torch.allclose(x[0], x[1]) and torch.allclose(x[0], x[2])
    with pytest.raises(KondenseError, match="expects 4 input channels but .* has 1"):
        data.load(str(tmp_path), channels=4)
