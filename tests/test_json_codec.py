"""The C JSON codec, black-box through its public API, cortex_runtime.json.

loads is checked against json.loads (and RFC 8259 where the two differ), dumps against
json.dumps byte for byte: the JSON test suite, a hypothesis differential, and the edges
(nesting, huge numbers, 10 MB strings, invalid UTF-8, escapes, subclasses, numpy, the key
cache)."""
import collections
import decimal
import enum
import json
import math
import random
import re
import struct
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_TESTDATA
from cortex_runtime.json import JSONDecodeError, dumps, loads

PARSING = SHARED_TESTDATA / "json-test-suite" / "test_parsing"
SUITE = sorted(PARSING.glob("*.json")) if PARSING.is_dir() else []
needs_suite = pytest.mark.skipif(not SUITE, reason=f"{PARSING} is not there")


def suite_files(prefix):
    return [pytest.param(p, id=p.name) for p in SUITE if p.name.startswith(prefix)]


def same(a, b):
    """Equal values of the same types all the way down; NaN equals NaN, -0.0 is not 0.0."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if math.isnan(x) or math.isnan(y):
                if not (math.isnan(x) and math.isnan(y)):
                    return False
            elif x != y or math.copysign(1.0, x) != math.copysign(1.0, y):
                return False
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif isinstance(x, dict):
            if list(x) != list(y):  # same keys, same order
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


def decode_error(data):
    with pytest.raises(JSONDecodeError) as info:
        loads(data)
    err = info.value
    assert isinstance(err, ValueError)
    assert re.search(r" at byte \d+$", str(err)), str(err)
    assert isinstance(err.pos, int) and 0 <= err.pos <= len(data), (err.pos, len(data))
    assert str(err).endswith(f" at byte {err.pos}")
    return err


def test_helper_same_checks_types():
    assert same([1, 1.0, float("nan")], [1, 1.0, float("nan")])
    assert not same(1, 1.0)
    assert not same(True, 1)
    assert not same(0.0, -0.0)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})


# ---- the JSON test suite --------------------------------------------------------------

@needs_suite
def test_suite_is_complete():
    assert len(suite_files("y_")) > 90 and len(suite_files("n_")) > 150 and len(suite_files("i_")) > 20


@needs_suite
@pytest.mark.parametrize("path", suite_files("y_"))
def test_suite_y_decodes_like_json(path):
    data = path.read_bytes()
    assert same(loads(data), json.loads(data))


@needs_suite
@pytest.mark.parametrize("path", suite_files("n_"))
def test_suite_n_is_an_error(path):
    decode_error(path.read_bytes())


@needs_suite
@pytest.mark.parametrize("path", suite_files("i_"))
def test_suite_i_returns_or_raises_value_error(path):
    data = path.read_bytes()
    try:
        value = loads(data)
    except ValueError:
        return
    try:
        expected = json.loads(data)
    except ValueError:
        return  # we accept what json rejects: fine for i_ (implementation-defined)
    # numbers may differ from json only where json itself is implementation-defined
    assert same(value, expected) or "number" in path.name


@needs_suite
def test_suite_i_never_crashes_in_a_subprocess():
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from cortex_runtime.json import loads
        for path in sorted(Path(sys.argv[1]).glob("i_*.json")):
            try:
                loads(path.read_bytes())
            except ValueError:
                pass
        print("done")
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(PARSING)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "done"


# ---- error messages -------------------------------------------------------------------

@pytest.mark.parametrize("data, message, pos", [
    (b'{"key": 1, "x": 2 "y": 3}', "expected ',' or '}' at byte 18", 18),
    (b'[1, 2 3]', "expected ',' or ']' at byte 6", 6),
    (b'{"a" 1}', "expected ':' after an object key at byte 5", 5),
    (b'{1: 2}', "expected a string key at byte 1", 1),
    (b'[1,]', "expected a value at byte 3", 3),
    (b'', "expected a value at byte 0", 0),
    (b'   ', "expected a value at byte 3", 3),
    (b'[1] x', "unexpected data after the JSON value at byte 4", 4),
    (b'"abc', "unterminated string at byte 0", 0),
    (b'[01]', "leading zero in a number at byte 1", 1),
    (b'NaN', "expected a value at byte 0", 0),
    (b'[Infinity]', "expected a value at byte 1", 1),
    (b'[-Infinity]', "invalid number at byte 1", 1),
    (b'1.', "expected a digit after the decimal point at byte 2", 2),
    (b'1e+', "expected a digit in the exponent at byte 3", 3),
    (b'"a\x01"', "control character in a string at byte 2", 2),
])
def test_error_says_what_and_where(data, message, pos):
    err = decode_error(data)
    assert str(err) == message
    assert err.pos == pos


def test_loads_accepts_str_bytes_bytearray_only():
    assert loads('{"a": [1]}') == loads(b'{"a": [1]}') == loads(bytearray(b'{"a": [1]}')) == {"a": [1]}
    assert loads('"caf\u00e9 \U0001d11e"') == "caf\u00e9 \U0001d11e"
    for bad in (1, None, memoryview(b"1"), [b"1"]):
        with pytest.raises(TypeError):
            loads(bad)


# ---- hypothesis differential ----------------------------------------------------------

def characters(surrogates):
    points = st.one_of(
        st.integers(0x20, 0x7E),  # printable ASCII, most of real text
        st.integers(0, 0x1F),  # control characters
        st.sampled_from([0x22, 0x5C, 0x2F, 0x7F, 0x80, 0xFF, 0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF]),
        st.integers(0x80, 0x10FFFF),
    )
    if not surrogates:
        points = points.filter(lambda c: not 0xD800 <= c <= 0xDFFF)
    else:
        points = st.one_of(points, st.integers(0xD800, 0xDFFF))
    return points.map(chr)


def texts(surrogates):
    samples = ["", "\U0001d11e", "a\"b\\c/d\b\f\n\r\t", "\x00\x1f\x7f"]
    if surrogates:  # a pair as two str code points (dumps escapes each), and lone ones
        samples += ["\ud834\udd1e", "\ud800", "x\udfff"]
    return st.one_of(st.text(characters(surrogates), max_size=20),
                     st.text(max_size=10),  # hypothesis' own mix, no surrogates
                     st.sampled_from(samples))


INTS = st.one_of(
    st.integers(),
    st.integers(-2**64 - 10, 2**64 + 10),
    st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -2**63, -2**63 - 1,
                     10**18 - 1, 10**18, -10**18, 10**19]),
    st.integers(-10**1000, 10**1000),
)


def floats(special):
    base = st.one_of(
        st.floats(allow_nan=special, allow_infinity=special, allow_subnormal=True),
        st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                         0.1, 1e16, 1e-7, 123456789.0, 1.5e300]),
    )
    if special:
        base = st.one_of(base, st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    return base


def json_values(special=True, surrogates=True):
    keys = st.one_of(texts(surrogates), INTS, floats(special), st.booleans(), st.none())
    scalars = st.one_of(st.none(), st.booleans(), INTS, floats(special), texts(surrogates))
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.lists(children, max_size=6).map(tuple),
            st.dictionaries(keys, children, max_size=6),
        ),
        max_leaves=30,
    )


HYPOTHESIS = settings(max_examples=300, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@HYPOTHESIS
@given(json_values(special=True, surrogates=True))
def test_dumps_is_json_dumps_byte_for_byte(value):
    ours = dumps(value)
    assert type(ours) is str
    assert ours == json.dumps(value)


@HYPOTHESIS
@given(json_values(special=False, surrogates=True))
def test_loads_of_dumps_is_json_round_trip(value):
    expected = json.loads(json.dumps(value))
    assert same(loads(dumps(value)), expected)
    assert same(loads(json.dumps(value).encode()), expected)
    assert same(loads(json.dumps(value)), expected)


@HYPOTHESIS
@given(json_values(special=False, surrogates=False))
def test_loads_of_raw_utf8_is_json_loads(value):
    # non-ASCII as raw UTF-8 (1-4 byte sequences), not \u escapes
    text = json.dumps(value, ensure_ascii=False)
    assert same(loads(text.encode("utf-8")), json.loads(text))
    compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"), indent=None)
    assert same(loads(compact.encode("utf-8")), json.loads(compact))
    spaced = json.dumps(value, ensure_ascii=False, indent="\t")
    assert same(loads(spaced.encode("utf-8")), json.loads(spaced))


@HYPOTHESIS
@given(st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True))
def test_float_text_parses_as_python_float(value):
    for text in (repr(value), f"{value:.17e}", f"{value:.3e}", f"{value:.20f}"):
        if text[0] in "-0123456789" and "inf" not in text:
            assert same(loads(text), float(text)), text


# ---- nesting and cycles ---------------------------------------------------------------

def depth_of(value):
    depth = 0
    while isinstance(value, list):
        assert len(value) <= 1
        depth += 1
        value = value[0] if value else None
    return depth


def test_1000_levels_decode():
    assert depth_of(loads(b"[" * 1000 + b"]" * 1000)) == 1000
    doc = b'{"a":' * 1000 + b"1" + b"}" * 1000
    value = loads(doc)
    for _ in range(1000):
        value = value["a"]
    assert value == 1


def test_100000_brackets_is_a_clean_nesting_error():
    err = decode_error(b"[" * 100000)
    assert "nesting" in str(err)
    err = decode_error(b'{"a":' * 100000)
    assert "nesting" in str(err)


def deep_list(levels):
    value = []
    for _ in range(levels):
        value = [value]
    return value


def test_dumps_of_100000_deep_list_is_recursion_error_like_json():
    value = deep_list(100000)
    with pytest.raises(RecursionError):
        json.dumps(value)
    with pytest.raises(RecursionError):
        dumps(value)
    assert dumps(deep_list(200)) == json.dumps(deep_list(200))


def circular(value):
    with pytest.raises(ValueError) as info:
        json.dumps(value)
    assert str(info.value) == "Circular reference detected"
    with pytest.raises(ValueError) as info:
        dumps(value)
    assert str(info.value) == "Circular reference detected"


def test_cycles_are_value_errors():
    a = []
    a.append(a)
    circular(a)
    d = {}
    d["self"] = d
    circular(d)
    mixed = {"list": [1, 2]}
    mixed["list"].append({"back": mixed})
    circular(mixed)


def test_cycle_deeper_than_64_levels():
    head = []
    tail = head
    for i in range(100):
        nxt = [] if i % 2 else {}
        if isinstance(tail, list):
            tail.append(nxt)
        else:
            tail["k"] = nxt
        tail = nxt
    if isinstance(tail, list):
        tail.append(head)
    else:
        tail["k"] = head
    circular(head)
    # a cycle that starts deep down, not at the root
    root = deep_list(90)
    inner = root
    for _ in range(80):
        inner = inner[0]
    inner.append(inner)
    circular(root)


def test_shared_objects_are_not_cycles():
    shared = [1, {"x": 2}]
    value = [shared, shared, {"a": shared, "b": shared}]
    assert dumps(value) == json.dumps(value)
    deep = deep_list(100)
    leaf = deep
    for _ in range(99):
        leaf = leaf[0]
    leaf.extend([shared, shared, shared])
    assert dumps(deep) == json.dumps(deep)


# ---- numbers --------------------------------------------------------------------------

def test_4000_digit_int_round_trips():
    n = int("7" * 4000)
    text = str(n)
    assert loads(text) == n and type(loads(text)) is int
    assert loads(b"-" + text.encode()) == -n
    assert dumps(n) == json.dumps(n) == text
    assert loads(dumps([n, -n])) == [n, -n]


def test_5000_digit_int_is_an_error_like_json():
    text = "1" * 5000
    with pytest.raises(ValueError):
        json.loads(text)
    err = decode_error(text.encode())
    assert err.pos == 0
    err = decode_error(b'{"n": [' + text.encode() + b"]}")
    assert err.pos == 7
    with pytest.raises(ValueError):
        json.dumps(int(text[:4300]) * 10**700)
    with pytest.raises(ValueError):
        dumps(int(text[:4300]) * 10**700)


@pytest.mark.parametrize("text", [
    "1e400", "-1e400", "1E+400", "-0.0", "0e1", "1E-2", "-0", "0", "-1", "0.0", "1e-400",
    "2.5e-324", "4.9e-324", "1.7976931348623157e308", "1.7976931348623159e308",
    "123456789012345678", "-123456789012345678", "999999999999999999", "1000000000000000000",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "18446744073709551616", "0.1", "3.141592653589793238462643383279", "1" + "0" * 400 + ".5",
    "0." + "0" * 400 + "1", "1e" + "9" * 30, "1e-" + "9" * 30, "100e-2", "12.5E3",
])
def test_numbers_as_json_loads(text):
    assert same(loads(text), json.loads(text))
    assert same(loads(f"[{text}]".encode()), json.loads(f"[{text}]"))


@pytest.mark.parametrize("text", ["01", "-01", "+1", ".5", "1.", "1.e5", "1e", "1e+", "--1", "-",
                                  "0x10", "1_000", "NaN", "-NaN", "Infinity", "-Infinity", "1.5e5.5",
                                  "\u0661", "1 2"])
def test_bad_numbers_rejected(text):
    decode_error(text.encode())


# ---- 10 MB strings --------------------------------------------------------------------

@pytest.mark.parametrize("special", ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "\x80", "\u00e9", "\u20ac", "\U0001d11e"])
def test_strings_of_every_short_length_with_an_escape_anywhere(special):
    """Strs inside lists and dicts are copied a word at a time, the last word loaded to end
    at the text's end; an escape in any byte of either must send them the slow way."""
    for n in range(0, 41):
        base = "".join(chr(ord("a") + (i % 26)) for i in range(n))
        texts = [base] + [base[:i] + special + base[i:] for i in range(n + 1)]
        for value in (texts, {t: t for t in texts}, [{"k": t, "n": [t, 1, t]} for t in texts], tuple(texts)):
            assert dumps(value) == json.dumps(value), (n, special)


def test_ints_and_constants_inside_containers():
    ints = [0, 1, -1, 9, 10, 99, 100, -100, 2**30 - 1, 2**30, -2**30, 2**31, 2**60 - 1, 2**60, -2**60,
            2**62, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, 10**19, 10**30, -10**30]
    ints += [10**k + d for k in range(20) for d in (-1, 0, 1)]
    consts = [True, False, None]
    for value in (ints, tuple(ints), {str(i): i for i in ints}, consts * 5, {"t": True, "f": False, "n": None},
                  [[i, True, None, False] for i in ints]):
        assert dumps(value) == json.dumps(value)


def test_strings_fill_the_output_buffer_to_its_end():
    # many strs of every length, so some end right at the growing buffer's capacity
    for step in range(1, 70):
        value = ["x" * ((i * step) % 67) for i in range(400)]
        assert dumps(value) == json.dumps(value)
        value = {f"k{i}": "y" * ((i * step) % 61) for i in range(300)}
        assert dumps(value) == json.dumps(value)


TEN_MB = 10 * 1024 * 1024


@pytest.mark.parametrize("kind", ["ascii", "escapes", "non-ascii", "astral"])
def test_10_mb_strings(kind):
    unit = {"ascii": "abcdefgh",
            "escapes": 'ab"c\\d\n\t/\x01',
            "non-ascii": "caf\u00e9 \u20ac\u4e2d",
            "astral": "a\U0001d11e\u00e9\U0010ffff"}[kind]
    s = unit * (TEN_MB // len(unit.encode()) + 1)
    escaped = json.dumps(s)
    assert dumps(s) == escaped
    assert loads(escaped.encode()) == s
    raw = json.dumps(s, ensure_ascii=False).encode("utf-8")
    assert len(raw) >= TEN_MB
    assert loads(raw) == s
    assert loads(b'{"k": [' + raw + b"]}") == {"k": [s]}


# ---- invalid UTF-8 --------------------------------------------------------------------

SMALL_DOC = b'{"key": ["value", 1, "\xc3\xa9"]}'
STRUCTURAL = re.compile(r"^(expected|unterminated|unexpected|invalid|control character)")


def assert_rejected_cleanly(data):
    with pytest.raises(ValueError):
        json.loads(data)  # json rejects it too: any value of ours would be wrong
    err = decode_error(data)
    message = str(err)
    assert "UTF-8" in message or STRUCTURAL.match(message), message
    return err


def test_small_doc_is_valid():
    assert loads(SMALL_DOC) == json.loads(SMALL_DOC) == {"key": ["value", 1, "\u00e9"]}


@pytest.mark.parametrize("i", range(len(SMALL_DOC)))
def test_0xff_at_every_position(i):
    data = SMALL_DOC[:i] + b"\xff" + SMALL_DOC[i + 1:]
    err = assert_rejected_cleanly(data)
    assert err.pos <= i
    if err.pos == i or SMALL_DOC[i:i + 1] == b'"':
        assert "UTF-8" in str(err) or "unterminated" in str(err), str(err)


@pytest.mark.parametrize("i", range(len(SMALL_DOC)))
def test_0xc3_at_every_position(i):
    data = SMALL_DOC[:i] + b"\xc3" + SMALL_DOC[i + 1:]
    if data == SMALL_DOC:
        return
    assert_rejected_cleanly(data)


@pytest.mark.parametrize("i", range(len(SMALL_DOC)))
def test_truncated_then_0xc3_at_every_position(i):
    assert_rejected_cleanly(SMALL_DOC[:i] + b"\xc3")


@pytest.mark.parametrize("i", range(len(SMALL_DOC)))
def test_every_truncation(i):
    decode_error(SMALL_DOC[:i])


@pytest.mark.parametrize("data", [
    b'"\xc0\xaf"', b'"\xc1\xbf"', b'"\xe0\x80\xaf"', b'"\xe0\x9f\xbf"', b'"\xf0\x80\x80\xaf"',
    b'"\xf0\x8f\xbf\xbf"',  # overlong
    b'"\xed\xa0\x80"', b'"\xed\xbf\xbf"', b'"\xed\xa0\xbd\xed\xb8\x80"',  # encoded surrogates
    b'"\xf4\x90\x80\x80"', b'"\xf5\x80\x80\x80"', b'"\xf7\xbf\xbf\xbf"',
    b'"\xf8\x88\x80\x80\x80"', b'"\xfc\x84\x80\x80\x80\x80"',  # beyond U+10FFFF
    b'"\x80"', b'"\xbf"', b'"\xc3"', b'"\xe2\x82"', b'"\xf0\x9f\x98"', b'"\xe2\x82\xac\x80"',
    b'"\xfe"', b'"\xff"', b'[\xc3]', b'\xe9', b'{"\xc3": 1}', b'{"k\xff": 1}',
    b'"\\u00e9\xff"',
])
def test_invalid_utf8_rejected(data):
    err = decode_error(data)
    assert "UTF-8" in str(err), str(err)


def test_valid_utf8_outside_strings_is_a_structural_error():
    assert str(decode_error(b"[\xc3\xa9]")) == "expected a value at byte 1"
    assert str(decode_error(b"\xe2\x82\xac")) == "expected a value at byte 0"
    assert str(decode_error(b"[1]\xc3\xa9")) == "unexpected data after the JSON value at byte 3"


@pytest.mark.parametrize("char", ["\x7f", "\x80", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\ufffd",
                                  "\uffff", "\U00010000", "\U0001f600", "\U0010ffff"])
def test_utf8_boundaries_accepted(char):
    data = json.dumps([char, {char: char}], ensure_ascii=False).encode("utf-8")
    assert loads(data) == json.loads(data) == [char, {char: char}]


def test_raw_surrogate_encoding_is_rejected_though_json_accepts_it():
    assert json.loads(b'"\xed\xa0\x80"') == "\ud800"  # surrogatepass in json.loads(bytes)
    decode_error(b'"\xed\xa0\x80"')


# ---- escapes --------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    r'"\ud834\udd1e"', r'"\uD834\uDD1E"', r'"\ud800"', r'"\udc00"', r'"\udfff"', r'"\ud800x"',
    r'"\ud800\ud800"', r'"\ud800\ud800\udc00"', r'"\udc00\ud800"', r'"\ud800\u0041"', r'"\ud800\n"',
    r'"\ud800\\udc00"', r'"a\ud800"', r'"\u0000"', r'"\u001f\u007f\u0080"', r'"\u00e9\u20ac"',
    r'"\"\\\/\b\f\n\r\t"', r'"\uFFFF\uFFFE"', r'{"\ud834\udd1e": "\ud800"}', r'"\ud83d\ude00!"',
    r'"x\u12345"',
])
def test_escapes_as_json_loads(text):
    assert same(loads(text.encode()), json.loads(text))
    assert same(loads(text), json.loads(text))


@pytest.mark.parametrize("text", [
    r'"a\nb"', r'"\u0041"', r'"caf\u00e9"', r'"\u00ff\t"', r'"\u0100"', r'"\u20ac\n"', r'"\uffff"',
    r'"\ud83d\ude00"', r'"a\ud800"', r'"\u00e9\ud83d\ude00\u0041"',
    '"caf\xc3\xa9\\n"', '"\xe2\x82\xac\\t\xf0\x9f\x98\x80"', '"\xf0\x9f\x98\x80\\u0041"',
])
def test_escaped_strings_get_the_narrowest_kind(text):
    """A str is built at the kind its largest character needs, as Python builds every str;
    one that is all ASCII must say so (isascii reads that flag)."""
    data = text.encode("latin-1")
    got, want = loads(data), json.loads(data)
    assert same(got, want)
    assert got.isascii() == want.isascii()
    assert sys.getsizeof(got) == sys.getsizeof(want)


@pytest.mark.parametrize("n", [1, 100, 127, 128, 129, 300, 5000])
def test_long_escaped_strings(n):
    for piece in [r"a\n", r"\u00e9", r"\u20ac", r"\ud83d\ude00", r"\u00e9\u0041\u20ac\"", "\xc3\xa9\\t"]:
        text = '"' + piece * n + '"'
        data = text.encode("latin-1")
        assert same(loads(data), json.loads(data)), (piece, n)
        doc = b'{"k": ' + data + b', "x": [' + data + b']}'
        assert same(loads(doc), json.loads(doc))


def test_unterminated_escaped_string_reports_the_first_error():
    # the string's end is not found: the first problem met in it is what is reported
    assert decode_error(b'["ab\\ncd\x01ef').pos == 8
    assert decode_error(b'["ab\\ncd\\qef').pos == 8
    assert decode_error(b'["ab\\ncd').pos == 1
    assert decode_error(b'["ab\\').pos == 4
    assert decode_error(b'["ab\\ncd\xffef').pos == 8


def test_surrogate_pair_combines():
    assert loads(rb'"\ud834\udd1e"') == "\U0001d11e"
    assert len(loads(rb'"\ud834\udd1e"')) == 1


@pytest.mark.parametrize("text", [
    r'"\x41"', r'"\U00000041"', r'"\u00g0"', r'"\u12"', r'"\u"', r'"\a"', r'"\0"', r"""'\''""",
    r'"\'"', r'"\ "', '"\\', '"\\"', r'"\u-123"', r'"\u 123"', r'"\ud800\u12"', r'"\ud834\udd1"',
    '"\\\xc3\xa9"', r'"\e"', r'"\v"',
])
def test_invalid_escapes_rejected(text):
    data = text.encode("latin-1") if isinstance(text, str) else text
    with pytest.raises(ValueError):
        json.loads(data)
    decode_error(data)


@pytest.mark.parametrize("raw", [b'"\x00"', b'"\x1f"', b'"\t"', b'"\n"', b'"a\rb"'])
def test_raw_control_characters_rejected(raw):
    with pytest.raises(ValueError):
        json.loads(raw)
    assert "control" in str(decode_error(raw))


# ---- dumps: subclasses, keys, errors ---------------------------------------------------

class Color(enum.IntEnum):
    RED = 1
    BIG = 2**70


class Ratio(float):
    def __repr__(self):
        return "Ratio!"


class Name(str):
    def __str__(self):
        return "not this"


class Items(list):
    pass


class Record(dict):
    pass


class Flag(enum.Enum):
    ON = "on"


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize("value", [
    Color.RED, Color.BIG, [Color.RED, Color.BIG], {"c": Color.RED},
    Ratio(1.5), Ratio("nan"), Name("hi\u00e9"), {Name("k"): Name("v")},
    Point(1, 2.5), [Point("a", [Point(1, 2)])],
    collections.OrderedDict([("b", 1), ("a", 2)]), Record(z=1, a=Items([1, 2])), Items(),
    {Color.RED: 1, Ratio(2.5): 2, Name("n"): 3},
    (), (1,), [(), []], {}, "", 0, -0.0, 1e16, 1e-7, 1.0, float("inf"), float("-inf"), float("nan"),
    True, False, None, [True, False, None],
])
def test_dumps_subclasses_like_json(value):
    assert dumps(value) == json.dumps(value)


def test_dumps_dict_subclass_items_like_json():
    class Odd(dict):
        def items(self):
            return [("only", 1)]

    value = Odd(a=1, b=2)
    assert dumps(value) == json.dumps(value)


@pytest.mark.parametrize("value", [
    {1: "a"}, {-5: "a"}, {10**30: "big"}, {2.5: "f"}, {-0.0: "z"}, {1e300: "e"}, {float("inf"): 1},
    {float("-inf"): 1}, {float("nan"): 1}, {True: "t"}, {False: "f"}, {None: "n"},
    {1: "a", "1": "b"}, {"s": 1, 2: 2, 3.5: 3, None: 4, False: 5},
])
def test_dict_keys_converted_like_json(value):
    assert dumps(value) == json.dumps(value)


def test_bad_key_type_error_like_json():
    for key in [(1, 2), frozenset(), b"bytes", Flag.ON]:
        value = {key: 1}
        with pytest.raises(TypeError) as expected:
            json.dumps(value)
        with pytest.raises(TypeError) as info:
            dumps(value)
        assert str(info.value) == str(expected.value)
    with pytest.raises(TypeError, match=r"^keys must be str, int, float, bool or None, not tuple$"):
        dumps({(1,): 2})


@pytest.mark.parametrize("value, name", [
    (object(), "object"), ([1, {"a": object()}], "object"), (b"bytes", "bytes"), ({1, 2}, "set"),
    (1j, "complex"), (Flag.ON, "Flag"), (bytearray(b"x"), "bytearray"), (range(3), "range"),
])
def test_unserialisable_is_type_error_naming_the_type(value, name):
    with pytest.raises(TypeError) as expected:
        json.dumps(value)
    with pytest.raises(TypeError) as info:
        dumps(value)
    assert str(info.value) == str(expected.value) == f"Object of type {name} is not JSON serializable"


# ---- numpy ----------------------------------------------------------------------------

np = pytest.importorskip("numpy")


def numpy_cases():
    return [
        np.arange(10), np.arange(6, dtype=np.int8).reshape(2, 3), np.array([1.5, -0.0, np.nan, np.inf]),
        np.linspace(0, 1, 7, dtype=np.float32), np.array([True, False]), np.zeros((2, 0)),
        np.array([[1.0, 2.0], [3.0, 4.0]]), np.array(3.25), np.array([2**63 - 1], dtype=np.int64),
        np.array([2**64 - 1], dtype=np.uint64), np.array([1, 2], dtype=np.float16),
        np.int64(7), np.int32(-3), np.uint8(255), np.float32(0.1), np.float64(0.1), np.bool_(True),
        np.bool_(False), np.float64("nan"), np.float32("inf"),
        {"array": np.arange(3), "scalar": np.int64(5), "nested": [np.float32(1.5), {"b": np.bool_(True)}]},
        [np.array([[True]]), (np.int16(1), np.array(["a", "b"]))],
        np.array([{"a": 1}, None], dtype=object),
    ]


def to_plain(value):
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


@pytest.mark.parametrize("value", numpy_cases(), ids=lambda v: type(v).__name__)
def test_numpy_encodes_like_tolist(value):
    assert dumps(value) == json.dumps(to_plain(value))


def test_numpy_float64_is_a_float_as_json_sees_it():
    assert dumps(np.float64(1.5)) == json.dumps(np.float64(1.5)) == "1.5"
    assert dumps({np.float64(2.5): 1}) == json.dumps({np.float64(2.5): 1})


def test_numpy_int_key_is_a_type_error_like_json():
    with pytest.raises(TypeError) as expected:
        json.dumps({np.int64(1): 1})
    with pytest.raises(TypeError) as info:
        dumps({np.int64(1): 1})
    assert str(info.value) == str(expected.value)


def test_numpy_array_in_itself_cycle_free_arrays_fine():
    a = np.empty(1, dtype=object)
    a[0] = [1, 2]
    assert dumps(a) == json.dumps(a.tolist())


def test_dumps_does_not_import_numpy():
    script = ("import sys, cortex_runtime.json as j\n"
              "assert j.dumps({'a': 1, 'b': [1.5, None, 'x']}) == '{\"a\": 1, \"b\": [1.5, null, \"x\"]}'\n"
              "assert j.loads(b'{\"a\": [1, 2.5]}') == {'a': [1, 2.5]}\n"
              "try:\n    j.dumps(object())\nexcept TypeError:\n    pass\n"
              "print('numpy' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# ---- objects: duplicate keys and the key cache ------------------------------------------

def test_duplicate_keys_last_wins():
    assert loads(b'{"a": 1, "b": 2, "a": 3}') == json.loads(b'{"a": 1, "b": 2, "a": 3}') == {"a": 3, "b": 2}
    assert list(loads(b'{"a": 1, "b": 2, "a": 3}')) == ["a", "b"]
    assert loads(b'{"a": {"x": 1}, "a": [2]}') == {"a": [2]}
    assert loads(rb'{"\u0061": 1, "a": 2}') == {"a": 2}


def test_key_cache_reuses_one_str():
    first = loads(b'{"abc": 1}')
    second = loads(b'{"abc": 2}')
    (k1,), (k2,) = first.keys(), second.keys()
    assert k1 == k2 == "abc"
    assert k1 is k2
    (k3,) = loads(b'[{"abc": 3}]')[0].keys()
    assert k3 is k1


def test_key_cache_never_gives_wrong_text():
    keys = ["abc", "abd", "abC", "ab", "abcd", "bbc", "a\x7f", "", " ", "0"]
    for _ in range(3):
        for key in keys:
            doc = json.dumps({key: key}).encode()
            assert loads(doc) == {key: key}, key
    doc = json.dumps({k: i for i, k in enumerate(keys)}).encode()
    assert loads(doc) == json.loads(doc)


def test_many_distinct_keys():
    keys = [f"key{i}" for i in range(3000)] + ["x" * n for n in range(1, 100)]
    doc = json.dumps({k: i for i, k in enumerate(keys)}).encode()
    for _ in range(3):
        value = loads(doc)
        assert list(value.items()) == [(k, i) for i, k in enumerate(keys)]
    # one key per document, in a shuffled order, so every slot is overwritten many times
    for i in range(0, 3000, 7):
        key = keys[(i * 7919) % 3000]
        assert loads(b'{"' + key.encode() + b'": 0}') == {key: 0}


def test_keys_with_escapes_and_non_ascii_are_not_confused_with_cached_ones():
    assert loads(b'{"abc": 1}') == {"abc": 1}
    assert loads(rb'{"ab\u0063": 1}') == {"abc": 1}
    assert loads(b'{"ab\xc3\xa9": 1}') == {"ab\u00e9": 1}
    assert loads(rb'{"ab\n": 1}') == {"ab\n": 1}
    assert loads(b'{"abc": 1}') == {"abc": 1}


# ---- float fast paths: decimals of few digits, integral floats ---------------------------

def test_short_decimals_parse_exactly_as_float():
    import random
    rng = random.Random(1234)
    texts = []
    for _ in range(20000):
        digits = str(rng.randrange(1, 10 ** rng.randint(1, 17)))
        point = rng.randint(0, len(digits))
        mantissa = (digits[:point] or "0") + ("." + digits[point:] if point < len(digits) else "")
        exponent = rng.choice(["", f"e{rng.randint(-30, 30)}", f"E+{rng.randint(0, 25)}",
                               f"e-{rng.randint(0, 25)}"])
        if "." not in mantissa and not exponent:
            exponent = "e0"
        if mantissa.startswith("0") and len(mantissa) > 1 and mantissa[1] != ".":
            continue
        texts.append(rng.choice(["", "-"]) + mantissa + exponent)
    texts += ["9007199254740993.0", "0.1e-22", "1e22", "1e23", "123456789012345e-22", "999999999999999e22",
              "0.000000000000000000001", "4.35", "2.675", "0.30000000000000004", "-0.0e10", "0.0e-400"]
    values = loads("[" + ",".join(texts) + "]")
    for text, value in zip(texts, values):
        assert same(value, float(text)), text


@pytest.mark.parametrize("value", [
    0.0, -0.0, 1.0, -1.0, 123.0, 2.0 ** 52, 2.0 ** 53, 2.0 ** 53 + 2, 9999999999999998.0, 1e15, 1e16,
    -1e16, 1e17, 2.0 ** 63, -2.0 ** 63, 2.0 ** 64, 1e300, 0.5, -2.5, 1e-300,
])
def test_integral_and_simple_floats_repr(value):
    assert dumps(value) == json.dumps(value) == repr(value)
    assert dumps({value: [value]}) == json.dumps({value: [value]})


def test_floats_of_every_kind_repr_exactly():
    import random
    import struct
    rng = random.Random(99)
    values = []
    for _ in range(20000):
        values.append(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
        values.append(round(rng.uniform(-1000, 1000), rng.randint(0, 12)))
        values.append(float(f"{rng.randrange(1, 10 ** rng.randint(1, 16))}e{rng.randint(-25, 20)}"))
        values.append(math.nextafter(float(f"{rng.randrange(1, 10 ** 6)}e{rng.randint(-8, 8)}"), math.inf))
        values.append(2.0 ** rng.randint(-20, 52) * rng.choice([1, -1, 3, 1.5]))
    values += [1e-4, 9.999999999999999e-05, 1e15, 999999999999999.9, 0.1, 0.2, 0.3, 1 / 3, 2 / 3]
    values = [v for v in values if math.isfinite(v)]
    assert dumps(values) == json.dumps(values)
    assert same(loads(json.dumps(values)), values)


# ---- shortest float formatting and exact float parsing --------------------------------
# dumps writes floats with its own shortest round-trip formatter and loads reads up to 19
# significant digits with its own exact parser; both must agree with repr() and float()
# on every double, so the edges of both algorithms are swept here.

def double_from_bits(bits):
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def finite_random_doubles(count, seed):
    rng = random.Random(seed)
    values = []
    while len(values) < count:
        value = double_from_bits(rng.getrandbits(64))
        if math.isfinite(value):
            values.append(value)
    return values


def edge_doubles():
    values = [0.0, -0.0, sys.float_info.max, -sys.float_info.max, sys.float_info.min, 5e-324,
              sys.float_info.min - 5e-324, math.nextafter(sys.float_info.min, math.inf)]
    for e in range(-1074, 1024):  # powers of two (the irregular intervals) and neighbours
        x = math.ldexp(1.0, e)
        values += [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf)]
    for e in range(-324, 309):  # powers of ten and neighbours
        x = float(f"1e{e}")
        if x and math.isfinite(x):
            values += [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf)]
    for bits in range(1, 2000):  # the smallest subnormals, one by one
        values.append(double_from_bits(bits))
    for x in (1e16, 1e-4, 1e15, 1e17, 1e-5, 9999999999999998.0, 1.2345678901234567e16, 0.00012345):
        y = x
        for _ in range(5):  # around repr's switches between positional and exponent notation
            y = math.nextafter(y, 0.0)
            values.append(y)
        y = x
        for _ in range(5):
            y = math.nextafter(y, math.inf)
            values.append(y)
        values.append(x)
    for d in range(1, 100):  # one- and two-digit decimals at every scale
        for e in range(-325, 309, 7):
            x = float(f"{d}e{e}")
            if math.isfinite(x):
                values.append(x)
    return values + [-v for v in values]


def test_float_repr_of_edge_doubles():
    values = edge_doubles()
    assert dumps(values) == repr(values)


def test_float_repr_of_random_bit_patterns():
    values = finite_random_doubles(300_000, seed=20261201)
    assert dumps(values) == repr(values)


def test_float_repr_notation_switch():
    cases = {1e16: "1e+16", 1e-5: "1e-05", 1.5e-7: "1.5e-07", 1.2345678901234567e20: "1.2345678901234567e+20",
             1e-4: "0.0001", 9999999999999998.0: "9999999999999998.0", -0.0: "-0.0", 1e22: "1e+22",
             5e-324: "5e-324", 1.7976931348623157e308: "1.7976931348623157e+308", 123.456: "123.456",
             1e100: "1e+100", 2.5e-100: "2.5e-100", 0.30000000000000004: "0.30000000000000004"}
    for value, text in cases.items():
        assert dumps(value) == text == repr(value)


@HYPOTHESIS
@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
def test_float_dumps_is_json_dumps(value):
    assert dumps(value) == json.dumps(value)
    assert dumps([value, {"k": value}]) == json.dumps([value, {"k": value}])


def loads_many(texts):
    values = loads("[" + ",".join(texts) + "]")
    assert len(values) == len(texts)
    return values


def assert_parses_as_float(texts):
    values = loads_many(texts)
    bad = [(t, v, float(t)) for t, v in zip(texts, values) if not same(v, float(t))]
    assert bad == []


def test_float_loads_of_repr_and_17_digits_of_random_doubles():
    values = finite_random_doubles(200_000, seed=7)
    assert_parses_as_float([repr(v) for v in values])
    assert_parses_as_float(["%.17g" % v if "e" in "%.17g" % v or "." in "%.17g" % v else "%.17g.0" % v
                            for v in values[:50_000]])
    rng = random.Random(8)
    assert_parses_as_float(["%.*e" % (rng.randint(0, 24), v) for v in values[:50_000]])


def test_float_loads_of_edge_doubles():
    values = edge_doubles()
    texts = [repr(v) for v in values] + ["%.17e" % v for v in values] + ["%.25e" % v for v in values]
    assert_parses_as_float(texts)


def test_float_loads_of_random_decimals_with_wide_exponents():
    rng = random.Random(9)
    texts = []
    for _ in range(200_000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        point = rng.randint(1, len(digits))
        mantissa = (digits[:point].lstrip("0") or "0") + ("." + digits[point:] if point < len(digits) else "")
        exponent = rng.choice([f"e{rng.randint(-400, 400)}", f"E+{rng.randint(0, 330)}",
                               f"e-{rng.randint(0, 350)}", f"e{rng.randint(-30, 30)}"])
        texts.append(rng.choice(["", "-"]) + mantissa + exponent)
    assert_parses_as_float(texts)


def test_float_loads_of_halfway_and_boundary_cases():
    texts = ["9007199254740993.0", "9007199254740993e0", "9007199254740992.5e0", "2.2250738585072011e-308",
             "2.2250738585072012e-308", "4.9406564584124654e-324", "2.4703282292062327e-324",
             "2.4703282292062328e-324", "1.7976931348623157e308", "1.7976931348623158e308",
             "1.7976931348623159e308", "1e-400", "1e400", "-1e400", "0e400", "123456789012345678e-10",
             "1234567890123456789e-300", "1234567890123456789e300", "0.1e-342", "1e-342", "1e-343", "1e308",
             "1e309", "7.2057594037927933e16", "1.00000000000000011102230246251565404236316680908203125",
             "1.00000000000000011102230246251565404236316680908203124",
             "1.00000000000000011102230246251565404236316680908203126", "0.0000000000000000000000000001e28"]
    for m in range(1, 40):  # exact halfway points between neighbouring doubles
        x = math.ldexp(1.0, m * 25 - 500)
        up = math.nextafter(x, math.inf)
        half = (decimal.Decimal(x) + decimal.Decimal(up)) / 2
        texts += [f"{half:e}", f"{half:.18e}", f"{half:.30e}"]
    assert_parses_as_float(texts)
    assert_parses_as_float([t.replace("e", "E") for t in texts if "e" in t])


@HYPOTHESIS
@given(st.integers(0, 10 ** 25), st.integers(-400, 400))
def test_float_loads_of_hypothesis_decimals(significand, exponent):
    text = f"{significand}e{exponent}"
    assert same(loads(text), float(text))
    assert same(loads("-" + text), float("-" + text))


# ---- str input with lone surrogates ---------------------------------------------------

@pytest.mark.parametrize("text", [
    '"\ud800"', '"\udfff"', '"a\udc00b"', '"\ud83d\ude00"', '{"\ud800k": "\udbff"}', '["\ud800", 1.5]',
    '"\ud800\\u0041"', '"\\ud83d\ude00"', '"\ud800\\n\udc00"', '"caf\u00e9 \ud800 \U0001d11e"',
])
def test_str_with_lone_surrogates_loads_as_json_loads(text):
    assert same(loads(text), json.loads(text))


def test_str_with_lone_surrogates_still_rejects_invalid_json():
    # (positions count UTF-8 bytes, not characters, so they are not compared here)
    for text in ['"\ud800', '["\ud800",]', '"\ud800\x01"', '\ud800']:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        with pytest.raises(JSONDecodeError):
            loads(text)


def test_bytes_with_encoded_surrogates_still_rejected():
    for data in (b'"\xed\xa0\x80"', b'"\xed\xbf\xbf"', b'["\xed\xa0\xbd\xed\xb8\x80"]', b'{"\xed\xa0\x80": 1}'):
        decode_error(data)
        decode_error(bytearray(data))
    assert loads('"ok"'.encode()) == "ok"


# ---- dumps: cached key texts, in-place scalars, writing straight into the result ------

def test_dumps_key_texts_follow_the_key_objects():
    # more distinct keys than the cache has slots, keys that need escaping, keys longer
    # than a cached text, and the same key objects met again in other dicts
    keys = [f"k{i}" for i in range(1000)] + ["caf\u00e9", 'q"uote', "tab\t", "\u6771\u4eac",
                                             "\U0001f600", "x" * 60, "y" * 53, ""]
    docs = [{k: i for i, k in enumerate(keys)}, {k: [k] for k in reversed(keys)}]
    for _ in range(3):
        for doc in docs:
            assert dumps(doc) == json.dumps(doc)
    # a key dropped and a new one with other text made (maybe at the same address)
    for i in range(2000):
        key = "key%d" % i
        assert dumps({key: i, 1: 2.5, None: "n"}) == json.dumps({key: i, 1: 2.5, None: "n"})


def test_dumps_scalars_in_lists_and_dicts_at_every_kind():
    rng = random.Random(5)
    values = [0, -1, 2**63 - 1, -2**63, 2**63, -2**64, 10**30, 1.5, -0.0, 5e-324, 1e300, math.inf,
              -math.inf, math.nan, True, False, None, "s", "\u00fc", "", [], {}, [1.25]]
    for _ in range(200):
        items = [rng.choice(values) for _ in range(rng.randrange(0, 40))]
        doc = {"a": items, "b": dict(zip(map(str, range(len(items))), items)), "c": tuple(items)}
        assert dumps(doc) == json.dumps(doc)


def test_dumps_sizes_up_and_down():
    # the result is written into a str sized from the last one: bigger, smaller, tiny
    for n in (5000, 2000, 200_000, 3000, 10, 150_000, 1, 400_000, 0):
        doc = [{"i": i, "x": i / 7, "s": "v%d" % i} for i in range(n)]
        assert dumps(doc) == json.dumps(doc)
        assert dumps(n) == json.dumps(n)
