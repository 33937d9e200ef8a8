"""The eleven RFC 9293 connection states, named as the trace writes them,
and the one function that changes an endpoint's state."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, TypeVar

from stack.trace import Trace

F = TypeVar("F", bound=Callable[..., Any])

CLOSED = "CLOSED"
LISTEN = "LISTEN"
SYN_SENT = "SYN_SENT"
SYN_RECEIVED = "SYN_RECEIVED"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT_1 = "FIN_WAIT_1"
FIN_WAIT_2 = "FIN_WAIT_2"
CLOSE_WAIT = "CLOSE_WAIT"
CLOSING = "CLOSING"
LAST_ACK = "LAST_ACK"
TIME_WAIT = "TIME_WAIT"

ALL = (CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2,
       CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT)

# States after the handshake in which the peer's sequence numbers are known.
SYNCHRONIZED = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING,
                          LAST_ACK, TIME_WAIT})
# States in which the peer may still send us data.
RECEIVING = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
# States in which keepalive probes go (the peer may still be owed or owe data).
KEEPALIVE_STATES = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2})
# States in which we may still send data or a FIN (once the handshake is done).
SENDING = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})


class Endpoint:
    """What a connection and a listener share: a name, a state, and
    :meth:`set_state`, the one function that changes the state.

    ``set_state`` writes the trace event; the subclass's :meth:`entered`
    does the rest (counters, timers, releasing the endpoint).
    """

    __slots__ = ("_depth", "state", "trace")

    name: str = ""

    def __init__(self, trace: Trace, state: str = CLOSED) -> None:
        self.trace = trace
        self.state = state
        self._depth = 0  # entry points running (see entry)

    def set_state(self, new: str, cause: str, now: float) -> None:
        old = self.state
        self.state = new
        trace = self.trace
        if trace.on:
            trace.event("tcp", "state", conn=self.name, **{"from": old, "to": new}, cause=cause)
        self.entered(old, new, now)

    def entered(self, old: str, new: str, now: float) -> None:
        """Called by :meth:`set_state` after the change."""

    def _finish(self) -> None:
        """Called when the outermost :func:`entry` returns."""


def os_error(err: int) -> OSError:
    """``OSError(errno)``; Python picks the subclass (ConnectionResetError, ...)."""
    return OSError(err, os.strerror(err))


def entry(method: F) -> F:
    """An entry point into a connection: when the outermost one returns, the
    layer's timer is re-armed and the user is told about any change.

    The two-argument entries (a segment arriving, a send: once per segment)
    get a wrapper without ``*args`` packing."""
    code = method.__code__
    if code.co_argcount == 3 and not method.__defaults__ and not code.co_kwonlyargcount:

        def run2(self: Endpoint, a: Any, b: Any) -> Any:
            self._depth += 1
            try:
                return method(self, a, b)
            finally:
                self._depth -= 1
                if not self._depth:
                    self._finish()

        return functools.wraps(method)(run2)  # type: ignore[return-value]

    @functools.wraps(method)
    def run(self: Endpoint, *args: Any, **kwargs: Any) -> Any:
        self._depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._depth -= 1
            if not self._depth:
                self._finish()

    return run  # type: ignore[return-value]
