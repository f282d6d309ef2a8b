"""Data sets as train / validation / test splits, at the input size and channel count a model needs.

Sources: the name `fashion-mnist` (Debian's IDX files, or a given root), a directory in
ImageFolder layout, or an `.npz` file with arrays `x` and `y`. The validation split is
carved from the training data with a seeded permutation, so every run and every process
sees the same split; the test split is only ever used to report.

Only the training split is augmented. Validation (the same training samples' other view)
and test get the evaluation transform: for tensor data (fashion-mnist, .npz) a bilinear
resize, for ImageFolder a resize and a center crop.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from kondense.errors import KondenseError

FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist"]
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_STATS = ([0.2860], [0.3530])
NAMED_DATASETS = ["fashion-mnist"]
AUGMENTS = ("none", "crop-flip", "resized-crop-flip")
# ImageNet's evaluation recipe: resize to 256 for a 224 crop
CENTER_CROP_FRACTION = 0.875
# the lower bound of RandomResizedCrop's area: ImageNet training from scratch uses 0.08, but
# kondense fine-tunes trained networks for short budgets, where such aggressive crops cost accuracy
RESIZED_CROP_SCALE = (0.25, 1.0)


@dataclass
class DataBundle:
    """Three splits of one data set, already normalised, plus what a model needs to fit it."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]  # C, H, W as the model sees it
    augment: str = "none"  # applied to the training split only
    mean: list[float] = field(default_factory=list)  # the normalisation applied, one value per channel
    std: list[float] = field(default_factory=list)

    def loaders(
        self, batch_size: int = 128, seed: int = 0, eval_batch_size: int = 256
    ) -> tuple[DataLoader, DataLoader, DataLoader]:
        """Train (shuffled with a seeded generator), validation and test loaders."""
        generator = torch.Generator().manual_seed(seed)
        return (
            DataLoader(
                self.train,
                batch_size=batch_size,
                shuffle=True,
                generator=generator,
                drop_last=len(self.train) > batch_size,
            ),
            DataLoader(self.val, batch_size=eval_batch_size),
            DataLoader(self.test, batch_size=eval_batch_size),
        )


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'C,H,W' -> (C, H, W), or a clear error."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise KondenseError(f"malformed input shape '{text}': expected three positive integers C,H,W, e.g. 3,32,32")
    return shape  # type: ignore[return-value]


def parse_input_size(text: str) -> tuple[int, int]:
    """'32' -> (32, 32); '224,192' or '224x192' -> (224, 192) as H, W; or a clear error."""
    parts = text.strip().lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) < 1:
        raise KondenseError(
            f"malformed input size '{text}': expected one positive integer (square, e.g. 224) or two as H,W (e.g. 224,192)"
        )
    return (size[0], size[0]) if len(size) == 1 else size  # type: ignore[return-value]


def load(
    source: str,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    channels: int | None = None,
    augment: str = "none",
    mean: list[float] | None = None,
    std: list[float] | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    test_samples: int | None = None,
) -> DataBundle:
    """Load a data set by name or path, split it, and shape it for a model.

    `input_size` (H, W) is the resolution the model needs; None keeps the data's own.
    `channels` is the model's input channels: grayscale data is repeated to 3 channels for a
    3-channel model (a torchvision network with ImageNet weights); any other mismatch is an error.
    `augment` (one of AUGMENTS) applies to the training split only. `mean` and `std` (one value
    per input channel) replace the statistics measured on the data; inputs are normalised last,
    after resizing and augmentation. The *_samples arguments take
    deterministic subsets, for tests and quick runs.
    """
    if not 0 < val_fraction < 1:
        raise KondenseError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if augment not in AUGMENTS:
        raise KondenseError(f"unknown augmentation '{augment}': choose one of {', '.join(AUGMENTS)}")
    size = _check_size(input_size)
    if source in NAMED_DATASETS:
        name, raw = source, _fashion_mnist(root)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise KondenseError(
                f"data '{source}' is neither a known data set ({', '.join(NAMED_DATASETS)}) nor an existing path; "
                "give an ImageFolder directory or an .npz file with arrays x and y"
            )
        name = path.name
        if path.is_dir():
            raw = _image_folder(path, seed)
        elif path.suffix == ".npz":
            raw = _npz(path, seed)
        else:
            raise KondenseError(
                f"data file '{source}' has an unknown format: expected an .npz file or an ImageFolder directory"
            )
    out_channels = _resolve_channels(raw.channels, channels, source)
    views = raw.views(size, out_channels, augment, mean, std)

    order = torch.randperm(len(views.train), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(len(views.train) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if train_samples:
        train_idx = train_idx[:train_samples]
    if val_samples:
        val_idx = val_idx[:val_samples]
    test_idx = list(range(len(views.test)))[: test_samples or None]
    return DataBundle(
        name=name,
        # one set of training samples, two views: augmented for training, evaluation transform for validation
        train=Subset(views.train, train_idx),
        val=Subset(views.train_eval, val_idx),
        test=Subset(views.test, test_idx),
        num_classes=raw.num_classes,
        input_shape=(out_channels, *views.size),
        augment=augment,
        mean=views.mean,
        std=views.std,
    )


def _check_size(input_size: Sequence[int] | None) -> tuple[int, int] | None:
    if input_size is None:
        return None
    size = tuple(input_size)
    integers = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    if len(size) != 2 or not integers or min(size) < 1:
        raise KondenseError(f"input_size must be two positive integers (H, W), got {input_size!r}")
    return int(size[0]), int(size[1])


def _resolve_channels(data_channels: int, channels: int | None, source: str) -> int:
    """The channels the model sees: the data's own, or 3 from grayscale data repeated."""
    if channels is None or channels == data_channels:
        return data_channels
    if channels == 3 and data_channels == 1:
        return 3
    raise KondenseError(
        f"the model expects {channels} input channels but '{source}' has {data_channels}; "
        "only grayscale data can be repeated to 3 channels"
    )


def _normalisation(
    measured: Callable[[], tuple[list[float], list[float]]],
    mean: list[float] | None,
    std: list[float] | None,
    channels: int,
) -> tuple[list[float], list[float]]:
    """The given mean and std (checked), or the data's: measured only when one is missing."""
    for label, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise KondenseError(
                f"{label} has {len(values)} values but the model sees {channels} input channels: give one value per channel"
            )
    if mean is not None and not all(math.isfinite(m) for m in mean):
        raise KondenseError(f"mean must be a finite number in every channel, got {list(mean)}")
    if std is not None and not all(math.isfinite(s) and s > 0 for s in std):
        raise KondenseError(f"std must be positive in every channel, got {list(std)}")
    if mean is None or std is None:
        data_mean, data_std = measured()
        # grayscale repeated to 3 channels: the one channel's statistics hold for each copy
        repeat = channels // len(data_mean)
        mean = list(mean) if mean is not None else data_mean * repeat
        std = list(std) if std is not None else data_std * repeat
    return [float(m) for m in mean], [float(s) for s in std]


def _pad_for(size: tuple[int, int]) -> int:
    """The CIFAR recipe's padding, 4 px at 32: an eighth of the shorter side."""
    return max(1, round(min(size) / 8))


@dataclass
class _Views:
    train: Dataset  # training samples with the training transform
    train_eval: Dataset  # the same samples with the evaluation transform, for validation
    test: Dataset
    size: tuple[int, int]
    mean: list[float]
    std: list[float]


# ---- tensor data: fashion-mnist and .npz ----------------------------------------------------------------


@dataclass
class _Tensors:
    """Images as (N, C, H, W) tensors as stored (uint8 or float), labels, and their statistics."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    stats: tuple[list[float], list[float]]

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    def views(
        self,
        size: tuple[int, int] | None,
        channels: int,
        augment: str,
        mean: list[float] | None,
        std: list[float] | None,
    ) -> _Views:
        size = size or tuple(self.train_x.shape[2:])
        mean, std = _normalisation(lambda: self.stats, mean, std, channels)

        def view(x: torch.Tensor, y: torch.Tensor, aug: str) -> _TensorImages:
            return _TensorImages(x, y, size=size, channels=channels, augment=aug, mean=mean, std=std)

        return _Views(
            train=view(self.train_x, self.train_y, augment),
            train_eval=view(self.train_x, self.train_y, "none"),
            test=view(self.test_x, self.test_y, "none"),
            size=size,
            mean=mean,
            std=std,
        )


class _TensorImages(Dataset):
    """Model inputs made from stored images on demand, a sample or a whole batch at a time.

    Stored images stay uint8 (a quarter of float32's memory: Fashion-MNIST is 55 MB, where it
    would be 1.1 GB as float32 at 64x64). Per read: scale to [0, 1], bilinear resize to the
    model's size, repeat grayscale to 3 channels if asked, augment, then normalise. Normalising
    last means crop padding is black in pixel space (0 before normalisation), as in the
    torchvision CIFAR recipe and in the ImageFolder path. `__getitems__` lets a DataLoader (also
    through Subset) fetch a batch with one call, so resizing and augmentation of small images run batched.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        size: tuple[int, int],
        channels: int,
        augment: str,
        mean: list[float],
        std: list[float],
    ) -> None:
        self.x, self.y, self.size, self.channels, self.augment = x, y, tuple(size), channels, augment
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.inputs([i])[0], self.y[i]

    def __getitems__(self, indices: list[int]) -> list:
        # chunks of about 1 MiB of output: batched reads are 4x faster than one by one at 28x28 and
        # 2.4x at 64x64, but a whole batch at 3x224x224 leaves the cache and runs 1.3x slower
        step = max(1, 2**18 // (self.channels * self.size[0] * self.size[1]))
        samples = []
        for k in range(0, len(indices), step):
            part = indices[k : k + step]
            samples += zip(self.inputs(part).unbind(0), self.y[part].unbind(0), strict=True)
        return samples

    def inputs(self, indices: list[int]) -> torch.Tensor:
        """The normalised model inputs of these samples, as one batch."""
        x = self.x[indices]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.augment == "resized-crop-flip":
            x = _resized_crop_flip(x, self.size)  # the random crop is itself the resize
        else:
            x = _resize(x, self.size)
            if self.augment == "crop-flip":
                x = _crop_flip(x, _pad_for(self.size))
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        return (x - self.mean) / self.std


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    # antialiasing matters when shrinking (a 64x64 .npz for a 32x32 model) and matches PIL's resize
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _crop_flip(x: torch.Tensor, pad: int) -> torch.Tensor:
    """A random crop of each image padded by `pad` black pixels, and a random horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2)).tolist()
    flips = (torch.rand(n) < 0.5).tolist()
    # slicing image by image: gathering with index tensors is 2x slower at 224x224
    crops = [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    return torch.stack([crop.flip(2) if flip else crop for crop, flip in zip(crops, flips, strict=True)])


def _resized_crop_flip(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ImageNet's RandomResizedCrop to `size`, and a random horizontal flip, per image."""
    from torchvision.transforms import v2

    crop = v2.Compose([v2.RandomResizedCrop(size, scale=RESIZED_CROP_SCALE, antialias=True), v2.RandomHorizontalFlip()])
    return torch.stack([crop(image) for image in x])


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(root: str | None) -> _Tensors:
    candidates = [root] if root else [os.environ.get("KONDENSE_FASHION_MNIST")] + FASHION_MNIST_DIRS
    candidates = [c for c in candidates if c]
    for directory in candidates:
        files = {k: Path(directory) / v for k, v in FASHION_MNIST_FILES.items()}
        if all(f.exists() for f in files.values()):
            arrays = {k: torch.from_numpy(_read_idx(f).copy()) for k, f in files.items()}
            return _Tensors(
                arrays["train_x"].unsqueeze(1),
                arrays["train_y"].long(),
                arrays["test_x"].unsqueeze(1),
                arrays["test_y"].long(),
                10,
                FASHION_MNIST_STATS,
            )
    raise KondenseError(
        f"Fashion-MNIST not found: looked in {', '.join(candidates)} for {', '.join(FASHION_MNIST_FILES.values())}. "
        "Install it with 'apt-get install dataset-fashion-mnist', or set KONDENSE_FASHION_MNIST to a directory holding those four files"
    )


def _to_nchw(x: np.ndarray, path: Path) -> torch.Tensor:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise KondenseError(f"{path}: array x has shape {x.shape}; expected N,H,W or N,H,W,C or N,C,H,W images")
    return torch.from_numpy(np.ascontiguousarray(x))


def _carve_test(x: torch.Tensor, y: torch.Tensor, seed: int, fraction: float = 0.2):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
    n_test = max(1, int(len(x) * fraction))
    return (x[order[n_test:]], y[order[n_test:]]), (x[order[:n_test]], y[order[:n_test]])


def _npz(path: Path, seed: int) -> _Tensors:
    with np.load(path, allow_pickle=False) as arrays:
        if "x" not in arrays or "y" not in arrays:
            raise KondenseError(
                f"{path} holds arrays {sorted(arrays.files)}; expected at least 'x' (images) and 'y' (labels)"
            )
        x, y = _to_nchw(arrays["x"], path), torch.from_numpy(arrays["y"].astype(np.int64)).view(-1)
        if len(x) != len(y):
            raise KondenseError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
        if "x_test" in arrays and "y_test" in arrays:
            train = (x, y)
            test = (_to_nchw(arrays["x_test"], path), torch.from_numpy(arrays["y_test"].astype(np.int64)).view(-1))
        else:
            train, test = _carve_test(x, y, seed)
    if not x.dtype.is_floating_point and x.dtype != torch.uint8:
        train, test = (train[0].float(), train[1]), (test[0].float(), test[1])
    xf = train[0].float() / (255.0 if train[0].dtype == torch.uint8 else 1.0)
    stats = xf.mean(dim=(0, 2, 3)).tolist(), xf.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    return _Tensors(*train, *test, num_classes, stats)


# ---- ImageFolder ----------------------------------------------------------------------------------------


@dataclass
class _Folder:
    """An ImageFolder's train and test images (PIL, untransformed), and how they look."""

    train: Dataset
    test: Dataset
    num_classes: int
    mode: str  # "L" or "RGB": every image is converted to the first image's, so batches stack
    first_size: tuple[int, int]  # H, W of the first image
    seed: int

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def views(
        self,
        size: tuple[int, int] | None,
        channels: int,
        augment: str,
        mean: list[float] | None,
        std: list[float] | None,
    ) -> _Views:
        from torchvision import transforms

        mode = "RGB" if channels == 3 else self.mode  # grayscale repeated to 3 channels is PIL's L -> RGB
        convert = _Convert(mode)
        if size is None:
            # no size asked for: every image is squashed to the first image's size, as the data comes
            size, geometry = self.first_size, [transforms.Resize(self.first_size)]
        else:
            geometry = [_ResizeCover(size), transforms.CenterCrop(size)]
        eval_pixels = transforms.Compose([convert, *geometry, transforms.ToTensor()])

        def measured() -> tuple[list[float], list[float]]:
            picks = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.seed))[:256]
            sample = torch.stack([eval_pixels(self.train[i][0]) for i in picks.tolist()])
            return sample.mean(dim=(0, 2, 3)).tolist(), sample.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()

        mean, std = _normalisation(measured, mean, std, channels)
        # normalised last, after the PIL crops: padding is black in pixel space, as for tensor data
        normalise = transforms.Normalize(mean, std)
        eval_tf = transforms.Compose([eval_pixels, normalise])
        if augment == "crop-flip":
            random = [*geometry, transforms.RandomCrop(size, padding=_pad_for(size)), transforms.RandomHorizontalFlip()]
        elif augment == "resized-crop-flip":
            random = [transforms.RandomResizedCrop(size, scale=RESIZED_CROP_SCALE), transforms.RandomHorizontalFlip()]
        train_tf = (
            eval_tf if augment == "none" else transforms.Compose([convert, *random, transforms.ToTensor(), normalise])
        )
        return _Views(
            train=_Transformed(self.train, train_tf),
            train_eval=_Transformed(self.train, eval_tf),
            test=_Transformed(self.test, eval_tf),
            size=tuple(size),
            mean=mean,
            std=std,
        )


class _Convert:
    """PIL's mode conversion as a transform that pickles, for DataLoader worker processes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image):
        return image.convert(self.mode)


class _ResizeCover:
    """Resize keeping the aspect ratio so the image covers size / 0.875 (ImageNet's 256 for a 224 crop)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image):
        from torchvision.transforms import functional as TF

        width, height = image.size
        scale = max(self.size[0] / CENTER_CROP_FRACTION / height, self.size[1] / CENTER_CROP_FRACTION / width)
        return TF.resize(image, [max(self.size[0], round(height * scale)), max(self.size[1], round(width * scale))])


class _Transformed(Dataset):
    """Another data set's (image, label) pairs with a transform applied to the image."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        image, label = self.base[i]
        return self.transform(image), label


def _open_image(path: str):
    """The image as stored: torchvision's default loader makes every image RGB, grayscale too."""
    from PIL import Image

    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    return image


def _image_folder(path: Path, seed: int) -> _Folder:
    from torchvision import datasets

    split_dirs = (path / "train", path / "test")
    has_splits = all(d.is_dir() for d in split_dirs)
    try:
        full = datasets.ImageFolder(str(split_dirs[0] if has_splits else path), loader=_open_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise KondenseError(
            f"{path} is not an ImageFolder directory (one sub-directory of images per class, optionally under train/ and test/): {e}"
        ) from None
    first = full[0][0]
    mode = "L" if first.mode in ("L", "1", "I", "I;16") else "RGB"
    if has_splits:
        train, test = full, datasets.ImageFolder(str(split_dirs[1]), loader=_open_image)
        if test.classes != full.classes:
            raise KondenseError(f"{path}: train/ has classes {full.classes} but test/ has {test.classes}")
    else:
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed + 1)).tolist()
        n_test = max(1, len(full) // 5)
        train, test = Subset(full, order[n_test:]), Subset(full, order[:n_test])
    return _Folder(train, test, len(full.classes), mode, (first.size[1], first.size[0]), seed)
