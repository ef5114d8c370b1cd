"""The CIFAR-10 loader and train_validation, on a tiny fixture of the official python-pickle format."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import FakeResponse

from course_pkg import data
from course_pkg.data import ImageSet, load_cifar10, train_validation

PER_BATCH = 20
NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_batches(folder: Path, names=NAMES) -> dict[str, dict]:
    """The official batch files with ``PER_BATCH`` random images each; returns what was written."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in names:
        batch = {
            b"batch_label": f"{name} of the test fixture".encode(),
            b"labels": rng.integers(0, 10, PER_BATCH).tolist(),
            b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    return batches


def tarball(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def cifar(tmp_path, monkeypatch) -> dict[str, dict]:
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    return write_batches(tmp_path / "cifar10" / "cifar-10-batches-py")


def serve(monkeypatch, payload: bytes, checksum: str | None = None) -> list[str]:
    """Answer downloads with ``payload``; the archive's table entry becomes ``checksum`` (its MD5 by default)."""
    urls = []

    def urlopen(url, timeout):
        urls.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)
    monkeypatch.setitem(data.CIFAR10_FILES, "cifar-10-python.tar.gz", checksum or hashlib.md5(payload).hexdigest())
    return urls


def test_pixels_round_trip_exactly(cifar):
    test = load_cifar10("test", download=False)
    assert isinstance(test, ImageSet)
    assert test.images.shape == (PER_BATCH, 3, 32, 32) and test.images.dtype == torch.uint8
    assert test.labels.shape == (PER_BATCH,) and test.labels.dtype == torch.int64
    raw = cifar["test_batch"][b"data"]
    for i, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 31), (19, 2, 31, 7)]:
        assert test.images[i, c, h, w].item() == raw[i, c * 1024 + h * 32 + w]
    assert np.array_equal(test.images.reshape(PER_BATCH, -1).numpy(), raw)
    assert test.labels.tolist() == cifar["test_batch"][b"labels"]


def test_train_concatenates_batches_one_to_five_in_order(cifar):
    train = load_cifar10("train", download=False)
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32)
    expected = np.concatenate([cifar[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert np.array_equal(train.images.reshape(5 * PER_BATCH, -1).numpy(), expected)
    assert train.labels.tolist() == sum((cifar[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])


def test_missing_folder_names_the_folder_and_what_to_put_there(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    with pytest.raises(FileNotFoundError, match=f"not in {batches} .*switched off.*test_batch.*COURSE_PKG_DATA"):
        load_cifar10("test", download=False)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        load_cifar10("valid")


@pytest.mark.parametrize(
    "batch, problem",
    [({b"labels": [0]}, "expected a dict with b'data' and b'labels'"),
     ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, r"uint8 \[n, 3072\]"),
     ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 labels")],
)
def test_a_malformed_batch_names_the_file(cifar, tmp_path, batch, problem):
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=f"{path}.*{problem}"):
        load_cifar10("test", download=False)


def test_download_verifies_and_extracts_the_archive_once(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    source = write_batches(tmp_path / "source", ["test_batch"])
    payload = tarball({"cifar-10-batches-py/test_batch": (tmp_path / "source" / "test_batch").read_bytes(),
                       "cifar-10-batches-py/readme.html": b"<p>fixture</p>"})
    urls = serve(monkeypatch, payload)
    test = load_cifar10("test")
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert np.array_equal(test.images.reshape(PER_BATCH, -1).numpy(), source["test_batch"][b"data"])
    assert (tmp_path / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == payload
    load_cifar10("test")
    assert len(urls) == 1, "the extracted folder is read, not downloaded again"


def test_a_bad_checksum_is_refused_and_not_tried_again(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    urls = serve(monkeypatch, b"not the CIFAR-10 archive", checksum="c58f30108f718f92721af3b95e74349a")
    with pytest.raises(FileNotFoundError, match="differs from the published c58f3010"):
        load_cifar10("test")
    with pytest.raises(FileNotFoundError, match="not tried again in this process"):
        load_cifar10("test")
    assert len(urls) == 1 and list(tmp_path.rglob("*.tar.gz")) == []


@pytest.mark.parametrize(
    "members, symlink",
    [({"cifar-10-batches-py/../../escaped": b"x"}, None),
     ({"/tmp/absolute": b"x"}, None),
     ({"elsewhere/test_batch": b"x"}, None),
     ({}, "cifar-10-batches-py/test_batch")],
)
def test_extraction_refuses_members_outside_the_batches_folder(tmp_path, monkeypatch, members, symlink):
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path / "root"))
    serve(monkeypatch, tarball(members, symlink))
    with pytest.raises(ValueError, match="refusing to extract it"):
        load_cifar10("test")
    extracted = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert extracted == {"root", "root/cifar10", "root/cifar10/cifar-10-python.tar.gz"}


def test_train_validation_uses_both_official_splits(cifar):
    train, validation, source = train_validation("cifar10", validation_size=5, download=False)
    assert train.images.shape[0] == 5 * PER_BATCH and validation.images.shape[0] == PER_BATCH
    assert source == "CIFAR-10: official training split (100) and test split (20)"


def test_train_validation_splits_the_test_batch_when_it_is_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    batches = write_batches(tmp_path / "cifar10" / "cifar-10-batches-py", ["test_batch"])
    train, validation, source = train_validation("cifar10", validation_size=6, download=False)
    assert train.images.shape == (14, 3, 32, 32) and validation.images.shape == (6, 3, 32, 32)
    assert source == ("CIFAR-10: training split unavailable, so the 20 test images were split into "
                      "14 for training and 6 for validation")
    together = torch.cat([train.labels, validation.labels]).sort().values
    assert together.tolist() == sorted(batches["test_batch"][b"labels"])
    again = train_validation("cifar10", validation_size=6, download=False)
    assert torch.equal(again[0].images, train.images), "the split is fixed by the seed"


def test_train_validation_for_mnist_and_unknown_names(tmp_path, monkeypatch):
    from test_data import write_idx

    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((7, 28, 28)))
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(7))
    monkeypatch.setenv("COURSE_PKG_DATA", str(tmp_path))
    train, validation, source = train_validation("mnist", validation_size=3, download=False)
    assert train.images.shape == (4, 1, 28, 28) and validation.images.shape == (3, 1, 28, 28)
    assert source.startswith("MNIST: training split unavailable, so the 7 test images were split into 4")
    assert data.MNIST is ImageSet
    with pytest.raises(ValueError, match=r"unknown image data set 'svhn'; expected one of \['cifar10', 'mnist'\]"):
        train_validation("svhn", 10)
    with pytest.raises(ValueError, match="validation_size must be between 1 and 6, got 7"):
        train_validation("mnist", 7, download=False)
