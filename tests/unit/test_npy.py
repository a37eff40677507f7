"""The untrusted-``.npy`` reader: plain and pickled string arrays read; nothing else unpickled."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from pipeline.data.npy import NpyError, load_npy


def _npy(arr: np.ndarray, protocol: int | None = None) -> bytes:
    """``np.save`` bytes; with ``protocol`` the object array's pickle is rewritten in that protocol."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    data = buf.getvalue()
    if protocol is None:
        return data
    fp = io.BytesIO(data)
    np.lib.format.read_magic(fp)
    np.lib.format.read_array_header_1_0(fp)
    return data[: fp.tell()] + pickle.dumps(arr, protocol=protocol)


LEGIT = {
    "tiers": np.array(["train", "validation", "test"], dtype=object),
    "mixed": np.array([1, 2.5, "x", True], dtype=object),
    "numpy-scalars": np.array([np.int64(3), np.float32(2.0), np.dtype(">f8").type(1.5)], dtype=object),
    "bytes": np.array([b"ab", "cd"], dtype=object),
    "2d": np.array([["a", "b", "c"], ["d", "e", "f"]], dtype=object),
    "fortran": np.asfortranarray(np.array([["a", "b", "c"], ["d", "e", "f"]], dtype=object)),
    "empty": np.array([], dtype=object),
}


@pytest.mark.parametrize("protocol", [None, 0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", sorted(LEGIT))
def test_pickled_string_and_number_arrays_read(name, protocol):
    arr = LEGIT[name]
    out = load_npy(_npy(arr, protocol), allow_object=True)
    assert out.shape == arr.shape and out.dtype.kind == "U"
    assert np.array_equal(out, arr.astype(str))


@pytest.mark.parametrize(
    "arr", [np.arange(12.0).reshape(3, 4), np.arange(5, dtype=">i4"), np.array(["a", "bc"])]
)
def test_plain_arrays_read_unchanged(arr):
    out = load_npy(_npy(arr), allow_object=False)
    assert out.dtype == arr.dtype and np.array_equal(out, arr)


class _Runs:
    """Unpickling it would call ``os.system``."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


class _Subclass(np.ndarray):
    pass


def _state_pickle(state: tuple) -> bytes:
    """A header of shape (2,) object and a pickle of ``_reconstruct`` + the crafted ``state``."""
    from numpy._core.multiarray import _reconstruct

    class Crafted:
        def __reduce__(self):
            return (_reconstruct, (np.ndarray, (0,), b"b"), state)

    head = _npy(np.array(["a", "b"], dtype=object))
    fp = io.BytesIO(head)
    np.lib.format.read_magic(fp)
    np.lib.format.read_array_header_1_0(fp)
    return head[: fp.tell()] + pickle.dumps(Crafted(), protocol=2)


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (pickle.dumps(_Runs()), "not .npy"),
        (pickle.dumps(np.array(["a"], dtype=object)), "not .npy"),  # a pickle, no .npy header
        (_npy(np.array(["a", _Runs()], dtype=object)), "calls posix.system"),
        (_npy(np.array(["a", {"k": 1}], dtype=object)), "holding a dict"),
        (_npy(np.array([np.arange(3), "a"], dtype=object)), "nested array"),
        (_npy(np.array(["a", "b"], dtype=object).view(_Subclass).astype(object)), "calls"),
        (_state_pickle((1, (10**12,), np.dtype("O"), False, ["a", "b"])), "do not fill its shape"),
        (_state_pickle((1, (2,), np.dtype("O"), False, ["a", "b"])), None),
        (_npy(np.arange(4.0))[:-5], "truncated"),
        (b"\x93NUMPY\x09\x00" + b"\0" * 20, "version"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': 5}   \n", "damaged .npy header"),
        (b"", "not .npy"),
    ],
)
def test_unsafe_or_damaged_files_are_refused(data, found):
    if found is None:  # a legitimate variant: must read
        assert load_npy(data, allow_object=True).tolist() == ["a", "b"]
        return
    with pytest.raises(NpyError, match=found.replace(".", r"\.")):
        load_npy(data, allow_object=True)


def test_object_arrays_are_refused_where_not_allowed():
    with pytest.raises(NpyError, match="object array"):
        load_npy(_npy(np.array(["train"], dtype=object)), allow_object=False)


def test_a_subclass_is_never_reconstructed():
    from numpy._core.multiarray import _reconstruct

    class Crafted:
        def __reduce__(self):
            return (_reconstruct, (_Subclass, (0,), b"b"), (1, (1,), np.dtype("O"), False, ["a"]))

    head = _npy(np.array(["a"], dtype=object))
    fp = io.BytesIO(head)
    np.lib.format.read_magic(fp)
    np.lib.format.read_array_header_1_0(fp)
    with pytest.raises(NpyError, match="calls"):
        load_npy(head[: fp.tell()] + pickle.dumps(Crafted(), protocol=2), allow_object=True)
