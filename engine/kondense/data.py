"""Data sets as train / validation / test splits.

Sources: the name `fashion-mnist` (Debian's IDX files, or a given root), a directory in
ImageFolder layout, or an `.npz` file with arrays `x` and `y`. The validation split is
carved from the training data with a seeded permutation, so every run and every process
sees the same split; the test split is only ever used to report.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

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


@dataclass
class DataBundle:
    """Three splits of one data set, already normalised, plus what a model needs to fit it."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]  # C, H, W as the model sees it

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


def load(
    source: str,
    *,
    root: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    input_shape: tuple[int, int, int] | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    test_samples: int | None = None,
) -> DataBundle:
    """Load a data set by name or path and split it.

    `input_shape` resizes images to the model's H, W (and checks the channels);
    the *_samples arguments take deterministic subsets, for tests and quick runs.
    """
    if not 0 < val_fraction < 1:
        raise KondenseError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if source in NAMED_DATASETS:
        name, (train_all, test, num_classes, shape) = source, _fashion_mnist(root)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise KondenseError(
                f"data '{source}' is neither a known data set ({', '.join(NAMED_DATASETS)}) nor an existing path; "
                "give an ImageFolder directory or an .npz file with arrays x and y"
            )
        name = path.name
        if path.is_dir():
            train_all, test, num_classes, shape = _image_folder(path, seed)
        elif path.suffix == ".npz":
            train_all, test, num_classes, shape = _npz(path, seed)
        else:
            raise KondenseError(
                f"data file '{source}' has an unknown format: expected an .npz file or an ImageFolder directory"
            )

    if input_shape is not None:
        if input_shape[0] != shape[0]:
            raise KondenseError(f"the model expects {input_shape[0]} input channels but '{source}' has {shape[0]}")
        if tuple(input_shape[1:]) != tuple(shape[1:]):
            train_all, test = _Resized(train_all, input_shape[1:]), _Resized(test, input_shape[1:])
            shape = input_shape

    order = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(len(train_all) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if train_samples:
        train_idx = train_idx[:train_samples]
    if val_samples:
        val_idx = val_idx[:val_samples]
    test_idx = list(range(len(test)))[: test_samples or None]
    return DataBundle(
        name=name,
        train=Subset(train_all, train_idx),
        val=Subset(train_all, val_idx),
        test=Subset(test, test_idx),
        num_classes=num_classes,
        input_shape=tuple(shape),  # type: ignore[arg-type]
    )


def _tensor_dataset(x: torch.Tensor, y: torch.Tensor, mean: list[float], std: list[float]) -> TensorDataset:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return TensorDataset((x.float() / 255.0 - m) / s if x.dtype == torch.uint8 else (x.float() - m) / s, y.long())


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(root: str | None):
    candidates = [root] if root else [os.environ.get("KONDENSE_FASHION_MNIST")] + FASHION_MNIST_DIRS
    candidates = [c for c in candidates if c]
    for directory in candidates:
        files = {k: Path(directory) / v for k, v in FASHION_MNIST_FILES.items()}
        if all(f.exists() for f in files.values()):
            arrays = {k: torch.from_numpy(_read_idx(f).copy()) for k, f in files.items()}
            mean, std = FASHION_MNIST_STATS
            train = _tensor_dataset(arrays["train_x"].unsqueeze(1), arrays["train_y"], mean, std)
            test = _tensor_dataset(arrays["test_x"].unsqueeze(1), arrays["test_y"], mean, std)
            return train, test, 10, (1, 28, 28)
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


def _npz(path: Path, seed: int):
    with np.load(path, allow_pickle=False) as arrays:
        if "x" not in arrays or "y" not in arrays:
            raise KondenseError(
                f"{path} holds arrays {sorted(arrays.files)}; expected at least 'x' (images) and 'y' (labels)"
            )
        x, y = _to_nchw(arrays["x"], path), torch.from_numpy(arrays["y"].astype(np.int64)).view(-1)
        if "x_test" in arrays and "y_test" in arrays:
            train = (x, y)
            test = (_to_nchw(arrays["x_test"], path), torch.from_numpy(arrays["y_test"].astype(np.int64)).view(-1))
        else:
            train, test = _carve_test(x, y, seed)
    if len(x) != len(y):
        raise KondenseError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
    xf = train[0].float() / (255.0 if train[0].dtype == torch.uint8 else 1.0)
    mean, std = xf.mean(dim=(0, 2, 3)).tolist(), xf.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    return _tensor_dataset(*train, mean, std), _tensor_dataset(*test, mean, std), num_classes, tuple(x.shape[1:])


def _image_folder(path: Path, seed: int):
    from torchvision import datasets, transforms

    split_dirs = (path / "train", path / "test")
    has_splits = all(d.is_dir() for d in split_dirs)
    try:
        probe = datasets.ImageFolder(str(split_dirs[0] if has_splits else path))
    except (FileNotFoundError, RuntimeError) as e:
        raise KondenseError(
            f"{path} is not an ImageFolder directory (one sub-directory of images per class, optionally under train/ and test/): {e}"
        ) from None
    # every image becomes the first image's mode and size, so batches stack
    first = probe[0][0]
    mode = "L" if first.mode in ("L", "1", "I", "I;16") else "RGB"
    height_width = (first.size[1], first.size[0])
    to_tensor = transforms.Compose(
        [transforms.Lambda(lambda im: im.convert(mode)), transforms.Resize(height_width), transforms.ToTensor()]
    )
    picks = torch.randperm(len(probe), generator=torch.Generator().manual_seed(seed))[:256].tolist()
    sample = torch.stack([to_tensor(probe[i][0]) for i in picks])
    mean, std = sample.mean(dim=(0, 2, 3)).tolist(), sample.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    tf = transforms.Compose([to_tensor, transforms.Normalize(mean, std)])
    if has_splits:
        train = datasets.ImageFolder(str(split_dirs[0]), transform=tf)
        test = datasets.ImageFolder(str(split_dirs[1]), transform=tf)
        if test.classes != train.classes:
            raise KondenseError(f"{path}: train/ has classes {train.classes} but test/ has {test.classes}")
        classes = train.classes
    else:
        full = datasets.ImageFolder(str(path), transform=tf)
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed + 1)).tolist()
        n_test = max(1, len(full) // 5)
        train, test, classes = Subset(full, order[n_test:]), Subset(full, order[:n_test]), full.classes
    return train, test, len(classes), (sample.shape[1], *height_width)


class _Resized(Dataset):
    """Bilinear resize of another data set's images to a model's input size."""

    def __init__(self, base: Dataset, size: tuple[int, int]) -> None:
        self.base, self.size = base, tuple(size)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return F.interpolate(x.unsqueeze(0), size=self.size, mode="bilinear", align_corners=False).squeeze(0), y
