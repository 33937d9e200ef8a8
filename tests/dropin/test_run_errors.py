"""``stack run``'s mistakes, caught before any TAP is opened: one
``stack: error:`` line, exit 2 (no root needed)."""

from __future__ import annotations

import re

import pytest

from tests.helpers.cli import assert_one_error, run_stack


@pytest.mark.parametrize("args, names", [
    ([], ["PYTHON-ARGS", "no program", "'--'"]),
    (["--"], ["PYTHON-ARGS", "no program"]),
    (["--", "-m"], ["PYTHON-ARGS", "-m needs an argument"]),
    (["--", "-c"], ["PYTHON-ARGS", "-c needs an argument"]),
    (["--", "-m", "no_such_module_here"], ["-m no_such_module_here", "no module named"]),
    (["--", "/nonexistent/fetch.py"], ["/nonexistent/fetch.py", "no such file"]),
    (["--", "-u", "x.py"], ["-u", "only -m MODULE, -c CODE or a script path"]),
    (["--mtu", "5", "--", "-c", "pass"], ["--mtu"]),
    (["--address", "192.0.2.2", "--", "-c", "pass"], ["--address", "no prefix"]),
    (["--host-address", "198.51.100.1/24", "--", "-c", "pass"], ["--host-address", "subnet"]),
    (["--serve", "echo:7", "--serve", "echo:7", "--", "-c", "pass"], ["--serve echo:7"]),
])
def test_a_mistake_is_one_error_line(args, names):
    assert_one_error(run_stack("run", "--tap", "tnever0", *args), 2, *names)


def test_help_lists_the_stack_up_flags_and_the_program():
    r = run_stack("run", "--help")
    assert r.returncode == 0
    for flag in ("--tap", "--address", "--host-address", "--serve", "--trace", "--impair",
                 "--control", "PYTHON-ARGS", "stack run"):
        assert flag in r.stdout, flag


def test_run_takes_every_stack_up_flag():
    flags = re.compile(r"^  (?:-\w, )?(--[a-z][a-z-]+)", re.M)  # the options list
    up = set(flags.findall(run_stack("up", "--help").stdout))
    run = set(flags.findall(run_stack("run", "--help").stdout))
    assert len(up) > 10 and up <= run, up - run
