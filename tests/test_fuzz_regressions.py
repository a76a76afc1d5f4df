"""Inputs the atheris harnesses (fuzz/atheris_ignore.py, fuzz/atheris_form.py) found, kept
as plain tests: the .cortexignore matcher never raises, the form decoder raises only
ValueError."""
import shutil
import subprocess

import pytest

from cortex_runtime._payload import decode_form
from cortex_runtime.project import IgnoreMatcher


# -- .cortexignore: a reversed bracket range was handed to re as is -> re.error -------------

@pytest.mark.parametrize("pattern", ["[z-a]", "[\x1f[\x83-", "[[-\\-]x", "[!z-a]", "[a-cz-a]", "[\\]-a]"])
def test_ignore_pattern_with_a_reversed_range_does_not_raise(pattern):
    matcher = IgnoreMatcher([pattern, "keep"])
    for path in ["a", "z", "-", "x", "dir/b", "keep"]:
        assert matcher.ignored(path, False) in (True, False)


def test_reversed_range_matches_its_first_character_as_in_git():
    # git's wildmatch compares the range's start as a literal before it sees the "-"
    # (checked against `git check-ignore`): [z-a] matches "z" and nothing else
    matcher = IgnoreMatcher(["[z-a]"])
    assert matcher.ignored("z", False)
    assert not any(matcher.ignored(p, False) for p in ["a", "m", "-"])
    # the rest of the class still counts
    matcher = IgnoreMatcher(["[b-ax].log"])
    assert matcher.ignored("x.log", False)
    assert matcher.ignored("b.log", False)
    assert not matcher.ignored("a.log", False)
    matcher = IgnoreMatcher(["[!z-a]"])
    assert matcher.ignored("q", False)
    assert not matcher.ignored("z", False)


def test_ranges_still_match_their_members():
    matcher = IgnoreMatcher(["file[0-9].txt", "[!a-c]x", "e[\\-]"])
    assert matcher.ignored("file5.txt", False)
    assert not matcher.ignored("fileA.txt", False)
    assert matcher.ignored("dx", False)
    assert not matcher.ignored("bx", False)
    assert matcher.ignored("e-", False)


def test_first_fuzz_input_for_the_matcher():
    # roughly the harness's decoding of the first crashing input
    lines = ["\u00db", "[\x1f[\u00a0-\u00db", "[\x1f-"]
    assert IgnoreMatcher(lines).ignored("", True) in (True, False)


# -- forms: the stdlib email parser raised IndexError on a malformed Content-Type ------------

def test_malformed_multipart_content_type_is_a_value_error():
    # a parameter name with no "=" after it ends the parameter list: email's get_parameter
    # indexed past the end of the header value
    with pytest.raises(ValueError):
        decode_form(b'multipart/form-edatat=utf-8f"\r\nConte;n boundta-Di',
                    'multipart/form-data; boundary="q"; chars\x04*')


@pytest.mark.parametrize("content_type", [
    "multipart/form-data; boundary=q; x",
    "multipart/form-data; boundary=q; charset",
    "multipart/form-data; boundary=q;=",
])
def test_multipart_content_type_edges_decode_or_raise_value_error(content_type):
    body = b'--q\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--q--\r\n'
    try:
        result = decode_form(body, content_type)
    except ValueError:
        return
    assert result == {"a": "1"}


def test_rfc2231_name_without_charset_gives_a_str_key():
    # name*=VALUE (no charset'lang' prefix): get_param returned (None, None, VALUE), and the
    # tuple became the field's key
    body = (b"--wyz\r\nContent-Disposition: `(; af\"a='\"q(; a=?; name*=wyz--\r\n"
            b"\r\nv\r\n--wyz--\r\n")
    fields = decode_form(body, "multipart/form-data; boundary=wyz")
    assert all(isinstance(key, str) for key in fields)


def test_rfc2231_encoded_names_decode_to_str():
    body = (b"--q\r\nContent-Disposition: form-data; name*=x\r\n\r\n1\r\n"
            b"--q\r\nContent-Disposition: form-data; name*=utf-8''caf%C3%A9\r\n\r\n2\r\n--q--\r\n")
    assert decode_form(body, "multipart/form-data; boundary=q") == {"x": "1", "caf\u00e9": "2"}


def test_only_one_leading_slash_is_dropped_as_in_git():
    # found comparing with `git check-ignore`: "//b" left "/b", which matches no path
    assert not IgnoreMatcher(["//b"]).ignored("b/x", False)
    assert IgnoreMatcher(["/b"]).ignored("b/x", False)


# -- .cortexignore: "/" inside a bracket class, an escaped slash, "**" beside them, POSIX classes
# Found comparing with `git check-ignore --no-index` on random patterns (git 2.39): the
# matcher cut patterns at every "/", brackets and escapes regardless.  Each row is what git
# answers; the last test asks git itself when it is installed.

GIT_CASES = [
    # (pattern, path, is_dir, ignored by git)
    # a class never matches "/", but its "/" makes the pattern anchored (git looks for any "/")
    ("a[/]b", "a/b", False, False),
    ("a[/]b", "axb", False, False),
    ("[/b]", "b", False, True),
    ("[/b]", "d/b", False, False),
    ("[!/]", "b", False, True),
    ("[!/]", "dd/b", False, False),
    ("a[!/]b", "axb", False, True),
    ("a[b/]x", "abx", False, True),
    ("x/[/a]", "x/a", False, True),
    ("a[/", "a/b", False, False),  # unclosed: matches nothing
    # an escaped slash is a literal slash: it separates directories as one would
    ("a\\/b", "a/b", False, True),
    ("a\\/b", "x/a/b", False, False),
    ("a\\/**", "a/x/b", False, True),
    ("**\\/b", "x/a/b", False, True),
    # ...except that "**" before it takes no zero-directory shortcut
    ("**\\/b", "b", False, False),
    ("a/**\\/b", "a/b", False, False),
    ("a/**\\/b", "a/x/b", False, True),
    ("a/**/b", "a/b", False, True),
    # "***" between slashes is "**"
    ("a/***/b", "a/x/y/b", False, True),
    # one trailing slash is dropped: "d//" must match "d/" against "d", which nothing does
    ("d//", "d", True, False),
    ("d/", "d", True, True),
    # POSIX classes inside brackets, as git's wildmatch knows them
    ("[[:digit:]]x", "1x", False, True),
    ("[[:digit:]]x", "ax", False, False),
    ("[![:alpha:]]*", "1bc", False, True),
    ("[![:alpha:]]*", "abc", False, False),
    ("a[[:upper:][:digit:]]", "a7", False, True),
    ("a[[:upper:][:digit:]]", "ab", False, False),
    ("a[[:space:]]b", "a b", False, True),
    ("x[[:punct:]]", "x_", False, True),
    ("x[[:alnum:]]", "x_", False, False),
    ("x[[:space:]]", "x\x0b", False, False),  # git's space: tab, newline, CR, space
    ("x[[:digit:]-a]", "x-", False, True),  # a "-" after a class is a literal one
    ("x[[:digit:]-a]", "xa", False, True),
    ("x[[:bogus:]]", "xb", False, False),  # an unknown class fails the pattern
    ("x[[:alpha:]", "xa", False, False),  # so does a class that is never closed
    ("x[[:]", "x:", False, True),  # no ":]": "[" and ":" are ordinary members
    ("x[[:alpha]]", "xa]", False, True),
    ("x[[:alpha]]", "x]", False, False),
    # a backslash escaping nothing fails the pattern
    ("foo\\", "foo\\", False, False),
    ("foo\\/", "e/foo\\", True, False),
]


@pytest.mark.parametrize("pattern, path, is_dir, expected", GIT_CASES)
def test_slashes_in_classes_and_escaped_slashes_match_as_in_git(pattern, path, is_dir, expected):
    assert IgnoreMatcher([pattern]).ignored(path, is_dir) is expected


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_git_cases_are_what_git_says(tmp_path):
    # one repository per case: a path that is a directory in one case is a file in another
    for index, (pattern, path, is_dir, expected) in enumerate(GIT_CASES):
        repo = tmp_path / str(index)
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / ".gitignore").write_text(pattern + "\n")
        target = repo / path
        if is_dir:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("")
        result = subprocess.run(["git", "-C", str(repo), "check-ignore", "--no-index", "-q", path])
        assert (result.returncode == 0) is expected, (pattern, path, is_dir)
