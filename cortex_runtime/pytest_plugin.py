"""The pytest plugin installed with cortex_runtime (entry point pytest11 `cortex_runtime`).

    def test_iris(cortex_api):
        api = cortex_api("examples/iris")
        assert api.post(json=sample).text == "setosa"

`cortex_api(path, api=None, config=None, env=None, processes=None, threads=None, **options)`
starts the project through cortex_runtime.testing.launch and returns its Api; every API a test
started is stopped at its teardown, newest first.  A relative path is looked up from the
directory pytest was started in, then beside the test file, then in the rootdir.  The log lines
of each API are attached to a failing test's report ("cortex logs" sections).
"""
import json
import os
import sys

import pytest

from . import testing


def _resolve(path, request):
    path = os.fspath(path)
    if os.path.isabs(path):
        return path
    bases = [testing.original_cwd(), str(request.path.parent), str(request.config.rootpath)]
    for base in bases:
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    return os.path.join(bases[0], path)  # not found: the start-up error names this path


def _log_text(lines):
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.fixture
def cortex_api(request):
    """cortex_api(path, api=None, config=None, env=None, processes=None, threads=None) -> Api:
    starts a Cortex project's API in this process on a free port, stopped after the test."""
    started = []
    request.node._cortex_apis = started

    def start(path, api=None, config=None, env=None, processes=None, threads=None, **options):
        __tracebackhide__ = True
        try:
            handle = testing.launch(_resolve(path, request), api, config, env, processes,
                                    threads, **options)
        except testing.StartupFailed as e:
            # captured by pytest and shown with the failure: the traceback of a failing __init__
            sys.stdout.write(_log_text(e.logs))
            raise
        started.append(handle)
        return handle

    yield start
    errors = []
    for handle in reversed(started):
        try:
            handle.stop()
        except Exception as e:  # stop the others anyway
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    if call.when != "call" or call.excinfo is None:
        return
    for handle in getattr(item, "_cortex_apis", ()):
        try:
            lines = handle.logs()
        except Exception:  # a report must never fail because of the logs
            continue
        what = handle.name or "+".join(handle.names)
        item.add_report_section("call", f"cortex {what} logs", _log_text(lines))
