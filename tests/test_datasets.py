import functools
import gzip
import hashlib
import http.server
import logging
import threading

import numpy as np
import pytest

from fastnn import datasets
from fastnn.datasets import download, download_mnist, load_idx, load_mnist

IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D,
             "float64": 0x0E}


def idx_bytes(array, code=None):
    """Encode `array` as IDX (written independently of the reader under test)."""
    array = np.asarray(array)
    code = IDX_CODES[array.dtype.name] if code is None else code
    header = bytes([0, 0, code, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 1, 3, 2), (0, 4)])
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_every_dtype_and_rank(tmp_path, dtype, shape, gz):
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        array = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    path = write(tmp_path / "data.idx", idx_bytes(array), gz)
    loaded = load_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    assert loaded.shape == shape
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.writeable


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    zipped_plain_name = write(tmp_path / "labels-idx1-ubyte", idx_bytes(array), gz=True)
    plain_gz_name = write(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(array), gz=False)
    np.testing.assert_array_equal(load_idx(zipped_plain_name), array)
    np.testing.assert_array_equal(load_idx(str(plain_gz_name)), array)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_truncated_and_trailing(tmp_path, gz):
    data = idx_bytes(np.arange(20, dtype=np.int32).reshape(4, 5))
    cut = write(tmp_path / "cut.idx", data[:-3], gz)
    with pytest.raises(ValueError, match=r"cut.idx: IDX data truncated: shape \(4, 5\) of int32 "
                                         r"needs 92 bytes, file has 89"):
        load_idx(cut)
    long = write(tmp_path / "long.idx", data + b"\0", gz)
    with pytest.raises(ValueError, match="long.idx: IDX data has trailing bytes"):
        load_idx(long)
    header_cut = write(tmp_path / "hdr.idx", data[:9], gz)
    with pytest.raises(ValueError, match="hdr.idx: truncated IDX header"):
        load_idx(header_cut)


def test_load_idx_bad_header(tmp_path):
    with pytest.raises(ValueError, match="bad.idx: not an IDX file"):
        load_idx(write(tmp_path / "bad.idx", b"\x01\x00\x08\x01" + b"\0" * 8))
    with pytest.raises(ValueError, match="code.idx: not an IDX file"):
        load_idx(write(tmp_path / "code.idx", idx_bytes(np.zeros(2, np.uint8), code=0x0A)))
    with pytest.raises(ValueError, match="tiny.idx: too short"):
        load_idx(write(tmp_path / "tiny.idx", b"\0\0"))
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "missing.idx")


def test_load_idx_corrupt_gzip(tmp_path):
    zipped = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int16)))
    with pytest.raises(ValueError, match="half.gz: corrupt or truncated gzip data"):
        load_idx(write(tmp_path / "half.gz", zipped[: len(zipped) // 2]))
    garbled = zipped[:20] + bytes(b ^ 0xFF for b in zipped[20:40]) + zipped[40:]
    with pytest.raises(ValueError, match="garbled.gz: corrupt or truncated gzip data"):
        load_idx(write(tmp_path / "garbled.gz", garbled))


def fake_mnist(directory, n_train=5, n_test=3, gz=True, dotted=False):
    rng = np.random.default_rng(0)
    sets = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if gz else ""
        write(directory / f"{split}-images{sep}idx3-ubyte{suffix}", idx_bytes(images), gz)
        write(directory / f"{split}-labels{sep}idx1-ubyte{suffix}", idx_bytes(labels), gz)
        sets[split] = (images, labels)
    return sets


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True)])
def test_load_mnist(tmp_path, gz, dotted):
    sets = fake_mnist(tmp_path, gz=gz, dotted=dotted)
    for train, split in ((True, "train"), (False, "t10k")):
        images, labels = load_mnist(tmp_path, train=train)
        assert images.dtype == np.uint8 and images.shape == (len(sets[split][0]), 28, 28)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, sets[split][0])
        np.testing.assert_array_equal(labels, sets[split][1])


def test_load_mnist_missing_files_lists_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked for train-images-idx3-ubyte, "
                                                "train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)
    fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="test labels .*t10k-labels-idx1-ubyte.gz"):
        load_mnist(tmp_path, train=False)


def test_load_mnist_inconsistent_files(tmp_path):
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        load_mnist(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.int32)))
    with pytest.raises(ValueError, match="expected uint8 labels"):
        load_mnist(tmp_path)


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server for tmp_path/served; yields (base_url, directory, request log)."""
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def digests(data):
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def test_download_over_http_and_cache(tmp_path, http_server):
    base, served, requests = http_server
    data = b"fastnn test payload" * 100
    (served / "file.bin").write_bytes(data)
    sha, md5 = digests(data)
    out = tmp_path / "out"
    path = download(base + "file.bin", out, sha256=sha, md5=md5)
    assert path == out / "file.bin" and path.read_bytes() == data
    assert len(requests) == 1
    again = download(base + "file.bin", out, sha256=sha.upper())
    assert again == path and len(requests) == 1  # cached: no second request
    assert sorted(p.name for p in out.iterdir()) == ["file.bin"]


def test_download_file_url_and_filename(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"abc")
    path = download(source.as_uri(), tmp_path / "d", md5=digests(b"abc")[1], filename="x.bin")
    assert path.name == "x.bin" and path.read_bytes() == b"abc"


def test_download_bad_checksum_removes_file(tmp_path, http_server):
    base, served, _ = http_server
    (served / "f.bin").write_bytes(b"tampered")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"failed its checksum \(sha256 is .*, expected 00+\)"):
        download(base + "f.bin", out, sha256="0" * 64)
    assert list(out.iterdir()) == []


def test_download_replaces_bad_existing_file(tmp_path, http_server, caplog):
    base, served, requests = http_server
    (served / "f.bin").write_bytes(b"good")
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.bin").write_bytes(b"stale")
    with caplog.at_level(logging.WARNING, logger="fastnn.datasets"):
        path = download(base + "f.bin", out, md5=digests(b"good")[1])
    assert path.read_bytes() == b"good" and len(requests) == 1
    assert "fetching it again" in caplog.text


def test_download_http_error_leaves_nothing(tmp_path, http_server):
    base, _, _ = http_server
    out = tmp_path / "out"
    with pytest.raises(OSError, match="404"):
        download(base + "missing.bin", out)
    assert list(out.iterdir()) == []


def test_download_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="cannot take a file name"):
        download("http://127.0.0.1:9/", tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        download("http://127.0.0.1:9/a", tmp_path, filename="../a")


def test_download_mnist_from_mirrors(tmp_path, http_server, monkeypatch):
    base, served, requests = http_server
    sets = fake_mnist(served)
    files = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    monkeypatch.setattr(datasets, "MNIST_FILES", files)
    missing_mirror = (tmp_path / "no-such-mirror").as_uri() + "/"
    out = download_mnist(tmp_path / "mnist", mirrors=[missing_mirror, base])
    images, labels = load_mnist(out)
    np.testing.assert_array_equal(images, sets["train"][0])
    assert len(requests) == 4
    download_mnist(tmp_path / "mnist", mirrors=[base])
    assert len(requests) == 4


def test_download_mnist_reports_every_mirror(tmp_path):
    mirrors = [(tmp_path / "a").as_uri(), (tmp_path / "b").as_uri()]
    with pytest.raises(OSError, match="could not fetch train-images-idx3-ubyte.gz:\n.*a/train"
                                      ".*\n.*b/train"):
        download_mnist(tmp_path / "mnist", mirrors=mirrors)


def test_mnist_constants():
    assert set(datasets.MNIST_FILES) == {"train-images-idx3-ubyte.gz",
                                         "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert all(len(m) == 32 for m in datasets.MNIST_FILES.values())
    assert all(m.endswith("/") for m in datasets.MNIST_MIRRORS)
