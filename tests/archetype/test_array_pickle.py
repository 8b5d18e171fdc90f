"""The arrays-only unpickler: numpy arrays and plain containers come back; every other global is refused unrun."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from archetype.array_pickle import RefusedPickle, load_array_pickle


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_arrays_and_plain_containers_come_back(protocol):
    content = {
        b"data": np.arange(24, dtype=np.uint8).reshape(2, 12),
        "floats": np.linspace(0, 1, 5, dtype=np.float32),
        "labels": [1, 2, np.int64(3)],
        "meta": (b"bytes", "str", 1.5, None, True),
    }
    loaded = load_array_pickle(io.BytesIO(pickle.dumps(content, protocol=protocol)))
    assert loaded.keys() == content.keys()
    np.testing.assert_array_equal(loaded[b"data"], content[b"data"])
    assert loaded[b"data"].dtype == np.uint8 and loaded["floats"].dtype == np.float32
    assert loaded["labels"] == [1, 2, 3] and loaded["meta"] == content["meta"]


class _Payload:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return (self.call, self.args)


def test_a_payload_that_would_create_a_file_is_refused_and_creates_nothing(tmp_path):
    victim = tmp_path / "created"
    for payload in (_Payload(open, str(victim), "w"), _Payload(os.system, f"touch {victim}")):
        raw = pickle.dumps({b"data": np.zeros(3), b"x": payload}, protocol=2)
        with pytest.raises(RefusedPickle, match=r"refused global (io\.open|posix\.system)"):
            load_array_pickle(io.BytesIO(raw))
    assert not victim.exists()


def test_object_arrays_and_array_subclasses_are_refused():
    objects = np.array([1, "two", None], dtype=object)
    with pytest.raises(RefusedPickle, match="array of Python objects"):
        load_array_pickle(io.BytesIO(pickle.dumps(objects, protocol=2)))
    masked = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    with pytest.raises(RefusedPickle, match=r"refused global numpy\.ma"):
        load_array_pickle(io.BytesIO(pickle.dumps(masked, protocol=2)))


def test_codecs_encode_serves_latin1_bytes_only():
    raw = pickle.dumps(b"\x00\xff", protocol=2)
    assert load_array_pickle(io.BytesIO(raw)) == b"\x00\xff"
    forged = raw.replace(b"latin1", b"rot_13")
    with pytest.raises(RefusedPickle, match=r"_codecs\.encode with encoding 'rot_13'"):
        load_array_pickle(io.BytesIO(forged))
