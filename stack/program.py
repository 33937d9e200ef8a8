"""``stack run``'s program: ``python PYTHON-ARGS...`` run in this process.

:func:`parse` reads the arguments as ``python`` does for the three ways of
naming a program (``-m MODULE``, ``-c CODE``, a script path) and checks that
the program exists before any stack is started; :func:`run` runs it with
``sys.argv`` and ``sys.path[0]`` set as ``python`` sets them and turns its end
into an exit status as ``python`` does: ``SystemExit``'s code, 1 and the
traceback (through ``sys.excepthook``) for an exception, 130 for an uncaught
``KeyboardInterrupt`` (what a shell reports for ``python`` killed by SIGINT).

Signals: SIGINT keeps Python's own handler (``KeyboardInterrupt`` in the
program). SIGTERM, which would end ``python`` on the spot, raises
``SystemExit(143)`` in the program instead, so its ``finally`` blocks run and
the stack after it shuts down cleanly. :func:`signals_blocked` keeps both
away from the threads the stack starts (they inherit the mask), so the
kernel hands them to the main thread, the only one that can act on them,
and a program blocked in ``accept()`` wakes at once.

:func:`shut_down` is what follows the program: wait (bounded) until every
byte it sent has been acknowledged, then close the stack (FIN, then RST for
what is still open after the grace period).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from stack import dropin

if TYPE_CHECKING:
    from stack.runtime import Stack

EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM
#: How long the stack waits after the program for its sent bytes to be
#: acknowledged (a peer that stopped reading does not hold it forever).
DRAIN_LIMIT = 10.0
#: Then: how long connections get to finish their close before a RST.
CLOSE_GRACE = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Frames of these files are ours, not the program's: left out of its traceback.
_OWN_FILES = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}


@dataclass(frozen=True)
class Program:
    """What to run: ``kind`` is ``module``, ``code`` or ``script``; ``target`` the
    module name, the code or the path; ``args`` the program's arguments."""

    kind: str
    target: str
    args: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        """``sys.argv`` as python sets it (``-m`` replaces ``argv[0]`` with the
        module's file when it runs it)."""
        first = {"module": "-m", "code": "-c"}.get(self.kind, self.target)
        return [first, *self.args]


def parse(args: list[str]) -> Program:
    """``PYTHON-ARGS`` as a :class:`Program`; ValueError says what is wrong."""
    if not args:
        raise ValueError("no program: give it after '--' (-m MODULE, -c CODE or a script "
                         "path, then its arguments)")
    first, rest = args[0], args[1:]
    if first in ("-m", "-c"):
        if not rest:
            raise ValueError(f"{first} needs an argument")
        kind = "module" if first == "-m" else "code"
        program = Program(kind, rest[0], tuple(rest[1:]))
    elif first.startswith("-") and len(first) > 1:
        raise ValueError(f"{first}: only -m MODULE, -c CODE or a script path are supported")
    else:
        program = Program("script", first, tuple(rest))
    _check_exists(program)
    return program


def _check_exists(program: Program) -> None:
    if program.kind == "script" and not os.path.exists(program.target):
        raise ValueError(f"can't open file {program.target!r}: no such file")
    if program.kind == "module":
        try:
            found = importlib.util.find_spec(program.target)
        except (ImportError, ValueError) as e:
            raise ValueError(f"-m {program.target}: {e}") from None
        if found is None:
            raise ValueError(f"-m {program.target}: no module named {program.target!r}")


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread, so threads started in the
    block never receive them."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_SIGTERM)


def run(program: Program, net: "Stack") -> int:
    """Run ``program`` with the drop-in patched to ``net``; its exit status."""
    old_argv = sys.argv[:]
    old_term = signal.signal(signal.SIGTERM, _terminated)
    sys.argv = program.argv
    path0 = _path0(program)
    sys.path.insert(0, path0)
    started = set(threading.enumerate())
    dropin.patch(net)
    try:
        _execute(program)
        _join_threads(started)  # as python waits for non-daemon threads at exit
        return 0
    except SystemExit as e:
        return _exit_status(e.code)
    except KeyboardInterrupt as e:
        _report(e)
        return EXIT_SIGINT
    except BaseException as e:
        _report(e)
        return 1
    finally:
        while dropin.patched_to() is net:  # also if the program patched more, or unpatched
            dropin.unpatch()
        signal.signal(signal.SIGTERM, old_term)
        sys.argv = old_argv
        with contextlib.suppress(ValueError):
            sys.path.remove(path0)


def _path0(program: Program) -> str:
    """What python puts first on ``sys.path``: the script's directory, or the
    working directory (``''`` for ``-c``)."""
    if program.kind == "script":
        return os.path.dirname(os.path.abspath(program.target))
    return os.getcwd() if program.kind == "module" else ""


def _execute(program: Program) -> None:
    if program.kind == "module":
        runpy.run_module(program.target, run_name="__main__", alter_sys=True)
    elif program.kind == "script":
        runpy.run_path(program.target, run_name="__main__")
    else:
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        saved = sys.modules.get("__main__")
        sys.modules["__main__"] = main
        try:
            exec(compile(program.target, "<string>", "exec"), main.__dict__)
        finally:
            if saved is not None:
                sys.modules["__main__"] = saved


def _join_threads(before: set[threading.Thread]) -> None:
    for t in threading.enumerate():
        if t not in before and not t.daemon and t is not threading.current_thread():
            t.join()


def _exit_status(code: object) -> int:
    """``SystemExit.code`` as python's exit status: None 0, an int itself, else
    the value printed to stderr and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr, flush=True)
    return 1


def _report(e: BaseException) -> None:
    """The traceback python prints for an uncaught exception, from the
    program's own first frame."""
    tb = e.__traceback__
    while tb is not None and _own(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    e = e.with_traceback(tb)  # the hook prints the exception's own traceback
    try:
        sys.excepthook(type(e), e, tb)
    except Exception:  # a broken hook: python then prints it the plain way
        traceback.print_exception(type(e), e, tb)
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()


def _own(filename: str) -> bool:
    return filename in _OWN_FILES or os.path.abspath(filename) in _OWN_FILES


def unsent(net: "Stack") -> int:
    """Bytes the stack's TCP connections hold that the peers have not acknowledged."""
    return sum(c["send_q"] for c in net.connections()
               if c["proto"] == "tcp" and c["state"] != "LISTEN")


def shut_down(net: "Stack", drain: float = DRAIN_LIMIT, grace: float = CLOSE_GRACE) -> None:
    """Close ``net`` once what the program sent is delivered (at most ``drain``
    seconds); SIGINT or SIGTERM meanwhile stops the wait."""
    hurry = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: hurry.set()) for sig in STOP_SIGNALS}
    try:
        deadline = time.monotonic() + drain
        while unsent(net) and time.monotonic() < deadline and not hurry.is_set():
            time.sleep(0.01)
        net.close(grace=0.0 if hurry.is_set() else grace)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
