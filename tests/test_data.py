"""Toy data sets and the MNIST loader."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import FakeResponse

from course_pkg import data
from course_pkg.data import TOY_DATASETS, load_mnist, mnist_train_validation, toy_data


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_sets_are_reproducible_2d_and_centred(name):
    points = toy_data(name, 4000, seed=3)
    assert points.shape == (4000, 2) and points.dtype == torch.float32
    assert torch.equal(points, toy_data(name, 4000, seed=3))
    assert not torch.equal(points, toy_data(name, 4000, seed=4))
    assert points.mean(0).abs().max() < 0.25 and 0.5 < points.std(0).min() and points.abs().max() < 5


def test_toy_set_shapes_are_what_their_names_say():
    radii = toy_data("circles", 4000, seed=0).norm(dim=1)
    assert ((radii - 2).abs() < 0.4).float().mean() > 0.45 and ((radii - 1).abs() < 0.4).float().mean() > 0.45
    angles = torch.atan2(*toy_data("eight_gaussians", 4000, seed=0).T.flip(0))
    nearest = torch.round(angles / (torch.pi / 4))
    assert (angles - nearest * torch.pi / 4).abs().max() < 0.2
    board = toy_data("checkerboard", 4000, seed=0)
    assert ((torch.floor(board[:, 0]) + torch.floor(board[:, 1])) % 2 == 0).all()


def test_unknown_toy_set_names_the_choices():
    with pytest.raises(ValueError, match="unknown toy data set 'moons'; expected one of"):
        toy_data("moons", 10)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28))
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(7))
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    return images


def test_mnist_reads_idx_files_from_the_data_folder(tiny_mnist):
    mnist = load_mnist("test", download=False)
    assert mnist.images.shape == (7, 1, 28, 28) and mnist.images.dtype == torch.uint8
    assert np.array_equal(mnist.images[:, 0].numpy(), tiny_mnist)
    assert mnist.labels.tolist() == list(range(7))


def test_missing_mnist_files_name_the_folder_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"not in {tmp_path / 'mnist'}.*switched off.*COURSE_PKG_DATA"):
        load_mnist("train", download=False)


def test_download_refuses_a_file_with_the_wrong_checksum(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"not the MNIST file"))
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="differs from the published"):
        load_mnist("test")
    assert list(tmp_path.rglob("*.gz")) == []


def test_a_failed_download_is_not_tried_again_in_the_same_process(tmp_path, monkeypatch):
    tries = []

    def unreachable(url, timeout):
        tries.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", unreachable)
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="network unreachable"):
        load_mnist("train")
    assert len(tries) == len(data.MNIST_MIRRORS), "the first call tries every mirror"
    with pytest.raises(FileNotFoundError, match="network unreachable; not tried again in this process"):
        load_mnist("train")
    assert len(tries) == len(data.MNIST_MIRRORS), "the second call tries none"


def test_download_stores_a_verified_file(tmp_path, monkeypatch):
    payload = b"pretend IDX payload"
    monkeypatch.setitem(data.MNIST_FILES, "t10k-labels-idx1-ubyte.gz", hashlib.md5(payload).hexdigest())

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: FakeResponse(payload))
    path = data._fetch(tmp_path / "mnist", "t10k-labels-idx1-ubyte.gz", download=True)
    assert path.read_bytes() == payload


def test_data_root_defaults_to_a_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_PKG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.data_root() == tmp_path / "course_pkg"


@pytest.mark.skipif(not os.environ.get("COURSE_PKG_DATA"), reason="needs the MNIST files (COURSE_PKG_DATA)")
def test_real_mnist_test_split():
    mnist = load_mnist("test", download=False)
    assert mnist.images.shape == (10_000, 1, 28, 28)
    assert mnist.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(mnist.labels).min() > 850


def test_train_validation_split_falls_back_to_the_test_split(tiny_mnist):
    train, validation, source = mnist_train_validation(validation_size=2, download=False)
    assert train.images.shape[0] == 5 and validation.images.shape[0] == 2
    assert "training split unavailable" in source
    together = torch.cat([train.labels, validation.labels]).sort().values
    assert together.tolist() == list(range(7))
