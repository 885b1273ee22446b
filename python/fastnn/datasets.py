"""Reading IDX files (the MNIST format) and downloading data files with checksums.

IDX layout: two zero bytes, a type code, the number of dimensions d, then d big-endian uint32
sizes, then the values in big-endian C order. Files may be gzipped; that is detected from the
content, not the name.

Downloads are cached: a file that exists with the right checksum is not fetched again. A new
download goes to a temporary file beside the target and replaces it only once its checksum
is right, so an interrupted or corrupt download never leaves a bad file under the real name.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import pathlib
import tempfile
import urllib.parse
import zlib
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "load_idx",
    "load_mnist",
    "download",
    "download_mnist",
    "MNIST_MIRRORS",
    "MNIST_FILES",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# Where the MNIST files are served, tried in order; pass `mirrors=` to use others.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# The four MNIST files and their published md5 sums.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None


def load_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a native-endian numpy array.

    Supports every IDX type (uint8, int8, int16, int32, float32, float64) and any number of
    dimensions. The array is a writable copy of the file's data.

    Raises:
        ValueError naming the file if the header is not IDX or the data is truncated, has
        trailing bytes, or (for gzip) is corrupt.

    Example:
        >>> labels = load_idx("train-labels-idx1-ubyte.gz")   # uint8, shape (60000,)
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex()}; expected 0000 followed by "
            f"a type code in {sorted(hex(c) for c in _IDX_DTYPES)} and the rank)"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header (rank {ndim} needs {header} bytes, "
                         f"file has {len(data)})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX data {problem}: shape {shape} of {dtype.newbyteorder('=')} needs "
            f"{expected} bytes, file has {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _mnist_candidates(split: str, kind: str) -> Sequence[str]:
    ubyte = "idx3-ubyte" if kind == "images" else "idx1-ubyte"
    names = [f"{split}-{kind}-{ubyte}", f"{split}-{kind}.{ubyte}"]
    return [n + ext for n in names for ext in ("", ".gz")]


def load_mnist(directory: PathLike, train: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Load the MNIST training or test set from the standard IDX files in `directory`.

    Looks for train-images-idx3-ubyte / train-labels-idx1-ubyte (or t10k-... for the test
    set), gzipped or not, also under the names with a dot (train-images.idx3-ubyte).

    Returns:
        (images, labels): uint8 (N, 28, 28) and int64 (N,).

    Example:
        >>> x_train, y_train = load_mnist(download_mnist("data/mnist"))
    """
    directory = os.fspath(directory)
    split = "train" if train else "t10k"
    found = {}
    for kind in ("images", "labels"):
        candidates = _mnist_candidates(split, kind)
        for name in candidates:
            if os.path.isfile(os.path.join(directory, name)):
                found[kind] = os.path.join(directory, name)
                break
        else:
            raise FileNotFoundError(
                f"load_mnist: no MNIST {'training' if train else 'test'} {kind} in "
                f"{directory!r}; looked for {', '.join(candidates)} "
                f"(download_mnist fetches them)"
            )
    images, labels = load_idx(found["images"]), load_idx(found["labels"])
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{found['images']}: expected uint8 images (N, H, W), "
                         f"got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{found['labels']}: expected uint8 labels (N,), "
                         f"got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"load_mnist: {images.shape[0]} images but {labels.shape[0]} labels "
                         f"in {directory!r}")
    return images, labels.astype(np.int64)


def _digests(path: str) -> Dict[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def _checksum_problem(path: str, expected: Dict[str, str]) -> Optional[str]:
    """None if `path` has the expected digests, else a sentence saying what differs."""
    if not expected:
        return None
    actual = _digests(path)
    for name, want in expected.items():
        if actual[name] != want:
            return f"{name} is {actual[name]}, expected {want}"
    return None


def download(
    url: str,
    directory: PathLike,
    sha256: Optional[str] = None,
    md5: Optional[str] = None,
    filename: Optional[str] = None,
    *,
    timeout: float = 60.0,
    verbose: bool = False,
) -> pathlib.Path:
    """Download `url` into `directory` unless a good copy is already there.

    Args:
        url: http(s):// or file:// address.
        directory: where to put the file (created if missing).
        sha256, md5: expected hex digests; the download is kept only if they match. Without
            any checksum an existing file is trusted as it is.
        filename: the name to save under; defaults to the last part of the URL's path.
        timeout: seconds to wait for the server.
        verbose: show a progress bar (tqdm).

    Returns:
        the path of the file.

    Raises:
        ValueError if the downloaded data fails its checksum (nothing is left behind);
        OSError (urllib.error.URLError) if the download fails.
    """
    expected = {k: v.lower() for k, v in (("sha256", sha256), ("md5", md5)) if v is not None}
    if filename is None:
        filename = os.path.basename(urllib.parse.urlparse(url).path)
        if not filename:
            raise ValueError(f"download: cannot take a file name from {url!r}; pass filename=")
    if os.path.basename(filename) != filename or filename in (".", ".."):
        raise ValueError(f"download: filename must be a plain file name, got {filename!r}")
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(os.fspath(directory), filename)
    if os.path.isfile(target):
        problem = _checksum_problem(target, expected)
        if problem is None:
            log.debug("download: %s already present, not fetching", target)
            return pathlib.Path(target)
        log.warning("download: removing %s (%s) and fetching it again", target, problem)
        os.unlink(target)

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)),
                               prefix="." + filename + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, timeout, verbose, filename)
            out.flush()
            os.fsync(out.fileno())
        problem = _checksum_problem(tmp, expected)
        if problem is not None:
            raise ValueError(f"download: {url} failed its checksum ({problem}); "
                             f"the bad download was removed")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return pathlib.Path(target)


def _fetch(url: str, out, timeout: float, verbose: bool, desc: str) -> None:
    import urllib.request  # about 35 ms: imported on first download, not with fastnn

    request = urllib.request.Request(url, headers={"User-Agent": "fastnn"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        bar = None
        if verbose:
            from tqdm import tqdm

            bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=desc)
        try:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()


def download_mnist(
    directory: PathLike,
    mirrors: Optional[Sequence[str]] = None,
    *,
    timeout: float = 60.0,
    verbose: bool = False,
) -> pathlib.Path:
    """Fetch the four MNIST files (gzipped IDX) into `directory`, checking their md5 sums.

    Args:
        directory: where the files go; files already there with the right md5 are kept.
        mirrors: base URLs tried in order for each file (default `MNIST_MIRRORS`).
        timeout, verbose: as for `download`.

    Returns:
        `directory`, ready for `load_mnist`.

    Raises:
        OSError listing each mirror's failure if no mirror delivered a file.
    """
    mirrors = MNIST_MIRRORS if mirrors is None else tuple(mirrors)
    if not mirrors:
        raise ValueError("download_mnist: mirrors must list at least one base URL")
    for name, md5 in MNIST_FILES.items():
        failures = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name
            try:
                download(url, directory, md5=md5, timeout=timeout, verbose=verbose)
                break
            except (OSError, ValueError) as e:
                log.info("download_mnist: %s failed: %s", url, e)
                failures.append(f"{url}: {e}")
        else:
            raise OSError(f"download_mnist: could not fetch {name}:\n  " + "\n  ".join(failures))
    return pathlib.Path(directory)
