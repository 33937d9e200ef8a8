"""The event loop the TCP services run on: one thread, one selector, every
client of a service as a :class:`Channel` driven by readiness.

It is written against the socket API alone (non-blocking sockets, ``accept``,
``recv_into``, ``send``, ``shutdown``) and a selector with the interface of
:mod:`selectors`, so the same loop serves on the stack's sockets and on the
kernel's (:class:`stack.services.KernelNet`). On the stack it uses the
stack's own :class:`stack.selector.StackSelector` (no kernel descriptor per
socket); on the kernel, ``selectors.DefaultSelector``.

A service's behaviour is a *protocol* object per client, made by a factory
from the channel: the loop calls ``received(data)`` when bytes arrive (the
view is only valid during the call), ``eof()`` when the peer closed its side
and ``drained()`` once everything written so far has gone out. The protocol
answers through the channel: ``write``, ``stream`` (an iterator of chunks
pulled as the socket takes them, so large bodies are never held whole),
``pause``/``resume`` reading, and ``close``/``finish``/``abort``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterator, Protocol

log = logging.getLogger(__name__)

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
# How often idle clients and lingering closes are looked at (seconds).
SWEEP = 0.2
# One recv per readiness event reads at most this much (into one buffer
# shared by all clients); it also bounds what a protocol may have to keep
# from one read (HTTP: pipelined bytes while it answers).
RECV_SIZE = 65536
# Reading stops while more than this much written output waits to be sent.
HIGH_WATER = 262144
# One writable event sends at most this much, so one fast client cannot
# starve the others.
SEND_BURST = 4 * 1024 * 1024
# Accepted connections taken per readable event of the listener.
ACCEPT_BURST = 64
# After a graceful close (``finish``), how long what the peer still sends is
# read and dropped so that unread bytes do not turn the close into a reset.
LINGER = 2.0
# Accept failing for want of a resource (descriptors, memory) is retried this
# much later; meanwhile the listener is not watched (it would stay readable).
ACCEPT_RETRY = 0.2
_OUT_OF = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

# Channel states.
OPEN, CLOSING, FINISHING, LINGERING, CLOSED = range(5)


class Handler(Protocol):
    """What the loop calls on a client's protocol object."""

    def received(self, data: memoryview) -> None: ...
    def eof(self) -> None: ...
    def drained(self) -> None: ...


class Selector(Protocol):
    """The part of ``selectors.BaseSelector`` the loop uses, plus ``wake``."""

    def register(self, fileobj: Any, events: int, data: Any = None) -> Any: ...
    def modify(self, fileobj: Any, events: int, data: Any = None) -> Any: ...
    def unregister(self, fileobj: Any) -> Any: ...
    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]: ...
    def wake(self) -> None: ...
    def batch(self) -> AbstractContextManager[Any]: ...
    def close(self) -> None: ...


class KernelSelector(selectors.DefaultSelector):
    """``selectors.DefaultSelector`` with ``wake()``: a socketpair whose
    readable end is registered, so another thread can end a ``select``."""

    def __init__(self) -> None:
        super().__init__()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().register(self._wake_r, READ, None)

    def batch(self) -> AbstractContextManager[Any]:
        """Around handling one round of events: nothing to hold here."""
        return contextlib.nullcontext()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"w")
        except OSError:  # full (a wake is pending anyway) or closed
            pass

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready = []
        for key, mask in super().select(timeout):
            if key.data is None:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
                continue
            ready.append((key, mask))
        return ready

    def close(self) -> None:
        super().close()
        self._wake_r.close()
        self._wake_w.close()


class Channel:
    """One client connection on the loop: its output queue (bytes written,
    then chunks streamed), its reading state and how it closes."""

    __slots__ = ("loop", "sock", "peer", "protocol", "counted", "last", "deadline",
                 "_queue", "_queued", "_chunks", "_chunk", "_cleanup", "_paused", "_eof",
                 "_state", "_drain_wanted", "_events")

    def __init__(self, loop: Loop, sock: Any, peer: Any, counted: bool) -> None:
        self.loop = loop
        self.sock = sock
        self.peer = peer
        self.protocol: Handler | None = None
        self.counted = counted  # counts towards the service's max_clients
        self.last = loop.now  # last progress: bytes in or out
        self.deadline = 0.0  # end of lingering
        self._queue: list[bytes] = []  # short: a response is one or two writes
        self._queued = 0
        self._chunks: Iterator[Any] | None = None
        self._chunk: memoryview | None = None
        self._cleanup: Callable[[], None] | None = None
        self._paused = False
        self._eof = False
        self._state = OPEN
        self._drain_wanted = False
        self._events = 0  # registered with the selector (0: not registered)

    # -- what protocols call --------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (copied unless bytes) to be sent in order."""
        if self._state != OPEN or not data:
            return
        chunk = data if isinstance(data, bytes) else bytes(data)
        self._queue.append(chunk)
        self._queued += len(chunk)
        self._drain_wanted = True

    def stream(self, chunks: Iterator[Any], cleanup: Callable[[], None] | None = None) -> None:
        """Send what ``chunks`` yields, after what is queued; each chunk is
        pulled once the one before is sent (so it may reuse its buffer).
        ``cleanup`` runs when the stream ends or the channel closes."""
        if self._state != OPEN:
            if cleanup is not None:
                cleanup()
            return
        assert self._chunks is None, "one stream at a time"
        self._chunks = chunks
        self._cleanup = cleanup
        self._drain_wanted = True

    @property
    def pending(self) -> bool:
        """Output waits to be sent."""
        return bool(self._queue) or self._chunk is not None or self._chunks is not None

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def close(self) -> None:
        """Close once the output is sent."""
        if self._state == OPEN:
            self._state = CLOSING

    def finish(self) -> None:
        """Once the output is sent: FIN, then read and drop what the peer
        still sends until it closes or :data:`LINGER` seconds pass."""
        if self._state == OPEN:
            self._state = FINISHING

    def abort(self) -> None:
        """Close now, dropping what is not sent."""
        if self._state == CLOSED:
            return
        self._state = CLOSED
        self._queue.clear()
        self._chunk = self._chunks = None
        self._end_stream()
        self.loop.forget(self)

    # -- what the loop calls ----------------------------------------------------------

    def handle(self, mask: int) -> None:
        try:
            if mask & WRITE:
                self._flush()
            if mask & READ and self._reading():
                self._read()
            self.settle()
        except OSError as exc:
            log.debug("%s: client %s: %s", self.loop.name, self.peer, exc)
            self.abort()
        except Exception:
            log.exception("%s: client %s: handler failed", self.loop.name, self.peer)
            self.abort()

    def settle(self) -> None:
        """Send what can be sent, tell the protocol when all is out, move on
        through the closing states, and register the interest that remains."""
        while self._state != CLOSED:
            self._flush()
            if self.pending or not self._drain_wanted or self.protocol is None:
                break
            self._drain_wanted = False
            if self._state == OPEN:
                self.protocol.drained()
        if self._state == CLOSED:
            return
        if not self.pending:
            if self._state == CLOSING:
                self.abort()
                return
            if self._state == FINISHING:
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self.abort()
                    return
                self._state = LINGERING
                self.deadline = self.loop.now + LINGER
        events = READ if self._reading() else 0
        if self.pending:
            events |= WRITE
        self.loop.interest(self, events)

    def stale(self, now: float, idle: float) -> bool:
        if self._state == LINGERING:
            return now >= self.deadline
        return now - self.last >= idle

    def registered(self) -> int:
        return self._events

    def set_registered(self, events: int) -> None:
        self._events = events

    # -- inside ------------------------------------------------------------------------

    def _reading(self) -> bool:
        if self._state == LINGERING:
            return True
        return (self._state == OPEN and not self._paused and not self._eof
                and self._queued < HIGH_WATER)

    def _read(self) -> None:
        view = self.loop.scratch
        try:
            n = self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        if n == 0:
            if self._state == LINGERING:
                self.abort()
                return
            self._eof = True
            if self.protocol is not None:
                self.protocol.eof()
            return
        self.last = self.loop.now
        if self._state == OPEN and self.protocol is not None:
            self.protocol.received(view[:n])

    def _flush(self) -> None:
        budget = SEND_BURST
        sock = self.sock
        while budget > 0 and self._state != CLOSED:
            if self._queue:
                head = self._queue[0]
                try:
                    n = sock.send(head)
                except (BlockingIOError, InterruptedError):
                    return
                self.last = self.loop.now
                self._queued -= n
                budget -= n
                if n < len(head):
                    self._queue[0] = head[n:]
                    return
                del self._queue[0]
                continue
            if self._chunk is None:
                if self._chunks is None:
                    return
                piece = next(self._chunks, None)
                if piece is None:
                    self._chunks = None
                    self._end_stream()
                    return
                self._chunk = memoryview(piece).cast("B")
                if not self._chunk:
                    self._chunk = None
                    continue
            chunk = self._chunk
            try:
                n = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                return
            self.last = self.loop.now
            budget -= n
            if n < len(chunk):
                self._chunk = chunk[n:]
                return
            self._chunk = None

    def _end_stream(self) -> None:
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            cleanup()


class Loop:
    """One thread serving a listening socket: accepts, admits up to
    ``max_clients`` (``reject`` decides what happens to the others) and
    drives every client's :class:`Channel`."""

    def __init__(
        self,
        name: str,
        listener: Any,
        selector: Selector,
        factory: Callable[[Channel], Handler],
        idle_timeout: float,
        max_clients: int,
        reject: Callable[[Channel], Handler] | None = None,
        max_rejecting: int = 64,
        setup: Callable[[Any], None] | None = None,
    ) -> None:
        self.name = name
        self.now = time.monotonic()
        self.scratch = memoryview(bytearray(RECV_SIZE))
        self.clients = 0  # counted channels open now (written by the loop thread only)
        self._listener = listener
        self._selector = selector
        self._factory = factory
        self._idle = idle_timeout
        self._max = max_clients
        self._reject = reject
        self._max_rejecting = max_rejecting
        self._rejecting = 0
        self._setup = setup
        self._channels: dict[Channel, None] = {}
        self._stop = threading.Event()
        self._accept_paused_until: float | None = None  # (listener unwatched until then)
        listener.setblocking(False)
        selector.register(listener, READ, self)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._selector.wake()
        if self.thread is not threading.current_thread() and self.thread.ident is not None:
            self.thread.join(timeout)

    # -- called by channels -------------------------------------------------------------

    def interest(self, ch: Channel, events: int) -> None:
        now = ch.registered()
        if events == now:
            return
        if now == 0:
            self._selector.register(ch.sock, events, ch)
        elif events == 0:
            self._selector.unregister(ch.sock)
        else:
            self._selector.modify(ch.sock, events, ch)
        ch.set_registered(events)

    def forget(self, ch: Channel) -> None:
        """A channel closed: drop it and close its socket."""
        if ch.registered():
            try:
                self._selector.unregister(ch.sock)
            except (KeyError, ValueError, OSError):
                pass
            ch.set_registered(0)
        if self._channels.pop(ch, 0) is None:
            if ch.counted:
                self.clients -= 1
            else:
                self._rejecting -= 1
        try:
            ch.sock.close()
        except OSError:
            pass

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP
        try:
            while not self._stop.is_set():
                timeout = max(0.0, next_sweep - time.monotonic())
                events = self._selector.select(timeout)
                self.now = time.monotonic()
                with self._selector.batch():
                    for key, mask in events:
                        target = key.data
                        if target is self:
                            self._accept()
                        else:
                            target.handle(mask)
                if self.now >= next_sweep:
                    self._sweep()
                    next_sweep = self.now + SWEEP
        except Exception:
            log.exception("%s: event loop failed", self.name)
        finally:
            for ch in list(self._channels):
                ch.abort()
            if self._accept_paused_until is None:
                try:
                    self._selector.unregister(self._listener)
                except (KeyError, ValueError, OSError):
                    pass
            self._listener.close()
            self._selector.close()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF:  # (a client gone before accept: the next)
                    log.debug("%s: accept: %s", self.name, exc)
                    continue
                log.warning("%s: accept failed, retrying in %g s: %s", self.name,
                            ACCEPT_RETRY, exc)
                self._selector.unregister(self._listener)
                self._accept_paused_until = self.now + ACCEPT_RETRY
                return
            self._admit(sock, peer)

    def _admit(self, sock: Any, peer: Any) -> None:
        full = self.clients >= self._max
        if full and (self._reject is None or self._rejecting >= self._max_rejecting):
            log.debug("%s: %d clients already, closing %s", self.name, self._max, peer)
            sock.close()
            return
        try:
            sock.setblocking(False)
            if self._setup is not None:
                self._setup(sock)
        except OSError as exc:
            log.debug("%s: client %s: %s", self.name, peer, exc)
            sock.close()
            return
        ch = Channel(self, sock, peer, counted=not full)
        self._channels[ch] = None
        if full:
            self._rejecting += 1
        else:
            self.clients += 1
        try:
            factory = self._reject if full else self._factory
            assert factory is not None
            ch.protocol = factory(ch)
            ch.settle()
        except OSError as exc:
            log.debug("%s: client %s: %s", self.name, peer, exc)
            ch.abort()
        except Exception:
            log.exception("%s: client %s: handler failed", self.name, peer)
            ch.abort()

    def _sweep(self) -> None:
        now = self.now
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, READ, self)
        idle = self._idle
        for ch in [c for c in self._channels if c.stale(now, idle)]:
            log.debug("%s: client %s idle, closing", self.name, ch.peer)
            ch.abort()
