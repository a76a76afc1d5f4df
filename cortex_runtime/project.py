"""What the predictor sees of the project: the filtered file set, .cortexignore and .env.

The staged view is a tree of real directories holding one symlink per visible entry, so that
gigabyte model files are never copied. Only directories that hold a visible entry are created:
a directory left empty by the filters does not appear in the view.
"""
import os
import re

from .errors import StartupError

BYTECODE_SUFFIXES = (".pyc", ".pyo", ".pyd")
DOTENV_NAME = ".env"
IGNORE_FILE = ".cortexignore"

# ---------------------------------------------------------------------------------------------
# .env

DOTENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", re.DOTALL)
DOUBLE_QUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def read_dotenv(path: str) -> dict:
    """Parses a .env file: VARIABLE=value lines, # comments, optional `export `, quotes."""
    label = os.path.basename(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise StartupError(f"{label}: not valid UTF-8") from None
    except OSError as e:
        raise StartupError(f"{label}: cannot read: {e.strerror}") from None

    variables = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = DOTENV_LINE.fullmatch(line)
        value = parse_dotenv_value(match.group(2)) if match else None
        if value is None:
            raise StartupError(f"{label}: line {number}: expected VARIABLE=value")
        variables[match.group(1)] = value
    return variables


def parse_dotenv_value(text: str):
    """The value after '=', or None when a quote is unterminated or followed by junk."""
    if text[:1] == "'":
        end = text.find("'", 1)
        if end < 0 or not is_trailing_comment(text[end + 1:]):
            return None
        return text[1:end]
    if text[:1] == '"':
        value = []
        i = 1
        while i < len(text):
            char = text[i]
            if char == '"':
                return "".join(value) if is_trailing_comment(text[i + 1:]) else None
            if char == "\\" and i + 1 < len(text):
                escaped = text[i + 1]
                # Unknown escapes stay as written, backslash included (as in python-dotenv).
                value.append(DOUBLE_QUOTE_ESCAPES.get(escaped, "\\" + escaped))
                i += 2
                continue
            value.append(char)
            i += 1
        return None
    # Unquoted: a '#' starts a comment only after whitespace, so a=b#c keeps "b#c".
    comment = re.search(r"\s#", text)
    return (text[:comment.start()] if comment else text).strip()


def is_trailing_comment(rest: str) -> bool:
    rest = rest.strip()
    return not rest or rest.startswith("#")


# ---------------------------------------------------------------------------------------------
# .cortexignore (gitignore semantics, one file at the root)


class IgnoreMatcher:
    """gitignore rules of one root-level file; the last matching rule decides."""

    def __init__(self, lines: list):
        self.rules = []  # (regex, negated, directories_only)
        for line in lines:
            rule = parse_ignore_rule(line)
            if rule is not None:
                self.rules.append(rule)

    def matches(self, relpath: str, is_dir: bool) -> bool:
        """Whether the rules exclude relpath itself, ignoring its parent directories."""
        excluded = False
        for regex, negated, directories_only in self.rules:
            if excluded == (not negated):
                continue  # this rule could not change the outcome
            if directories_only and not is_dir:
                continue
            if regex.fullmatch(relpath):
                excluded = not negated
        return excluded

    def ignored(self, relpath: str, is_dir: bool) -> bool:
        """Whether relpath is excluded, by a rule or because a parent directory is: as in git,
        a file cannot be re-included when a directory above it is excluded."""
        parts = relpath.strip("/").split("/")
        for depth in range(1, len(parts)):
            if self.matches("/".join(parts[:depth]), True):
                return True
        return self.matches("/".join(parts), is_dir)


def parse_ignore_rule(line: str):
    line = line.rstrip("\r\n")
    if not line or line.startswith("#"):
        return None
    line = strip_trailing_spaces(line)
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    directories_only = line.endswith("/")
    if directories_only:
        line = line[:-1]  # one slash only, as git: "dir//" is "dir/" that must be a directory
    if not line:
        return None
    # A slash at the start or in the middle anchors the pattern to the root; otherwise it
    # matches a name at any depth.
    anchored = "/" in line
    line = line[1:] if line.startswith("/") else line  # git drops one leading slash only
    regex = ("" if anchored else "(?:.*/)?") + translate_glob(line)
    return re.compile(regex, re.DOTALL), negated, directories_only


def strip_trailing_spaces(line: str) -> str:
    """Drops trailing spaces except one escaped with a backslash."""
    end = 0
    i = 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            i += 2
            end = i
            continue
        if line[i] != " ":
            end = i + 1
        i += 1
    return line[:end]


def split_segments(pattern: str) -> list:
    """The pattern cut at its slashes: [(segment, the separator after it)], the separator "/",
    "\\/" (an escaped slash: a literal one, which git's wildmatch matches as any other) or
    "" after the last.  A slash inside a bracket class cuts nothing: the class is one
    character of a name (one that is never "/")."""
    parts = []
    start = i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            if pattern[i + 1] == "/":
                parts.append((pattern[start:i], "\\/"))
                start = i + 2
            i += 2
        elif char == "[":
            i = translate_bracket(pattern, i)[1]  # an unclosed one runs to the end
        elif char == "/":
            parts.append((pattern[start:i], "/"))
            start = i = i + 1
        else:
            i += 1
    parts.append((pattern[start:], ""))
    return parts


def translate_glob(pattern: str) -> str:
    """A gitignore glob (no leading or trailing slash) as a regex over '/'-separated paths."""
    regex = []
    for segment, separator in split_segments(pattern):
        if len(segment) >= 2 and segment.strip("*") == "":
            # a "**" of its own (between slashes, escaped or not): anything, slashes included
            if separator == "/":
                regex.append("(?:.*/)?")  # "**/" also matches no directory at all
            else:
                # at the end, everything inside; before an escaped slash git's wildmatch
                # takes no zero-directory shortcut, so a/**\/b needs one between
                regex.append(".*" + ("/" if separator else ""))
        else:
            regex.append(translate_segment(segment) + ("/" if separator else ""))
    return "".join(regex)


def translate_segment(segment: str) -> str:
    regex = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "\\" and i + 1 < len(segment):
            regex.append(re.escape(segment[i + 1]))
            i += 2
        elif char == "\\":
            # a backslash that escapes nothing (the pattern's last character): git's wildmatch
            # then fails the whole pattern
            return "(?!)"
        elif char == "*":
            while i < len(segment) and segment[i] == "*":
                i += 1  # "**" inside a name is a plain "*"
            regex.append("[^/]*")
        elif char == "?":
            regex.append("[^/]")
            i += 1
        elif char == "[":
            translated, i = translate_bracket(segment, i)
            regex.append(translated)
        else:
            regex.append(re.escape(char))
            i += 1
    return "".join(regex)


# The classes git's wildmatch knows inside brackets, as regex set members.  git tests bytes
# with its own ASCII-only ctype: nothing beyond ASCII is in any class, and its "space" is
# only tab, newline, carriage return and space.
POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}


def translate_bracket(segment: str, start: int):
    """The regex for the [...] class at segment[start], and the index after it."""
    i = start + 1
    negated = i < len(segment) and segment[i] in "!^"
    if negated:
        i += 1
    members = []
    first = True

    def member(i):  # the (possibly escaped) character at segment[i], and the index after it
        if segment[i] == "\\" and i + 1 < len(segment):
            return segment[i + 1], i + 2
        return segment[i], i + 1

    while i < len(segment):
        char = segment[i]
        if char == "]" and not first:
            # Classes never match the path separator, negated or not.
            body = "".join(members)
            return ("(?!/)[^" if negated else "(?!/)[") + body + "]", i + 1
        if segment.startswith("[:", i):
            # git's wildmatch: "[:name:]" up to the next "]"; without ":]" there the "[" is
            # an ordinary member; an unknown name, or no "]" at all, fails the pattern
            end = segment.find("]", i + 2)
            if end < 0:
                return "(?!)", len(segment)
            if end - 1 > i + 2 and segment[end - 1] == ":":
                posix = POSIX_CLASSES.get(segment[i + 2:end - 1])
                if posix is None:
                    return "(?!)", len(segment)
                members.append(posix)
                i = end + 1
                first = False
                continue  # and a "-" right after it is a literal one, as in git
        low, i = member(i)
        first = False
        if i + 1 < len(segment) and segment[i] == "-" and segment[i + 1] != "]":
            high, i = member(i + 1)
            # git's wildmatch has already compared the start, so a reversed range matches
            # only that one character (re would reject it)
            members.append(re.escape(low) + ("-" + re.escape(high) if low < high else ""))
        else:
            members.append(re.escape(low))
    # git's wildmatch gives up on an unclosed class: the pattern matches nothing.
    return "(?!)", len(segment)


# ---------------------------------------------------------------------------------------------
# The visible set and the staged view


def visible_files(root: str, config_file: str) -> list:
    """Sorted '/'-separated paths, relative to root, of what the predictor may see: files,
    symlinks to files, and symlinks to directories (seen whole, not descended into)."""
    root = os.path.abspath(root)
    config_file = os.path.abspath(config_file)
    matcher = IgnoreMatcher(read_ignore_file(root))
    found = []

    def walk(directory, prefix):
        try:
            with os.scandir(directory) as entries:
                entries = list(entries)
        except OSError:
            return  # unreadable: the predictor could not read it either
        for entry in entries:
            relpath = prefix + entry.name
            # A symlinked directory counts as a directory for the rules but is not descended
            # into: it may point outside the root, or at one of its own parents.
            is_dir = entry.is_dir()
            if excluded_by_default(entry.name, relpath, is_dir, entry.path, config_file):
                continue
            if relpath != DOTENV_NAME and matcher.matches(relpath, is_dir):
                continue
            if is_dir and not entry.is_symlink():
                walk(entry.path, relpath + "/")
            else:
                found.append(relpath)

    walk(root, "")
    return sorted(found)


def excluded_by_default(name, relpath, is_dir, path, config_file) -> bool:
    if name.startswith("."):
        return relpath != DOTENV_NAME
    if name.startswith("cortex-debug-"):
        return True
    if is_dir:
        return name == "__pycache__"
    return name.endswith(BYTECODE_SUFFIXES) or path == config_file


def read_ignore_file(root: str) -> list:
    path = os.path.join(root, IGNORE_FILE)
    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StartupError(f"{IGNORE_FILE}: cannot read: {e.strerror}") from None


def stage_project(root: str, config_file: str, dest: str) -> None:
    """Fills dest (empty or absent) with real directories and one symlink per visible entry,
    each pointing at the absolute source path."""
    root = os.path.abspath(root)
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        raise StartupError(f"{dest}: the staging directory is not empty")
    for relpath in visible_files(root, config_file):
        target = os.path.join(dest, *relpath.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.path.join(root, *relpath.split("/")), target)
