"""Saving and loading weights and training checkpoints in the safetensors format.

Files are plain safetensors (https://github.com/huggingface/safetensors), so PyTorch and other
tools read them with `safetensors.torch.load_file`. Nothing here uses pickle: loading a file
parses a JSON header and copies bytes, it never runs code from the file.

Writes are atomic: the bytes go to a temporary file in the target's directory, which is flushed,
fsynced and renamed over the target with `os.replace`, so a crash or an error mid-save leaves
the previous file intact.

A checkpoint is one safetensors file. Its arrays are stored as tensors named after where they
sit: "model.<name>" for the weights, "optimizer.state.<index>.<name>" for optimizer buffers,
"scheduler.", "rng." and "extra." for arrays elsewhere. Everything else (numbers, strings,
lists, tuples, dicts with str or int keys, big ints of generator states) is stored as JSON in
the file's metadata under "fastnn.checkpoint", with references to the tensors.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "save_file",
    "load_file",
    "load_metadata",
    "check_state_dict",
    "StateDictCheck",
    "save_checkpoint",
    "load_checkpoint",
    "CHECKPOINT_SECTIONS",
]

PathLike = Union[str, "os.PathLike[str]"]

# The numpy dtypes safetensors stores (bfloat16 and float8 have no numpy dtype).
_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
    np.float16, np.float32, np.float64, np.complex64,
))

_FORMAT_KEY = "fastnn.format"
_FORMAT_NAME = "fastnn.checkpoint"
_FORMAT_VERSION = 1
_VERSION_KEY = "fastnn.format_version"
_TREE_KEY = "fastnn.checkpoint"
_TAG = "__fastnn__"

# Checkpoint sections: the keyword of save_checkpoint and the prefix of its tensors' names.
CHECKPOINT_SECTIONS = (
    ("model_state", "model"),
    ("optimizer_state", "optimizer"),
    ("scheduler_state", "scheduler"),
    ("epoch", "epoch"),
    ("rng_state", "rng"),
    ("extra", "extra"),
)


def _to_storable(name: str, value: Any, where: str) -> np.ndarray:
    """`value` as a C-contiguous little-endian array safetensors accepts, or TypeError."""
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{where}: tensor {name!r} must be a numpy array, got {type(value).__name__}"
        )
    dtype = value.dtype.newbyteorder("=") if value.dtype.byteorder in "<>" else value.dtype
    if dtype not in _DTYPES:
        supported = ", ".join(sorted(str(d) for d in _DTYPES))
        raise TypeError(
            f"{where}: tensor {name!r} has dtype {value.dtype}, which safetensors cannot store "
            f"(supported: {supported})"
        )
    return np.asarray(value, dtype=dtype, order="C")  # not ascontiguousarray: it makes 0-d 1-d


def _file_mode(path: str) -> int:
    """The permissions a save should leave: an existing file's own, else what open() gives."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read the umask is to set it
        os.umask(umask)
        return 0o666 & ~umask


def _atomic_write(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes the file private (0600); not on Windows
            os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Persist the rename itself; not every platform lets a directory be opened for this.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_file(
    tensors: Mapping[str, np.ndarray],
    path: PathLike,
    metadata: Optional[Mapping[str, str]] = None,
) -> None:
    """Save named numpy arrays to a safetensors file, atomically.

    Args:
        tensors: name -> array. Arrays may be non-contiguous or big-endian (they are stored as
            contiguous little-endian); dtypes: bool, (u)int8..64, float16/32/64, complex64.
        path: the file to write; its directory must exist.
        metadata: optional str -> str pairs kept in the file's header.

    Example:
        >>> save_file({"fc.weight": w, "fc.bias": b}, "model.safetensors")
    """
    from safetensors.numpy import save  # imported on use to keep `import fastnn` fast

    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"save_file: tensors must be a dict of name -> array, got {type(tensors).__name__}"
        )
    prepared = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save_file: tensor names must be str, got {name!r}")
        prepared[name] = _to_storable(name, value, "save_file")
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise TypeError("save_file: metadata must be a dict of str -> str")
        metadata = dict(metadata)
    _atomic_write(path, save(prepared, metadata=metadata))


def _open(path: PathLike, where: str):
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: no such file: {path!r}")
    try:
        return safe_open(path, framework="np")
    except SafetensorError as e:
        raise ValueError(f"{where}: {path!r} is not a valid safetensors file ({e})") from None


def load_file(path: PathLike) -> Dict[str, np.ndarray]:
    """Load all arrays of a safetensors file as name -> writable numpy array."""
    from safetensors import SafetensorError

    handle = _open(path, "load_file")
    try:
        with handle as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"load_file: cannot read {os.fspath(path)!r} ({e})") from None
    # safetensors hands out copies today; copy only if a version ever returns read-only views.
    return {k: v if v.flags.writeable else v.copy() for k, v in tensors.items()}


def load_metadata(path: PathLike) -> Dict[str, str]:
    """The str -> str metadata of a safetensors file ({} when it has none)."""
    with _open(path, "load_metadata") as f:
        return dict(f.metadata() or {})


class StateDictCheck(NamedTuple):
    """How a loaded state dict differs from what a model expects (empty lists: it matches)."""

    missing_keys: list
    unexpected_keys: list
    shape_mismatches: list  # (name, expected shape, loaded shape)


def _shape_of(value: Any) -> Tuple[int, ...]:
    if isinstance(value, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in value):
        return tuple(int(d) for d in value)
    shape = getattr(value, "shape", None)
    return tuple(int(d) for d in (shape if shape is not None else np.shape(value)))


def check_state_dict(
    expected: Mapping[str, Any], loaded: Mapping[str, Any], strict: bool = True
) -> StateDictCheck:
    """Compare a loaded state dict with the names and shapes a model expects.

    Args:
        expected: name -> shape (a tuple of ints, or anything with `.shape`).
        loaded: name -> array, e.g. from `load_file`.
        strict: raise on missing or unexpected names too; otherwise only shape mismatches
            raise (as PyTorch's `load_state_dict(strict=False)`), and the caller decides what
            to do with the names in the result.

    Returns:
        a `StateDictCheck(missing_keys, unexpected_keys, shape_mismatches)`.

    Raises:
        ValueError listing every missing name, unexpected name and shape mismatch.
    """
    missing = [name for name in expected if name not in loaded]
    unexpected = [name for name in loaded if name not in expected]
    mismatches = []
    for name, want in expected.items():
        if name in loaded:
            want_shape, got_shape = _shape_of(want), _shape_of(loaded[name])
            if want_shape != got_shape:
                mismatches.append((name, want_shape, got_shape))
    result = StateDictCheck(missing, unexpected, mismatches)
    if mismatches or (strict and (missing or unexpected)):
        lines = ["state dict does not match the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): " + ", ".join(unexpected))
        for name, want_shape, got_shape in mismatches:
            lines.append(f"  shape mismatch for {name}: model {want_shape}, loaded {got_shape}")
        raise ValueError("\n".join(lines))
    return result


def _where(path: Sequence[Any]) -> str:
    return "save_checkpoint: " + str(path[0]) + "".join(f"[{p!r}]" for p in path[1:])


class _Encoder:
    """Turns a tree of containers, scalars and arrays into JSON plus named tensors."""

    def __init__(self) -> None:
        self.tensors: Dict[str, np.ndarray] = {}

    def _tensor_name(self, path: Sequence[Any]) -> str:
        name = ".".join(str(p) for p in path)
        unique, n = name, 1
        while unique in self.tensors:  # e.g. keys 0 and "0" in one dict
            n += 1
            unique = f"{name}#{n}"
        return unique

    def encode(self, value: Any, path: list) -> Any:
        if isinstance(value, np.str_):
            return str(value)
        if isinstance(value, (np.ndarray, np.generic)):  # before float: np.float64 is a float
            array = _to_storable(".".join(map(str, path)), np.asarray(value), _where(path))
            name = self._tensor_name(path)
            self.tensors[name] = array
            return {_TAG: "tensor" if isinstance(value, np.ndarray) else "scalar", "name": name}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            # JSON has no NaN or infinity; repr round-trips every float exactly.
            return value if np.isfinite(value) else {_TAG: "float", "repr": repr(value)}
        if isinstance(value, tuple):
            items = [self.encode(v, path + [i]) for i, v in enumerate(value)]
            return {_TAG: "tuple", "items": items}
        if isinstance(value, list):
            return [self.encode(v, path + [i]) for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            for key in value:
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise TypeError(f"{_where(path)}: dict keys must be str or int, got {key!r}")
            if all(isinstance(k, str) for k in value) and _TAG not in value:
                return {k: self.encode(v, path + [k]) for k, v in value.items()}
            items = [[k, self.encode(v, path + [k])] for k, v in value.items()]
            return {_TAG: "dict", "items": items}
        raise TypeError(
            f"{_where(path)}: cannot store a {type(value).__name__}; checkpoints hold numpy "
            f"arrays, numpy scalars, None, bool, int, float, str, and lists, tuples and dicts "
            f"of them"
        )


def _decode(node: Any, tensors: Dict[str, np.ndarray], used: set, where: str) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors, used, where) for v in node]
    if not isinstance(node, dict):
        return node
    tag = node.get(_TAG)
    if tag is None:
        return {k: _decode(v, tensors, used, where) for k, v in node.items()}
    if tag == "float":
        return float(node["repr"])
    if tag in ("tensor", "scalar"):
        name = node["name"]
        if name not in tensors:
            raise ValueError(
                f"{where}: the checkpoint refers to a tensor {name!r} it does not hold"
            )
        used.add(name)
        return tensors[name] if tag == "tensor" else tensors[name][()]
    if tag == "tuple":
        return tuple(_decode(v, tensors, used, where) for v in node["items"])
    if tag == "dict":
        return {k: _decode(v, tensors, used, where) for k, v in node["items"]}
    raise ValueError(f"{where}: unknown entry {tag!r} in the checkpoint's metadata")


def save_checkpoint(
    path: PathLike,
    *,
    model_state: Mapping[str, np.ndarray],
    optimizer_state: Any = None,
    scheduler_state: Any = None,
    epoch: Optional[int] = None,
    rng_state: Any = None,
    extra: Any = None,
) -> None:
    """Save everything needed to resume training to one safetensors file, atomically.

    Args:
        path: the file to write.
        model_state: the model's state dict, name -> array (stored as "model.<name>", so the
            weights can be read with any safetensors reader).
        optimizer_state: e.g. `optimizer.state_dict()`, PyTorch-shaped:
            {"state": {index: {"step": 3, "exp_avg": array, ...}}, "param_groups": [...]}.
        scheduler_state, rng_state, extra: any tree of dicts (str or int keys), lists, tuples,
            None, bool, int (any size), float, str, numpy arrays and numpy scalars; e.g.
            `fastnn.random.get_rng_state()` or a DataLoader's `state_dict()`.
        epoch: an int, or None.

    Everything comes back from `load_checkpoint` exactly: arrays bit for bit with their dtype
    and shape, floats to the last bit (NaN and infinities included), tuples as tuples, int
    dict keys as ints, numeric numpy scalars as numpy scalars of their dtype (np.str_ as str).
    """
    if not isinstance(model_state, Mapping):
        raise TypeError(
            f"save_checkpoint: model_state must be a dict of name -> array, "
            f"got {type(model_state).__name__}"
        )
    for name, value in model_state.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise TypeError(
                f"save_checkpoint: model_state must map str names to numpy arrays, got "
                f"{name!r}: {type(value).__name__}"
            )
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer))):
        raise TypeError(
            f"save_checkpoint: epoch must be an int or None, got {type(epoch).__name__}"
        )
    values = {
        "model_state": dict(model_state),
        "optimizer_state": optimizer_state,
        "scheduler_state": scheduler_state,
        "epoch": None if epoch is None else int(epoch),
        "rng_state": rng_state,
        "extra": extra,
    }
    encoder = _Encoder()
    tree = {key: encoder.encode(values[key], [prefix]) for key, prefix in CHECKPOINT_SECTIONS}
    metadata = {
        _FORMAT_KEY: _FORMAT_NAME,
        _VERSION_KEY: str(_FORMAT_VERSION),
        _TREE_KEY: json.dumps(tree, allow_nan=False, separators=(",", ":")),
    }
    save_file(encoder.tensors, path, metadata)


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a file written by `save_checkpoint`.

    Returns:
        a dict with the keys model_state, optimizer_state, scheduler_state, epoch, rng_state
        and extra (None for those that were not saved).

    Raises:
        ValueError if the file is not a fastnn checkpoint (for plain weights use `load_file`),
        was written by a newer fastnn, or its metadata and tensors disagree.
    """
    where = f"load_checkpoint({os.fspath(path)!r})"
    metadata = load_metadata(path)
    if metadata.get(_FORMAT_KEY) != _FORMAT_NAME or _TREE_KEY not in metadata:
        raise ValueError(
            f"{where}: not a fastnn checkpoint (no {_FORMAT_KEY!r} metadata); "
            f"to read plain weights use fastnn.serialization.load_file"
        )
    try:
        version = int(metadata.get(_VERSION_KEY, ""))
    except ValueError:
        version = -1
    if version != _FORMAT_VERSION:
        raise ValueError(
            f"{where}: checkpoint format version {metadata.get(_VERSION_KEY)!r} is not "
            f"supported (this fastnn reads version {_FORMAT_VERSION})"
        )
    try:
        tree = json.loads(metadata[_TREE_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: corrupt checkpoint metadata ({e})") from None
    if not isinstance(tree, dict) or set(tree) != {key for key, _ in CHECKPOINT_SECTIONS}:
        raise ValueError(f"{where}: corrupt checkpoint metadata (wrong sections)")
    tensors = load_file(path)
    used: set = set()
    try:
        result = {key: _decode(tree[key], tensors, used, where) for key, _ in CHECKPOINT_SECTIONS}
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where}: corrupt checkpoint metadata ({e!r})") from None
    stray = sorted(set(tensors) - used)
    if stray:
        raise ValueError(f"{where}: tensors not described by the checkpoint metadata: {stray}")
    return result
