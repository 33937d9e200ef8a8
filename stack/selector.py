"""A selector over the stack's own readiness: :class:`StackSelector`.

It has the interface of :mod:`selectors` (``register``, ``modify``,
``unregister``, ``select``, ``get_key``, ``get_map``, ``close``) for stack
sockets, and waits on a condition bound to the stack lock instead of on
kernel descriptors: a socket it watches needs no ``fileno()`` (no
socketpair), and a readiness change costs no system call. Each watched
endpoint tells the selector when its readiness may have changed
(``Endpoint.changed`` calls :meth:`StackSelector.poke`, lock held); the
selector keeps those in a set of candidates and, on ``select``, asks each
candidate whether it is readable or writable now, so it is level-triggered
as ``selectors`` is. A socket is watched by at most one stack selector at a
time. ``fileno()`` and the standard ``selectors`` keep working for stack
sockets as before; the two do not mix in one selector.

``wake()`` ends a ``select`` waiting in another thread (what a loop's
``close`` needs).
"""

from __future__ import annotations

import selectors
import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Mapping

from stack.socket import Socket

if TYPE_CHECKING:
    from stack.runtime import Stack
    from stack.socket_base import Endpoint

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


def is_stack_socket(obj: object) -> bool:
    return isinstance(obj, Socket)


class _Map(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, keys: dict[Any, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[fileobj]

    def __iter__(self) -> Any:
        return iter(self._keys)


class StackSelector(selectors.BaseSelector):
    """Wait for stack sockets of ``net`` to become readable or writable.

    A key's ``fd`` is -1: the socket has no descriptor here."""

    def __init__(self, net: Stack) -> None:
        self._net = net
        self._cond = threading.Condition(net.lock)  # type: ignore[arg-type]
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self._endpoints: dict[Any, Endpoint] = {}  # socket -> its endpoint
        self._by_endpoint: dict[Endpoint, selectors.SelectorKey] = {}
        self._candidates: dict[Endpoint, None] = {}  # may be ready (an ordered set)
        self._woken = False
        self._closed = False

    @classmethod
    def for_socket(cls, sock: Socket) -> StackSelector:
        """A selector for the stack ``sock`` belongs to."""
        return cls(sock.watched_endpoint().net)

    # -- registration -----------------------------------------------------------------

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if self._closed:
            raise RuntimeError("selector is closed")
        if not isinstance(fileobj, Socket):
            raise ValueError(f"{fileobj!r} is not a stack socket")
        if not events or events & ~(READ | WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if fileobj in self._keys:
            raise KeyError(f"{fileobj!r} is already registered")
        with self._net.lock:
            ep = fileobj.watched_endpoint()
            if ep in self._by_endpoint:
                raise KeyError(f"{fileobj!r}: its endpoint is already registered")
            if ep.selector is not None:
                raise ValueError(f"{fileobj!r} is watched by another stack selector")
            key = selectors.SelectorKey(fileobj, -1, events, data)
            ep.selector = self
            self._keys[fileobj] = key
            self._endpoints[fileobj] = ep
            self._by_endpoint[ep] = key
            self._candidates[ep] = None
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = self._keys.pop(fileobj)  # KeyError when not registered, as selectors
        ep = self._endpoints.pop(fileobj)
        with self._net.lock:
            if ep.selector is self:
                ep.selector = None
            self._by_endpoint.pop(ep, None)
            self._candidates.pop(ep, None)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(READ | WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        old = self._keys[fileobj]
        key = selectors.SelectorKey(old.fileobj, old.fd, events, data)
        ep = self._endpoints[fileobj]
        with self._net.lock:
            self._keys[fileobj] = key
            self._by_endpoint[ep] = key
            self._candidates[ep] = None
        return key

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _Map(self._keys)

    def close(self) -> None:
        with self._net.lock:
            for ep in self._by_endpoint:
                if ep.selector is self:
                    ep.selector = None
            self._by_endpoint.clear()
            self._candidates.clear()
            self._closed = True
            self._cond.notify_all()
        self._keys.clear()
        self._endpoints.clear()

    # -- waiting ------------------------------------------------------------------------

    def poke(self, ep: Endpoint) -> None:
        """``ep``'s readiness may have changed (lock held)."""
        if ep in self._by_endpoint:
            self._candidates[ep] = None
            self._cond.notify()

    def batch(self) -> AbstractContextManager[Any]:
        """Hold the stack lock around a round of socket calls: the frames
        they queue go out together when it is released, and the network
        thread does not take the lock back between two calls."""
        return self._net.lock

    def wake(self) -> None:
        """End a ``select`` waiting in another thread (it returns what is ready)."""
        with self._net.lock:
            self._woken = True
            self._cond.notify_all()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._net.lock:
            while True:
                ready = self._ready()
                if ready or self._woken or self._closed:
                    self._woken = False
                    return ready
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def _ready(self) -> list[tuple[selectors.SelectorKey, int]]:
        ready = []
        gone = []
        by_endpoint = self._by_endpoint
        for ep in self._candidates:
            key = by_endpoint[ep]
            events = key.events
            closed = ep.closed
            mask = 0
            if events & READ and (closed or ep.readable()):
                mask = READ
            if events & WRITE and (closed or ep.writable()):
                mask |= WRITE
            if mask:
                ready.append((key, mask))
            else:
                gone.append(ep)
        for ep in gone:
            del self._candidates[ep]
        return ready
