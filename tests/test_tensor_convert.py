"""_core.float_list: float32 outputs as the double of their shortest text (what
float(str(np.float32(x))) gives), float64 as themselves, non-finite values as JSON's names."""
import math

import pytest

np = pytest.importorskip("numpy")

from cortex_runtime import _core  # noqa: E402


def reference(values):
    """float(str(np.float32(x))) for each finite x, bit for bit (so -0.0 counts)."""
    return values.astype(str).astype(np.float64)


def same_bits(got, want):
    got = np.array(got, dtype=np.float64)
    return bool((got.view(np.uint64) == want.view(np.uint64)).all())


def finite_floats(bits):
    values = np.asarray(bits, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return values[np.isfinite(values)]


EDGES = [
    0.1, 0.15, -0.2, 1.0 / 3.0, 0.0, -0.0, 1.0, 2.5, 1234567.5, 16777216.0, 16777218.0,
    33554448.0,             # 3.355445e+07: the upper end of its interval is a 7-digit decimal
    2.0 ** -96, 2.0 ** 87, 2.0 ** 90,  # powers of two whose shortest text lies above them
    1e22, 9.999999e21, 1e-14, 1.1e-14, 3.4028235e38, -3.4028235e38,
    1.17549435e-38,         # the smallest normal
    1.4e-45, 2.8e-45, 1e-40, 5.877472e-39,  # subnormals: fewer than 6 digits, as numpy
]


def test_float32_values_are_their_shortest_text():
    values = np.array(EDGES, dtype=np.float32)
    got = _core.float_list(values)
    assert same_bits(got, reference(values))
    assert got[:3] == [0.1, 0.15, -0.2]
    by_value = dict(zip(values.tolist(), got))
    assert by_value[2.0 ** -96] == 1.2621775e-29  # not 1.26217745e-29
    assert by_value[float(np.float32(1.4e-45))] == 1e-45  # the smallest subnormal
    assert math.copysign(1.0, got[5]) == -1.0  # -0.0 keeps its sign


def test_non_finite_values_are_json_names():
    values = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=np.float32)
    assert _core.float_list(values) == ["NaN", "Infinity", "-Infinity", 1.5]
    assert _core.float_list(values.astype(np.float64)) == ["NaN", "Infinity", "-Infinity", 1.5]


def test_float64_values_are_themselves_and_any_shape_is_flattened():
    values = np.array([[0.1, 1.0 / 3.0], [-0.0, 5e-324]])
    assert _core.float_list(values) == values.reshape(-1).tolist()
    assert _core.float_list(np.zeros((2, 0, 3), np.float32)) == []
    assert _core.float_list(memoryview(np.array([0.1], np.float32).tobytes()).cast("f")) == [0.1]


def test_sampled_bit_patterns_match_numpy_and_cpython_formatting():
    """Every 8209th bit pattern (about half a million finite floats of every magnitude), every
    power of two with its neighbours, and every 64th subnormal: the fast path, the exact
    path (CPython's own formatting, exact=True) and numpy agree on each."""
    powers = (np.arange(0, 256, dtype=np.int64) << 23)[:, None] + np.arange(-3, 4)[None, :]
    powers = powers.ravel().astype(np.uint64) & 0x7FFFFFFF
    bits = np.concatenate([np.arange(0, 2 ** 32, 8209, dtype=np.uint64), powers,
                           powers | 0x80000000, np.arange(1, 1 << 23, 64, dtype=np.uint64)])
    values = finite_floats(bits)
    want = reference(values)
    assert same_bits(_core.float_list(values), want)
    assert same_bits(_core.float_list(values, True), want)


def test_other_buffers_are_refused():
    with pytest.raises(TypeError, match="native float32 or float64, got format 'i'"):
        _core.float_list(np.array([1, 2], dtype=np.int32))
    with pytest.raises(TypeError):
        _core.float_list([0.5])
    with pytest.raises(TypeError):
        _core.float_list(np.array([0.5], dtype=">f4"))
    with pytest.raises((BufferError, ValueError)):  # not C-contiguous
        _core.float_list(np.zeros((4, 4), np.float32)[:, 1])
