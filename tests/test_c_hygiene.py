"""C hygiene rules of STYLE.md as plain scans of csrc/: they fail the moment a rule is broken."""
import re
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"
C_FILES = sorted(CSRC.glob("*.c"))
PURE_C = ["server.c", "request.c", "buf.c", "content_type.c", "log.c", "pow10.c", "float_format.c",
          "float_parse.c"]


def source(name):
    return (CSRC / name).read_text()


def test_every_c_file_has_its_header():
    missing = [c.name for c in C_FILES if not c.with_suffix(".h").exists() and c.name != "module.c"]
    assert missing == []


@pytest.mark.parametrize("name", PURE_C)
def test_pure_c_units_do_not_include_python(name):
    assert "Python.h" not in source(name)
    assert '#include "module.h"' not in source(name)


def test_only_server_c_includes_microhttpd():
    including = [c.name for c in C_FILES if "#include <microhttpd.h>" in c.read_text()]
    assert including == ["server.c"]
    headers = [h.name for h in CSRC.glob("*.h") if "#include <microhttpd.h>" in h.read_text()]
    assert headers == []


def test_only_bridge_c_releases_the_gil():
    releasing = [c.name for c in C_FILES
                 if re.search(r"Py_BEGIN_ALLOW_THREADS|PyEval_SaveThread|PyGILState_Ensure", c.read_text())]
    assert releasing == ["bridge.c"]


def test_no_module_level_python_object_globals():
    offenders = [c.name for c in C_FILES
                 if re.search(r"^static\s+PyObject\s*\*\s*\w+\s*[;=]", c.read_text(), re.M)]
    assert offenders == []


def test_no_unchecked_exit_calls_in_c():
    # Python owns the process lifecycle: C never exits the interpreter under it
    offenders = [c.name for c in C_FILES if re.search(r"\b(exit|abort|_exit)\s*\(", c.read_text())]
    assert offenders == []


ALLOCATION_CALL = re.compile(
    r"(?<![\w.>])(malloc|calloc|realloc|strdup|strndup|free|PyMem_Malloc|PyMem_Calloc|PyMem_Realloc|PyMem_Free)\s*\(")
# deliberately uncounted: memory that was never ours to count (PyOS_double_to_string's
# result) and bodies already handed off to libmicrohttpd, freed when it refuses them
UNCOUNTED = {("json_encode.c", "PyMem_Free(slow);"), ("server.c", "free((void *)body);"),
             ("server.c", "free(body);"), ("tensor_convert.c", "PyMem_Free(text);")}


def test_every_allocation_goes_through_the_counting_macros():
    # csrc/alloc_count.h: in a CORTEX_DEBUG_ALLOC=1 build an allocation made or freed with a
    # plain call would throw the live counts off (tests/test_alloc_counts.py)
    offenders = []
    for c in C_FILES:
        if c.name == "alloc_count.c":
            continue
        for number, line in enumerate(c.read_text().splitlines(), 1):
            if ALLOCATION_CALL.search(line) and (c.name, line.strip()) not in UNCOUNTED:
                offenders.append(f"{c.name}:{number}: {line.strip()}")
    assert offenders == []
