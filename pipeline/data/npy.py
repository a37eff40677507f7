"""Read one ``.npy`` file from untrusted bytes: never runs code, never allocates more than the file holds.

Recordings come from other labs, so a file in them is data, not a program. ``numpy.load`` with
``allow_pickle=True`` would unpickle whatever an object array (or a file that is not ``.npy`` at all)
contains, and a pickle can call any Python function. Real SENSORIUM recordings may keep string arrays in
``meta/`` as pickled object arrays, so those are still read, but through :class:`_ArrayUnpickler`, whose
allow-list holds only what a pickled numpy array of strings and numbers needs. Everything else is
refused with :class:`NpyError`, whose message says what was found (never the file's contents).
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any, Literal

import numpy as np
import numpy.lib.format as npy_format

MAGIC = b"\x93NUMPY"
# a .npy header is a short Python literal; numpy's own default limit is 10,000 characters
MAX_HEADER = 10_000
# element types an object array of metadata may hold (strings, numbers, numpy scalars)
_PLAIN = (str, bytes, int, float, bool, np.generic)


class NpyError(ValueError):
    """The bytes are not a safe, intact ``.npy`` array; the message is the *found* part of an error."""


def load_npy(data: bytes, *, allow_object: bool) -> np.ndarray:
    """Parse ``.npy`` bytes without executing anything they contain.

    Args:
        data: the whole file.
        allow_object: read object arrays (pickled) through the allow-listed unpickler; when False an
            object array is refused.

    Returns:
        The array; an object array comes back as a unicode array (``astype(str)``), shape unchanged.

    Raises:
        NpyError: not a ``.npy`` file, a damaged header, fewer bytes than the header promises, an object
            array where none is allowed, or a pickle that needs anything outside the allow-list.
    """
    if not data.startswith(MAGIC):
        raise NpyError("a file that is not .npy (it does not start with the .npy magic bytes)")
    fp = io.BytesIO(data)
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp, max_header_size=MAX_HEADER)
        else:
            raise NpyError(f".npy format version {version[0]}.{version[1]} (1.0 and 2.0 are read)")
    except NpyError:
        raise
    except Exception as err:  # noqa: BLE001 - any header problem is a damaged file
        raise NpyError(f"a damaged .npy header ({_first_line(err)})") from None
    offset = fp.tell()
    count = math.prod(shape)
    if dtype.hasobject:
        if not allow_object:
            raise NpyError("an object array (pickled Python objects are read only in meta/)")
        return _load_object_array(data[offset:], shape)
    need = count * dtype.itemsize
    if len(data) - offset < need:
        raise NpyError(f"a truncated file ({len(data) - offset} data bytes, the header promises {need})")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is a damaged file
        raise NpyError(f"an unreadable .npy file ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# --------------------------------------------------------------------------------------------------
# object arrays: a restricted unpickler
# --------------------------------------------------------------------------------------------------


class _ArrayState:
    """Stands in for ``numpy.ndarray`` while unpickling: receives the pickled state, allocates nothing.

    A pickled array is ``_reconstruct(ndarray, (0,), b'b')`` followed by ``BUILD`` with the state
    ``(version, shape, dtype, is_fortran, data)``; numpy would allocate ``shape`` before checking the
    data, so a crafted state could ask for terabytes. Here the state is only checked and kept.
    """

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise NpyError("a pickle that is not a numpy array's")
        _version, shape, dtype, fortran, values = state
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise NpyError("a pickled array with an invalid shape")
        dtype = _as_dtype(dtype)
        count = math.prod(shape)
        order: Literal["C", "F"] = "F" if fortran else "C"
        if dtype.hasobject:
            if not isinstance(values, list) or len(values) != count:
                raise NpyError(f"a pickled array whose values do not fill its shape {shape}")
            bad = next((v for v in values if not isinstance(v, _PLAIN)), None)
            if bad is not None:
                what = "nested array" if isinstance(bad, _ArrayState) else type(bad).__name__
                raise NpyError(f"an object array holding a {what} (strings or numbers expected)")
            out = np.empty(count, dtype=object)
            out[:] = values
            # numpy pickles an object array's values in C order whatever its layout
            self.array = out.reshape(shape)
        else:
            if not isinstance(values, bytes) or len(values) != count * dtype.itemsize:
                raise NpyError(f"a pickled array whose bytes do not fill its shape {shape}")
            self.array = np.frombuffer(values, dtype=dtype).reshape(shape, order=order).copy()


def _reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> _ArrayState:
    """The allow-listed ``numpy.core.multiarray._reconstruct``: only a plain ndarray, never a subclass."""
    if subtype is not _NDARRAY_MARK:
        raise NpyError("a pickled array of a class other than numpy.ndarray")
    return _ArrayState()


class _DTypeState:
    """Stands in for ``numpy.dtype`` while unpickling: a plain type string plus, from its state, the
    byte order only (numpy's own ``dtype.__setstate__`` would accept fields, subarrays and flags)."""

    def __init__(self, spec: str) -> None:
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise NpyError("a pickled dtype with an unexpected state")
        if any(part is not None for part in state[2:5]):
            raise NpyError("a pickled structured or sub-array dtype (plain types only)")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> _DTypeState:
    """The allow-listed ``numpy.dtype``: from a type string only (e.g. ``'O8'``, ``'f8'``, ``'U5'``)."""
    if not isinstance(spec, str) or len(spec) > 16:
        raise NpyError("a pickled dtype that is not a plain type string")
    try:
        return _DTypeState(spec)
    except TypeError as err:
        raise NpyError(f"a pickled dtype {spec!r} ({_first_line(err)})") from None


def _as_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _DTypeState):
        raise NpyError("a pickled array or scalar without a plain dtype")
    return value.dtype


def _scalar(dtype: Any, raw: Any = None) -> np.generic:
    """The allow-listed ``numpy.core.multiarray.scalar``: a numeric numpy scalar from its bytes."""
    dtype = _as_dtype(dtype)
    if dtype.hasobject or not isinstance(raw, bytes):
        raise NpyError("a pickled numpy scalar that is not a number")
    if len(raw) != dtype.itemsize:
        raise NpyError("a pickled numpy scalar of the wrong size")
    return np.frombuffer(raw, dtype=dtype)[0]


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """The allow-listed ``_codecs.encode``: how protocol-2 pickles write bytes (latin-1 text)."""
    if not isinstance(text, str) or encoding != "latin1":
        raise NpyError("a pickled call to _codecs.encode other than latin-1 bytes")
    return text.encode("latin1")


_NDARRAY_MARK = object()  # what the pickle gets for numpy.ndarray: a token, not the class
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): _NDARRAY_MARK,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler whose only globals are the stand-ins of :data:`_ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise NpyError(
                f"a pickle that calls {module}.{name} (only numpy arrays of strings and numbers are read)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise NpyError("a pickle with persistent ids")


def _load_object_array(payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Unpickle an object array's payload through :class:`_ArrayUnpickler`; returns a unicode array."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except NpyError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a crafted pickle is a damaged file
        raise NpyError(f"an unreadable pickled object array ({type(err).__name__})") from None
    if not isinstance(obj, _ArrayState) or obj.array is None:
        raise NpyError("a pickle that is not a numpy array")
    if obj.array.shape != tuple(shape):
        raise NpyError(f"a pickled array of shape {obj.array.shape} under a header of shape {tuple(shape)}")
    return obj.array.astype(str)
