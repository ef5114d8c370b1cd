"""Data: the 2-D toy densities of the flow literature and an MNIST loader.

The toy sets are made by numpy alone from a seed, so every figure in the book is reproducible.
MNIST is read from the official IDX files. The loader looks in ``$COURSE_PKG_DATA/mnist`` when
that environment variable is set, else in a per-user cache folder, and downloads there (verifying
the published MD5 checksums) only when the files are missing and a network is reachable.
"""

from __future__ import annotations

import gzip
import hashlib
import os
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


class MNIST(NamedTuple):
    """MNIST images ``[N, 1, 28, 28]`` (uint8, 0..255) and labels ``[N]`` (int64)."""

    images: Tensor
    labels: Tensor


def data_root() -> Path:
    """``$COURSE_PKG_DATA`` if set, else ``$XDG_CACHE_HOME/course_pkg`` (``~/.cache/course_pkg``)."""
    if os.environ.get("COURSE_PKG_DATA"):
        return Path(os.environ["COURSE_PKG_DATA"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "course_pkg"


def load_mnist(split: str = "test", root: str | os.PathLike | None = None, download: bool = True) -> MNIST:
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


def _fetch(folder: Path, name: str, download: bool) -> Path:
    path = folder / name
    if path.exists():
        return path
    if not download:
        reason = "downloading was switched off"
    elif path in _FAILED_DOWNLOADS:
        reason = f"{_FAILED_DOWNLOADS[path]}; not tried again in this process"
    else:
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                _download(mirror + name, path)
                return path
            except OSError as error:  # no network, a mirror down, or a bad checksum
                errors.append(f"{mirror}: {error}")
        reason = _FAILED_DOWNLOADS[path] = "; ".join(errors)
    raise FileNotFoundError(
        f"MNIST file {name} is not in {folder} ({reason}). Put the official IDX files there, or set "
        f"COURSE_PKG_DATA to a folder that has them in its mnist/ subfolder."
    )


def _download(url: str, path: Path) -> None:
    with urllib.request.urlopen(url, timeout=30) as response:
        payload = response.read()
    checksum = hashlib.md5(payload).hexdigest()
    if checksum != MNIST_FILES[path.name]:
        raise OSError(f"checksum {checksum} differs from the published {MNIST_FILES[path.name]}")
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
) -> tuple[MNIST, MNIST, str]:
    """Training and validation images, and a sentence saying where they came from.

    Uses the official training split and the test split when both are available; where only the
    10,000-image test split is (as on machines without a network), splits it into
    ``10,000 - validation_size`` training and ``validation_size`` validation images.
    """
    test = load_mnist("test", download=download)
    try:
        train = load_mnist("train", download=download)
        return train, test, "MNIST: official training split (60,000) and test split (10,000)"
    except FileNotFoundError:
        order = torch.randperm(test.images.shape[0], generator=torch.Generator().manual_seed(seed))
        held_out, kept = order[:validation_size], order[validation_size:]
        source = (
            f"MNIST: training split unavailable, so the 10,000 test images were split into "
            f"{kept.numel()} for training and {held_out.numel()} for validation"
        )
        return MNIST(test.images[kept], test.labels[kept]), MNIST(test.images[held_out], test.labels[held_out]), source
