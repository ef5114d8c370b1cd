"""Data: the 2-D toy densities of the flow literature and MNIST and CIFAR-10 loaders.

The toy sets are made by numpy alone from a seed, so every figure in the book is reproducible.
MNIST is read from the official IDX files. The loader looks in ``$COURSE_PKG_DATA/mnist`` when
that environment variable is set, else in a per-user cache folder, and downloads there (verifying
the published MD5 checksums) only when the files are missing and a network is reachable.
CIFAR-10 is read the same way from the official python-pickle batches in ``cifar10/``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

# ---------------------------------------------------------------------------- 2-D toy densities


def two_moons(num_samples: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Two interleaved half circles, centred and scaled to about ``[-2, 2]^2``."""
    angle = rng.uniform(0, np.pi, num_samples)
    upper = rng.random(num_samples) < 0.5
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x - 0.5, y - 0.25], axis=1) * 1.6
    return points + noise * 1.6 * rng.standard_normal((num_samples, 2))


def circles(num_samples: int, rng: np.random.Generator, noise: float = 0.05, factor: float = 0.5) -> np.ndarray:
    """Two concentric rings of radii 2 and ``2 * factor``."""
    angle = rng.uniform(0, 2 * np.pi, num_samples)
    radius = np.where(rng.random(num_samples) < 0.5, 2.0, 2.0 * factor)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + noise * 2 * rng.standard_normal((num_samples, 2))


def eight_gaussians(num_samples: int, rng: np.random.Generator, std: float = 0.1) -> np.ndarray:
    """Eight narrow Gaussians on a circle of radius 2: the classic multi-modal target."""
    angles = rng.integers(0, 8, num_samples) * (np.pi / 4)
    centres = 2 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + std * rng.standard_normal((num_samples, 2))


def checkerboard(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the dark squares of a 4x4 board over ``[-2, 2]^2``; its density is discontinuous."""
    x = rng.uniform(-2, 2, num_samples)
    column = np.floor(x) % 2
    y = rng.uniform(0, 1, num_samples) + rng.integers(0, 2, num_samples) * 2 - 2 + column
    return np.stack([x, y], axis=1)


def pinwheel(num_samples: int, rng: np.random.Generator, num_arms: int = 5) -> np.ndarray:
    """Gaussian blobs sheared into curved arms (the pinwheel of Johnson et al. 2016)."""
    radial_std, tangential_std, rate = 0.3, 0.1, 0.25
    arm = rng.integers(0, num_arms, num_samples)
    points = rng.standard_normal((num_samples, 2)) * np.array([radial_std, tangential_std])
    points[:, 0] += 1.0
    angle = arm * (2 * np.pi / num_arms) + rate * np.exp(points[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = np.stack([cos * points[:, 0] - sin * points[:, 1], sin * points[:, 0] + cos * points[:, 1]], axis=1)
    return 2 * rotated


def two_spirals(num_samples: int, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """Two interleaved spirals of about 1.5 turns each."""
    turn = np.sqrt(rng.random(num_samples)) * 3 * np.pi
    sign = np.where(rng.random(num_samples) < 0.5, 1.0, -1.0)
    points = sign[:, None] * np.stack([-np.cos(turn) * turn, np.sin(turn) * turn], axis=1) / 3
    return points + noise * rng.standard_normal((num_samples, 2))


TOY_DATASETS: dict[str, Callable[..., np.ndarray]] = {
    "two_moons": two_moons,
    "circles": circles,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "two_spirals": two_spirals,
}


def toy_data(name: str, num_samples: int, seed: int = 0) -> Tensor:
    """``[num_samples, 2]`` float32 points of the toy set ``name`` (see ``TOY_DATASETS``)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; expected one of {sorted(TOY_DATASETS)}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    points = TOY_DATASETS[name](num_samples, np.random.default_rng(seed))
    return torch.from_numpy(points.astype(np.float32))


# ------------------------------------------------------------------------------------------ MNIST

MNIST_FILES = {  # file name -> published MD5 checksum
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class ImageSet(NamedTuple):
    """Images ``[N, C, H, W]`` (uint8, 0..255) and labels ``[N]`` (int64): MNIST ``[N, 1, 28, 28]``,
    CIFAR-10 ``[N, 3, 32, 32]``."""

    images: Tensor
    labels: Tensor


MNIST = ImageSet  # the name this type had when MNIST was the only image set


def data_root() -> Path:
    """``$COURSE_PKG_DATA`` if set, else ``$XDG_CACHE_HOME/course_pkg`` (``~/.cache/course_pkg``)."""
    if os.environ.get("COURSE_PKG_DATA"):
        return Path(os.environ["COURSE_PKG_DATA"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "course_pkg"


def load_mnist(split: str = "test", root: str | os.PathLike | None = None, download: bool = True) -> ImageSet:
    """Read one MNIST split (``"train"`` or ``"test"``) from ``root/mnist`` (default :func:`data_root`).

    Missing files are downloaded and checked against the published MD5 sums when ``download``;
    a file that is still missing raises ``FileNotFoundError`` naming the folder that was searched.
    A file whose download failed is not tried again in the same process.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else data_root()
    folder = folder / "mnist"
    prefix = _SPLIT_PREFIX[split]
    images = _read_idx(_fetch(folder, f"{prefix}-images-idx3-ubyte.gz", download))
    labels = _read_idx(_fetch(folder, f"{prefix}-labels-idx1-ubyte.gz", download))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return MNIST(images.unsqueeze(1), labels.long())


_FAILED_DOWNLOADS: dict[Path, str] = {}
"""Why each file that could not be downloaded failed: tried once per process, not on every call
(without a network each try can wait for the mirrors' timeouts). Restart Python to try again."""


_SOURCES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {}  # data set -> (checksums, mirrors)


def _fetch(folder: Path, name: str, download: bool) -> Path:
    path, reason = _try_fetch(folder, name, download, "mnist")
    if path is not None:
        return path
    raise FileNotFoundError(
        f"MNIST file {name} is not in {folder} ({reason}). Put the official IDX files there, or set "
        f"COURSE_PKG_DATA to a folder that has them in its mnist/ subfolder."
    )


def _try_fetch(folder: Path, name: str, download: bool, dataset: str) -> tuple[Path | None, str]:
    """``(path, "")`` once ``folder/name`` exists (downloaded and checked if it was missing), else
    ``(None, why not)``. Each file is tried once per process (see ``_FAILED_DOWNLOADS``)."""
    checksums, mirrors = _SOURCES[dataset]
    path = folder / name
    if path.exists():
        return path, ""
    if not download:
        reason = "downloading was switched off"
    elif path in _FAILED_DOWNLOADS:
        reason = f"{_FAILED_DOWNLOADS[path]}; not tried again in this process"
    else:
        errors = []
        for mirror in mirrors:
            try:
                _download(mirror + name, path, checksums[name])
                return path, ""
            except OSError as error:  # no network, a mirror down, or a bad checksum
                errors.append(f"{mirror}: {error}")
        reason = _FAILED_DOWNLOADS[path] = "; ".join(errors)
    return None, reason


def _download(url: str, path: Path, expected_md5: str) -> None:
    """Store the file at ``url`` as ``path`` if its MD5 checksum is ``expected_md5``, else raise ``OSError``."""
    with urllib.request.urlopen(url, timeout=30) as response:
        payload = response.read()
    checksum = hashlib.md5(payload).hexdigest()
    if checksum != expected_md5:
        raise OSError(f"checksum {checksum} differs from the published {expected_md5}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_bytes(payload)
    partial.replace(path)


def _read_idx(path: Path) -> Tensor:
    """Parse an IDX file: magic ``0x0000 08 n`` (unsigned bytes, ``n`` dimensions), sizes, data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    num_dims = raw[3]
    sizes = np.frombuffer(raw, dtype=">i4", count=num_dims, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * num_dims)
    if data.size != int(np.prod(sizes)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(sizes))} values, found {data.size}")
    return torch.from_numpy(data.reshape(*sizes).copy())


def mnist_train_validation(
    validation_size: int = 2000, seed: int = 0, download: bool = True
) -> tuple[ImageSet, ImageSet, str]:
    """MNIST training and validation images, and a sentence saying where they came from
    (:func:`train_validation` for ``"mnist"``)."""
    return train_validation("mnist", validation_size, seed, download)


# --------------------------------------------------------------------------------------- CIFAR-10

CIFAR10_FILES = {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}  # name -> published MD5
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_SOURCES.update(mnist=(MNIST_FILES, MNIST_MIRRORS), cifar10=(CIFAR10_FILES, CIFAR10_MIRRORS))


def load_cifar10(split: str = "test", root: str | os.PathLike | None = None, download: bool = True) -> ImageSet:
    """Read one CIFAR-10 split from the python-pickle batches in ``root/cifar10/cifar-10-batches-py``.

    ``"train"`` is ``data_batch_1`` .. ``data_batch_5`` in that order (50,000 images), ``"test"`` is
    ``test_batch`` (10,000). Returns images ``[N, 3, 32, 32]`` (uint8, RGB) and labels ``[N]`` (int64).
    When the batches folder is missing and ``download``, the official archive is downloaded into
    ``root/cifar10``, checked against its published MD5 sum and extracted (regular files under
    ``cifar-10-batches-py/`` only), once per process. Missing data raises ``FileNotFoundError``
    naming the folder searched; a malformed batch raises ``ValueError`` naming the file.
    """
    if split not in _CIFAR10_BATCHES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = (Path(root) if root is not None else data_root()) / "cifar10"
    batches = folder / CIFAR10_FOLDER
    if not batches.is_dir():
        archive, reason = _try_fetch(folder, "cifar-10-python.tar.gz", download, "cifar10")
        if archive is None:
            raise FileNotFoundError(
                f"CIFAR-10 batches are not in {batches} ({reason}). Put the official python-pickle batches "
                f"(data_batch_1 .. data_batch_5, test_batch) there, or set COURSE_PKG_DATA to a folder that "
                f"has them in its cifar10/{CIFAR10_FOLDER}/ subfolder."
            )
        _extract_cifar10(archive, folder)
    parts = [_read_cifar10_batch(batches / name) for name in _CIFAR10_BATCHES[split]]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageSet(images, labels)


def _extract_cifar10(archive: Path, folder: Path) -> None:
    """Extract the regular files under ``cifar-10-batches-py/`` of ``archive`` into ``folder``;
    any other member (a link, an absolute path, ``..``) makes it refuse the whole archive."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if not m.isdir()]
            for member in members:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 2 or parts[0] != CIFAR10_FOLDER or ".." in parts:
                    raise ValueError(
                        f"{archive} holds {member.name!r}, which is not a regular file directly under "
                        f"{CIFAR10_FOLDER}/; refusing to extract it"
                    )
            partial = folder / (CIFAR10_FOLDER + ".part")
            partial.mkdir(parents=True, exist_ok=True)
            for member in members:
                (partial / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    except tarfile.TarError as error:
        raise ValueError(f"{archive} is not a readable .tar.gz archive: {error}") from error
    partial.replace(folder / CIFAR10_FOLDER)


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``data`` ``[n, 3072]`` uint8 and ``labels`` ``[n]`` int64 of one python-pickle batch.

    Unpickling runs code from the file: only read batches from the checked archive or a trusted copy.
    """
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10 batch {path.name} is not in {path.parent}; expected the official batches")
    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="bytes")
    except Exception as error:
        raise ValueError(f"{path} is not a CIFAR-10 pickle batch: {error}") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels', found {found}")
    images, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{path}: expected b'data' uint8 [n, 3072] and n b'labels', found {images.dtype} "
            f"{list(images.shape)} and {labels.shape[0] if labels.ndim else 0} labels"
        )
    return images, labels


# ---------------------------------------------------------------------------- train / validation

_IMAGE_SETS: dict[str, tuple[str, Callable[..., ImageSet]]] = {"mnist": ("MNIST", load_mnist), "cifar10": ("CIFAR-10", load_cifar10)}


def train_validation(
    dataset: str, validation_size: int, seed: int = 0, download: bool = True
) -> tuple[ImageSet, ImageSet, str]:
    """Training and validation images of ``"mnist"`` or ``"cifar10"``, and a sentence saying where they came from.

    Uses the official training split and the test split when both are available; where only the
    test split (``N`` images) is, splits it at random (``seed``) into ``N - validation_size``
    training and ``validation_size`` validation images.
    """
    if dataset not in _IMAGE_SETS:
        raise ValueError(f"unknown image data set {dataset!r}; expected one of {sorted(_IMAGE_SETS)}")
    title, load = _IMAGE_SETS[dataset]
    test = load("test", download=download)
    count = test.images.shape[0]
    try:
        train = load("train", download=download)
        return train, test, f"{title}: official training split ({train.images.shape[0]:,}) and test split ({count:,})"
    except FileNotFoundError:
        if not 0 < validation_size < count:
            raise ValueError(f"validation_size must be between 1 and {count - 1}, got {validation_size}") from None
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        held_out, kept = order[:validation_size], order[validation_size:]
        source = (
            f"{title}: training split unavailable, so the {count:,} test images were split into "
            f"{kept.numel()} for training and {held_out.numel()} for validation"
        )
        return ImageSet(test.images[kept], test.labels[kept]), ImageSet(test.images[held_out], test.labels[held_out]), source
