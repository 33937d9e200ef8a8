"""A passive OPEN (RFC 9293 3.10.1): a listener with its half-open
connections and accept queue, both bounded."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Callable

from stack.tcp.emit import conn_name
from stack.tcp.states import CLOSED, Endpoint

if TYPE_CHECKING:
    from stack.tcp.conn import TcpConnection
    from stack.tcp.layer import TcpLayer

Key = tuple[int, int, int, int]


class Listener(Endpoint):
    def __init__(self, layer: TcpLayer, local: tuple[int, int], backlog: int) -> None:
        super().__init__(layer.trace)
        self.layer = layer
        self.local = local
        self.backlog = max(1, backlog)
        self.name = conn_name(local[0], local[1], 0, 0)
        self.on_change: Callable[[], None] | None = None
        self.syn_overflow_at: float | None = None  # the last SYN cookie sent
        self.rcvbuf: int | None = None  # SO_RCVBUF for new connections (window and wscale)
        self._queue: deque[TcpConnection] = deque()
        self._half: dict[Key, TcpConnection] = {}

    @property
    def readable(self) -> bool:
        return bool(self._queue) or self.state == CLOSED

    def queue_full(self) -> bool:
        return len(self._queue) >= self.backlog

    def queued(self) -> int:
        """Established connections waiting for accept()."""
        return len(self._queue)

    def half_open(self) -> int:
        """Connections in SYN_RECEIVED."""
        return len(self._half)

    def accept(self) -> TcpConnection | None:
        """The oldest established connection, or None."""
        if self._queue:
            conn = self._queue.popleft()
            conn.accepted()
            return conn
        return None

    # ---- what the layer and connections tell it ------------------------------------------

    def add_half_open(self, key: Key, conn: TcpConnection) -> None:
        self._half[key] = conn

    def forget(self, key: Key) -> None:
        """A half-open connection closed."""
        self._half.pop(key, None)

    def established(self, conn: TcpConnection) -> None:
        self._half.pop((conn.local[0], conn.local[1], conn.remote[0], conn.remote[1]), None)
        self._queue.append(conn)
        cb = self.on_change
        if cb is not None:
            cb()

    def close(self, now: float) -> None:
        """Stop listening: reset queued connections, forget half-open ones."""
        if self.state == CLOSED:
            return
        self.set_state(CLOSED, "user close", now)

    def entered(self, old: str, new: str, now: float) -> None:
        if new != CLOSED:
            return
        self.layer.release_listener(self)
        half = list(self._half.values())
        self._half.clear()
        for conn in half:
            conn.drop("listener closed", now, orphan=True)
        while self._queue:
            conn = self._queue.popleft()
            conn.accepted()
            conn.abort(now)
        cb = self.on_change
        if cb is not None:
            cb()

    def __repr__(self) -> str:
        return f"<Listener {self.name} {self.state} queued={len(self._queue)}>"

