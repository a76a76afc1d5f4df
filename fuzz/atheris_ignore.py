"""atheris harness: cortex_runtime.project.IgnoreMatcher, the .cortexignore matcher.

    fuzz/run.sh SECONDS ignore        (or: python fuzz/atheris_ignore.py CORPUS -max_total_time=N)

Property: for any pattern lines and any relative path, IgnoreMatcher(lines) builds and
.ignored(path, is_dir) returns a bool -- it never raises (a bad glob must not stop a
deploy with a re.error), and two invariants hold:
a final "!*" re-includes everything, a final "*" excludes everything.

Input layout: byte 0 holds flags (bit 0: is_dir); the rest is text in which most bytes
map onto the characters gitignore gives a meaning to (so the mutator reaches brackets,
ranges, escapes and "**" quickly) and bytes >= 0xe0 start an arbitrary code point.  The
text is split on "\\n": every line but the last is a pattern line, the last is the path.
"""
import sys

import atheris

with atheris.instrument_imports(include=["cortex_runtime.project"]):
    from cortex_runtime.project import IgnoreMatcher

ALPHABET = "*?[]!^-\\/ #ab.cZ\r\t0]!-**/"


def decode(data: bytes) -> str:
    out = []
    i = 0
    while i < len(data):
        b = data[i]
        i += 1
        if b == 0x0A:
            out.append("\n")
        elif b >= 0xE0 and i + 1 < len(data):
            cp = ((b & 0x1F) << 16 | data[i] << 8 | data[i + 1]) % 0x110000
            i += 2
            out.append(chr(cp))
        elif b >= 0x80:
            out.append(ALPHABET[b % len(ALPHABET)])
        else:
            out.append(chr(b))
    return "".join(out)


def check(lines, path, is_dir):
    matcher = IgnoreMatcher(lines)
    result = matcher.ignored(path, is_dir)
    if not isinstance(result, bool):
        raise AssertionError(f"ignored() returned {result!r}")
    # no rules: nothing is ignored
    if not matcher.rules and result:
        raise AssertionError("ignored with no rules")
    # "!*" last re-includes every path: it matches every name, the parents' included
    reincluded = IgnoreMatcher(list(lines) + ["!*"]).ignored(path, is_dir)
    if reincluded is not False:
        raise AssertionError(f"'!*' last: ignored() is {reincluded!r}")
    # "*" last excludes every path
    excluded = IgnoreMatcher(list(lines) + ["*"]).ignored(path, is_dir)
    if excluded is not True:
        raise AssertionError(f"'*' last: ignored() is {excluded!r}")
    return result


def TestOneInput(data: bytes):
    if not data:
        return
    is_dir = bool(data[0] & 1)
    text = decode(data[1:])
    *lines, path = text.split("\n")
    check(lines, path, is_dir)


def main():
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
