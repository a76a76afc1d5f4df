"""The project as the predictor sees it: .cortexignore, .env, the visible set, the staged view."""
import os

import pytest

from cortex_runtime.errors import StartupError
from cortex_runtime.project import IgnoreMatcher, read_dotenv, stage_project, visible_files

# (rules, path, is_dir, ignored) — checked against `git check-ignore` when written.
IGNORE_CASES = [
    # plain names match at any depth, files and directories alike
    (["*.log"], "a.log", False, True),
    (["*.log"], "deep/er/a.log", False, True),
    (["*.log"], "a.log.txt", False, False),
    (["data"], "data", True, True),
    (["data"], "sub/data", False, True),
    (["data"], "data/inside.txt", False, True),
    # "dir/" matches directories only
    (["build/"], "build", True, True),
    (["build/"], "build", False, False),
    (["build/"], "src/build", True, True),
    (["build/"], "build/out.o", False, True),
    # a leading or middle slash anchors to the root
    (["/top.txt"], "top.txt", False, True),
    (["/top.txt"], "sub/top.txt", False, False),
    (["doc/frotz"], "doc/frotz", False, True),
    (["doc/frotz"], "a/doc/frotz", False, False),
    (["doc/frotz/"], "doc/frotz", True, True),
    (["doc/*.md"], "doc/a.md", False, True),
    (["doc/*.md"], "doc/sub/a.md", False, False),
    # wildcards never cross "/"
    (["a?c"], "abc", False, True),
    (["a?c"], "a/c", False, False),
    (["f*o"], "fo", False, True),
    (["[abc].txt"], "b.txt", False, True),
    (["[abc].txt"], "d.txt", False, False),
    (["[!abc].txt"], "d.txt", False, True),
    (["[!abc].txt"], "a.txt", False, False),
    (["[a-c]x"], "bx", False, True),
    (["[a-c]x"], "dx", False, False),
    (["x[/]y"], "x/y", False, False),
    (["[unclosed"], "[unclosed", False, False),
    (["[unclosed", "*.txt"], "a.txt", False, True),
    # **
    (["**/logs"], "logs", True, True),
    (["**/logs"], "a/b/logs", True, True),
    (["**/logs/debug.log"], "x/logs/debug.log", False, True),
    (["logs/**"], "logs", True, False),
    (["logs/**"], "logs/a/b.txt", False, True),
    (["a/**/b"], "a/b", False, True),
    (["a/**/b"], "a/x/y/b", False, True),
    (["a/**/b"], "b", False, False),
    (["a**b"], "axxb", False, True),
    (["a**b"], "ax/xb", False, False),
    # negation: later rules win
    (["*.txt", "!keep.txt"], "keep.txt", False, False),
    (["*.txt", "!keep.txt"], "drop.txt", False, True),
    (["!keep.txt", "*.txt"], "keep.txt", False, True),
    (["*.txt", "!keep.txt", "keep.txt"], "keep.txt", False, True),
    # ... but a file cannot be re-included when a parent directory is excluded
    (["build/", "!build/keep.txt"], "build/keep.txt", False, True),
    (["build", "!build/keep.txt"], "build/keep.txt", False, True),
    (["build/*", "!build/keep.txt"], "build/keep.txt", False, False),
    (["build/*", "!build/keep.txt"], "build/other.txt", False, True),
    (["logs/**", "!logs/keep"], "logs/keep", False, False),
    (["/*", "!/src"], "src", True, False),
    (["/*", "!/src"], "src/x.py", False, False),
    (["/*", "!/src"], "other", True, True),
    (["!x", "!y"], "x", False, False),
    # comments, blank lines, escapes
    (["# comment"], "# comment", False, False),
    (["\\#hash"], "#hash", False, True),
    (["\\!bang"], "!bang", False, True),
    (["", "   ", "*.tmp"], "a.tmp", False, True),
    (["\\*"], "*", False, True),
    (["\\*"], "star", False, False),
    # trailing spaces are dropped unless escaped
    (["name   "], "name", False, True),
    (["name\\ "], "name ", False, True),
    (["name\\ "], "name", False, False),
    (["name\\  "], "name ", False, True),
    (["sp ace"], "sp ace", False, True),
    # CRLF files
    (["*.bak\r"], "x.bak", False, True),
]


@pytest.mark.parametrize("rules, path, is_dir, expected", IGNORE_CASES)
def test_cortexignore_follows_gitignore_rules(rules, path, is_dir, expected):
    assert IgnoreMatcher(rules).ignored(path, is_dir) is expected


def dotenv(tmp_path, text):
    path = tmp_path / ".env"
    path.write_text(text)
    return read_dotenv(str(path))


@pytest.mark.parametrize("text, expected", [
    ("A=1\n", {"A": "1"}),
    ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
    ("# comment\n\n   \nA=1\n  # indented comment\n", {"A": "1"}),
    ("export A=1\n", {"A": "1"}),
    ("export\tA=1\n", {"A": "1"}),
    ("A = 1\n", {"A": "1"}),
    ("  A=1  \n", {"A": "1"}),
    ("A=\n", {"A": ""}),
    ("A=b#c\n", {"A": "b#c"}),
    ("A=value # comment\n", {"A": "value"}),
    ("A='single # not a comment'\n", {"A": "single # not a comment"}),
    ("A='no \\n escapes'\n", {"A": "no \\n escapes"}),
    ('A="line\\nbreak"\n', {"A": "line\nbreak"}),
    ('A="say \\"hi\\""\n', {"A": 'say "hi"'}),
    ('A="back\\\\slash"\n', {"A": "back\\slash"}),
    ('A="x" # comment\n', {"A": "x"}),
    ('A=""\n', {"A": ""}),
    ("A=x=y\n", {"A": "x=y"}),
    ("A=1\nA=2\n", {"A": "2"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("\ufeffA=1\n", {"A": "1"}),
    ("_UNDER_9=ok", {"_UNDER_9": "ok"}),
])
def test_dotenv_values(tmp_path, text, expected):
    assert dotenv(tmp_path, text) == expected


@pytest.mark.parametrize("text, line", [
    ("NOEQUALS\n", 1),
    ("A=1\n\n# c\nnot a line\n", 4),
    ("1A=x\n", 1),
    ("A B=x\n", 1),
    ("=x\n", 1),
    ("export\n", 1),
    ('A="unterminated\n', 1),
    ("A='unterminated\n", 1),
    ('A="x" junk\n', 1),
])
def test_dotenv_invalid_line_names_the_line(tmp_path, text, line):
    with pytest.raises(StartupError) as info:
        dotenv(tmp_path, text)
    assert str(info.value) == f".env: line {line}: expected VARIABLE=value"


def build_tree(root, paths):
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


TREE = [
    "cortex.yaml", "predictor.py", "values.json", ".env", ".hidden", ".git/config",
    ".cortexignore", "a.pyc", "b.pyo", "c.pyd", "__pycache__/x.pyc", "pkg/__pycache__/y.pyc",
    "cortex-debug-x", "cortex-debug-dir/f", "pkg/__init__.py", "pkg/model.py",
    "pkg/.secret", "pkg/sub/.env", "models/big.bin", "models/notes.md",
    "data/raw/one.csv", "data/keep.csv", "logs/run.log", "logs/keep.log", "scratch.tmp",
    "deep/a/b/c/leaf.txt",
]
IGNORE_RULES = "# build junk\n*.tmp\n/data/raw/\nlogs/*\n!logs/keep.log\nmodels/*.md\n"
VISIBLE = [
    ".env", "data/keep.csv", "deep/a/b/c/leaf.txt", "logs/keep.log", "models/big.bin",
    "pkg/__init__.py", "pkg/model.py", "predictor.py", "values.json",
]


def test_visible_files_is_the_project_minus_the_excluded_set(tmp_path):
    build_tree(tmp_path, TREE)
    (tmp_path / ".cortexignore").write_text(IGNORE_RULES)
    assert visible_files(str(tmp_path), str(tmp_path / "cortex.yaml")) == VISIBLE


def test_root_dotenv_is_kept_even_when_cortexignore_matches_it(tmp_path):
    build_tree(tmp_path, ["cortex.yaml", ".env", "a.txt"])
    (tmp_path / ".cortexignore").write_text(".env\n*\n")
    assert visible_files(str(tmp_path), str(tmp_path / "cortex.yaml")) == [".env"]


def test_only_the_named_config_file_is_excluded(tmp_path):
    build_tree(tmp_path, ["apis.yaml", "cortex.yaml", "sub/apis.yaml"])
    assert visible_files(str(tmp_path), str(tmp_path / "apis.yaml")) == [
        "cortex.yaml", "sub/apis.yaml"]


def test_ignored_directory_is_not_descended(tmp_path, monkeypatch):
    build_tree(tmp_path, ["cortex.yaml", "keep.txt", "huge/a/b.txt"])
    (tmp_path / ".cortexignore").write_text("huge/\n")
    scanned = []
    real_scandir = os.scandir

    def recording_scandir(path):
        scanned.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    assert visible_files(str(tmp_path), str(tmp_path / "cortex.yaml")) == ["keep.txt"]
    assert not any(p.startswith("huge") for p in scanned)


def test_symlinks_are_entries_and_symlinked_dirs_are_not_descended(tmp_path):
    outside = tmp_path / "outside"
    build_tree(outside, ["weights.bin", "nested/x.txt"])
    root = tmp_path / "proj"
    build_tree(root, ["cortex.yaml", "predictor.py", "ignored-dir/x"])
    (root / "model.bin").symlink_to(outside / "weights.bin")
    (root / "shared").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # would recurse forever
    (root / "ignored-link").symlink_to(outside, target_is_directory=True)
    (root / ".cortexignore").write_text("ignored-*/\n")
    assert visible_files(str(root), str(root / "cortex.yaml")) == [
        "loop", "model.bin", "predictor.py", "shared"]


def test_stage_project_links_every_visible_file_to_its_source(tmp_path):
    source = tmp_path / "src"
    build_tree(source, TREE)
    (source / ".cortexignore").write_text(IGNORE_RULES)
    dest = tmp_path / "stage"
    stage_project(str(source), str(source / "cortex.yaml"), str(dest))

    staged = []
    for directory, dirs, files in os.walk(dest):
        for name in files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, dest).replace(os.sep, "/")
            staged.append(rel)
            assert os.path.islink(path)
            assert os.readlink(path) == str(source / rel)
            assert os.path.isabs(os.readlink(path))
        for name in dirs:
            assert not os.path.islink(os.path.join(directory, name))
    assert sorted(staged) == VISIBLE
    assert (dest / "pkg" / "model.py").read_text() == "pkg/model.py"
    # directories emptied by the filters are not created
    assert not (dest / "data" / "raw").exists()
    assert not (dest / "__pycache__").exists()


def test_stage_project_refuses_a_non_empty_destination(tmp_path):
    source = tmp_path / "src"
    build_tree(source, ["cortex.yaml", "predictor.py"])
    dest = tmp_path / "stage"
    build_tree(dest, ["leftover"])
    with pytest.raises(StartupError):
        stage_project(str(source), str(source / "cortex.yaml"), str(dest))


# ---------------------------------------------------------------------------------------------
# Black box: what a predictor served by `serve` actually sees.

WALK_PREDICTOR = """
import os


class PythonPredictor:
    def __init__(self, config):
        self.cwd = os.getcwd()

    def predict(self, payload):
        found = []
        for directory, dirs, files in os.walk("."):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
                found.append(os.path.normpath(os.path.join(directory, name)).replace(os.sep, "/"))
        return {"files": sorted(found), "cwd": self.cwd, "now": os.getcwd()}
"""

SERVED_TREE = {
    "values.json": '{"answer": 42}',
    ".env": "FROM_DOTENV=dotenv-value\n",
    ".hidden": "x",
    ".git/config": "x",
    "a.pyc": b"\0",
    "__pycache__/stale.cpython-311.pyc": b"\0",
    "cortex-debug-x": "x",
    "pkg/__init__.py": "",
    "pkg/deep/data.txt": "x",
    "secret/key.pem": "x",
    "notes.tmp": "x",
    ".cortexignore": "secret/\n*.tmp\n",
}


def test_served_predictor_sees_exactly_the_visible_set(simple_project, serve):
    path = simple_project(WALK_PREDICTOR, extra=SERVED_TREE)
    server = serve(path)
    response = server.post("/echo", json={})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["files"] == [".env", "pkg/__init__.py", "pkg/deep/data.txt", "predictor.py",
                     "values.json"], body
    assert body["cwd"] == body["now"]
    assert os.path.isfile(os.path.join(body["cwd"], "values.json"))


def test_project_files_open_by_relative_path_in_init(simple_project, serve):
    predictor = """
    import json


    class PythonPredictor:
        def __init__(self, config):
            with open("values.json") as f:
                self.values = json.load(f)

        def predict(self):
            return self.values
    """
    path = simple_project(predictor, extra={"values.json": '{"answer": 42}'})
    server = serve(path)
    response = server.post("/echo", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {"answer": 42}


ENV_PREDICTOR = """
import os

SEEN_AT_IMPORT = {k: os.environ.get(k) for k in ("FROM_DOTENV", "QUOTED", "FROM_YAML")}


class PythonPredictor:
    def __init__(self, config):
        self.seen = {k: os.environ.get(k) for k in ("FROM_DOTENV", "QUOTED", "FROM_YAML")}

    def predict(self):
        return {"import": SEEN_AT_IMPORT, "init": self.seen}
"""


def test_dotenv_and_predictor_env_are_set_before_import(simple_project, serve):
    yaml = """
    - name: echo
      predictor:
        type: python
        path: predictor.py
        env:
          FROM_YAML: yaml-value
    """
    dotenv_text = 'FROM_DOTENV=dotenv-value\nexport QUOTED="two words"\n'
    path = simple_project(ENV_PREDICTOR, yaml=yaml, extra={".env": dotenv_text})
    server = serve(path)
    response = server.post("/echo", json={})
    assert response.status_code == 200, response.text
    expected = {"FROM_DOTENV": "dotenv-value", "QUOTED": "two words", "FROM_YAML": "yaml-value"}
    assert response.json() == {"import": expected, "init": expected}


def test_reserved_cortex_env_variable_stops_serve(simple_project, serve):
    yaml = """
    - name: echo
      predictor:
        type: python
        path: predictor.py
        env:
          CORTEX_FOO: x
    """
    path = simple_project(ENV_PREDICTOR, yaml=yaml)
    server = serve(path, wait=False)
    assert server.proc.wait(timeout=60) != 0
    stderr = server.stderr_text()
    assert "Traceback" not in stderr and "Traceback" not in server.stdout_text()
    error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert error_lines == ['error: cortex.yaml: api "echo": predictor.env.CORTEX_FOO: '
                           "environment variables starting with CORTEX_ are reserved"], stderr


def test_invalid_dotenv_stops_serve_naming_the_line(simple_project, serve):
    path = simple_project(ENV_PREDICTOR, extra={".env": "GOOD=1\nthis is not valid\n"})
    server = serve(path, wait=False)
    assert server.proc.wait(timeout=60) != 0
    stderr = server.stderr_text()
    assert "Traceback" not in stderr
    assert ".env: line 2: expected VARIABLE=value" in stderr


def test_ignored_file_is_absent_for_the_predictor(simple_project, serve):
    predictor = """
    import os


    class PythonPredictor:
        def __init__(self, config):
            pass

        def predict(self):
            return {name: os.path.exists(name) for name in ("kept.txt", "dropped.txt")}
    """
    path = simple_project(predictor, extra={"kept.txt": "k", "dropped.txt": "d",
                                            ".cortexignore": "dropped.txt\n"})
    server = serve(path)
    response = server.post("/echo", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {"kept.txt": True, "dropped.txt": False}
