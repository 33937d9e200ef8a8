"""The TCP layer: validation, demultiplexing, listeners, ISNs, ephemeral
ports, RSTs for closed ports, ICMP errors and one timer heap for every
connection.

Where an incoming TCP segment is handled: :meth:`TcpLayer.receive` checks it
and hands it to a connection (``TcpConnection.segment_arrives``), to a
listener (``_listen_input``) or answers for a closed port (``_reset_closed``).
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import itertools
import random as _random
import struct
from collections import Counter, deque

from stack.tcp.config import TcpConfig
from stack.tcp.conn import TcpConnection, conn_name, os_error, rcv_cause
from stack.tcp.seq import MASK, seq_gt
from stack.tcp.states import CLOSED, LISTEN, TIME_WAIT
from stack.tcp.syncookies import SynCookies
from stack.wire import WireError
from stack.wire.tcp import ACK, FIN, RST, SYN, build_tcp, flags_str, parse_tcp

PROTO_TCP = 6
_ISN_TUPLE = struct.Struct("!IHIH")
_PORT_TUPLE = struct.Struct("!IIH")
_ICMP_QUOTE = struct.Struct("!HHI")


class Listener:
    """A passive OPEN: half-open connections and an accept queue, both bounded."""

    def __init__(self, layer: TcpLayer, local: tuple[int, int], backlog: int) -> None:
        self._layer = layer
        self.local = local
        self.backlog = max(1, backlog)
        self.name = conn_name(local[0], local[1], 0, 0)
        self.state = LISTEN
        self.on_change = None
        self._queue: deque[TcpConnection] = deque()
        self._half: dict[tuple, TcpConnection] = {}
        self.syn_overflow_at: float | None = None  # last SYN cookie sent (syncookies.py)
        self.rcvbuf: int | None = None  # SO_RCVBUF for new connections (window and wscale)

    @property
    def readable(self) -> bool:
        return bool(self._queue) or self.state == CLOSED

    def queue_full(self) -> bool:
        return len(self._queue) >= self.backlog

    def accept(self) -> TcpConnection | None:
        """The oldest established connection, or None."""
        if self._queue:
            conn = self._queue.popleft()
            conn._listener = None
            return conn
        return None

    def _established(self, conn: TcpConnection) -> None:
        self._half.pop((conn.local[0], conn.local[1], conn.remote[0], conn.remote[1]), None)
        self._queue.append(conn)
        cb = self.on_change
        if cb is not None:
            cb()

    def close(self, now: float) -> None:
        """Stop listening: reset queued connections, forget half-open ones."""
        if self.state == CLOSED:
            return
        layer = self._layer
        if layer.trace.on:
            layer.trace.event("tcp", "state", conn=self.name, **{"from": LISTEN, "to": CLOSED},
                              cause="user close")
        self.state = CLOSED
        if layer._listeners.get(self.local) is self:
            del layer._listeners[self.local]
        for conn in list(self._half.values()):
            conn._user_closed = True
            conn._set_state(CLOSED, "listener closed", now)
        self._half.clear()
        while self._queue:
            conn = self._queue.popleft()
            conn._listener = None
            conn.abort(now)
        cb = self.on_change
        if cb is not None:
            cb()

    def __repr__(self) -> str:
        return f"<Listener {self.name} {self.state} queued={len(self._queue)}>"


class TcpLayer:
    """All TCP endpoints of one stack. See ``docs/ARCHITECTURE.md``."""

    def __init__(self, ip_send, trace, config: TcpConfig | None = None,
                 rng: _random.Random | None = None, *, random: _random.Random | None = None):
        self.ip_send = ip_send
        self.trace = trace
        self.config = config if config is not None else TcpConfig()
        rng = rng or random or _random.Random()
        self._rng = rng
        self._secret = rng.getrandbits(128).to_bytes(16, "big")
        self._conns: dict[tuple[int, int, int, int], TcpConnection] = {}
        self._listeners: dict[tuple[int, int], Listener] = {}
        self._bound: Counter[tuple[int, int]] = Counter()
        self._heap: list = []
        self._tie = itertools.count()
        self._stale = 0
        self._next_ephemeral = rng.randrange(1 << 16)
        self._cookies = SynCookies(self._secret)
        # The largest TCP segment (header and data) IP may be handed when the
        # link cuts segments itself (TSO); None: one MSS. Set by the runtime.
        self.segment_max: int | None = None

    # ---- input ------------------------------------------------------------------

    def receive(self, src: int, dst: int, segment, now: float) -> None:
        """One TCP segment (the IP payload) from ``src`` to ``dst``."""
        trace = self.trace
        trace.count("tcp", "in_segs")
        try:
            seg = parse_tcp(src, dst, segment)
        except WireError as e:
            trace.count("tcp", "in_errs")
            trace.drop("tcp", "bad_" + e.field, src=src, dst=dst, detail=str(e))
            return
        flags = seg.flags
        if seg.src_port == 0 or seg.dst_port == 0:
            trace.drop("tcp", "port_zero")
            return
        if flags & SYN and flags & (RST | FIN):
            trace.drop("tcp", "bad_flags", flags=flags_str(flags))
            return
        key = (dst, seg.dst_port, src, seg.src_port)
        conn = self._conns.get(key)
        if trace.on and trace.wants("tcp", "seg"):
            trace.event("tcp", "seg", conn=conn_name(dst, seg.dst_port, src, seg.src_port),
                        dir="in", flags=flags_str(flags), seq=seg.seq, ack=seg.ack,
                        win=seg.window, len=len(seg.payload), options=seg.options_list())
        if conn is not None:
            if (conn.state == TIME_WAIT and flags & SYN and not flags & ACK
                    and seq_gt(seg.seq, conn.rcv_nxt)
                    and self._find_listener(dst, seg.dst_port) is not None):
                # A new incarnation may take over a TIME_WAIT connection
                # (RFC 1122 4.2.2.13, as Linux).
                conn._set_state(CLOSED, rcv_cause(seg) + " (new connection)", now)
                conn._finish()
            else:
                conn.segment_arrives(seg, now)
                return
        lst = self._find_listener(dst, seg.dst_port)
        if lst is not None:
            self._listen_input(lst, src, dst, seg, now)
            return
        self._reset_closed(src, dst, seg, now)

    def _find_listener(self, addr: int, port: int) -> Listener | None:
        lst = self._listeners.get((addr, port))
        if lst is None:
            lst = self._listeners.get((0, port))
        return lst

    def _listen_input(self, lst: Listener, src: int, dst: int, seg, now: float) -> None:
        """RFC 9293 3.10.7.2: a segment for the LISTEN state."""
        trace = self.trace
        flags = seg.flags
        if flags & RST:
            trace.drop("tcp", "rst_to_listener")
            return
        if flags & ACK:
            if (not flags & SYN and self.config.syncookies
                    and self._cookies.ack_in(self, lst, src, dst, seg, now)):
                return
            trace.drop("tcp", "ack_to_listener")
            self._send_rst_reply(src, dst, seg)
            return
        if not flags & SYN:
            trace.drop("tcp", "no_syn")
            return
        if lst.queue_full() or len(lst._half) >= self.config.syn_backlog:
            if self.config.syncookies and not lst.queue_full():
                self._cookies.send_synack(self, lst, src, dst, seg, now)
                return
            trace.count("tcp", "listen_drops")
            trace.drop("tcp", "backlog_full", conn=lst.name)
            return
        if not self._room_for_connection(now):
            return
        local = (dst, seg.dst_port)
        remote = (src, seg.src_port)
        conn = TcpConnection(self, local, remote, self._isn(dst, seg.dst_port, src, seg.src_port,
                                                            now), now, listener=lst)
        if lst.rcvbuf is not None:
            conn._size_rcvbuf(lst.rcvbuf)
        key = (dst, seg.dst_port, src, seg.src_port)
        self._conns[key] = conn
        lst._half[key] = conn
        conn._open_passive(seg, now)

    def _reset_closed(self, src: int, dst: int, seg, now: float) -> None:
        """RFC 9293 3.10.7.1: no connection. Answer with RST, never a RST with RST."""
        trace = self.trace
        if seg.flags & RST:
            trace.drop("tcp", "rst_no_conn")
            return
        trace.drop("tcp", "no_conn", src=src, dst=dst, port=seg.dst_port)
        self._send_rst_reply(src, dst, seg)

    def _send_rst_reply(self, src: int, dst: int, seg) -> None:
        if not _unicast(src) or not _unicast(dst):
            return
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) & MASK, RST | ACK
        data = build_tcp(dst, src, seg.dst_port, seg.src_port, seq, ack, flags, 0)
        self.ip_send(dst, src, PROTO_TCP, data)
        trace = self.trace
        trace.count("tcp", "out_segs")
        trace.count("tcp", "out_rsts")
        if trace.on and trace.wants("tcp", "seg"):
            trace.event("tcp", "seg", conn=conn_name(dst, seg.dst_port, src, seg.src_port),
                        dir="out", flags=flags_str(flags), seq=seq, ack=ack, win=0, len=0,
                        options=[])

    def icmp_error(self, kind: str, src: int, dst: int, quoted, now: float,
                   mtu: int | None = None) -> None:
        """An ICMP error from ``src`` quoting one of our datagrams (its IP
        header and at least 8 bytes). ``kind``: ``port_unreachable``,
        ``host_unreachable``, ``net_unreachable``, ``protocol_unreachable``
        or ``frag_needed`` (with ``mtu``)."""
        q = memoryview(quoted).cast("B")
        trace = self.trace
        if len(q) < 28 or q[0] >> 4 != 4:
            trace.drop("icmp", "tcp_quote_short")
            return
        ihl = (q[0] & 15) * 4
        if ihl < 20 or len(q) < ihl + 8 or q[9] != PROTO_TCP:
            trace.drop("icmp", "tcp_quote_bad")
            return
        osrc, odst = struct.unpack_from("!II", q, 12)
        sport, dport, seq = _ICMP_QUOTE.unpack_from(q, ihl)
        conn = self._conns.get((osrc, sport, odst, dport))
        if conn is None:
            trace.drop("tcp", "icmp_no_conn")
            return
        conn._icmp(kind, seq, mtu, now)

    # ---- user calls ---------------------------------------------------------------

    def listen(self, local: tuple[int, int], backlog: int, now: float) -> Listener:
        """Passive OPEN on ``(addr or 0, port)``."""
        addr, port = local
        if not 0 < port < 65536:
            raise os_error(errno.EINVAL)
        for (a, p) in self._listeners:
            if p == port and (a == addr or a == 0 or addr == 0):
                raise os_error(errno.EADDRINUSE)
        lst = Listener(self, (addr, port), backlog)
        self._listeners[(addr, port)] = lst
        if self.trace.on:
            self.trace.event("tcp", "state", conn=lst.name, **{"from": CLOSED, "to": LISTEN},
                             cause="user listen")
        return lst

    def connect(self, local_addr: int, remote: tuple[int, int], now: float,
                local_port: int = 0, rcvbuf: int | None = None) -> TcpConnection:
        """Active OPEN from ``local_addr`` (and ``local_port``, or an ephemeral one).
        ``rcvbuf`` (SO_RCVBUF) sizes the SYN's window and window scale."""
        raddr, rport = remote
        if not local_addr or not raddr or not 0 < rport < 65536:
            raise os_error(errno.EADDRNOTAVAIL)
        if local_port:
            if (local_addr, local_port, raddr, rport) in self._conns:
                raise os_error(errno.EADDRINUSE)
        else:
            local_port = self._ephemeral(local_addr, raddr, rport)
        if not self._room_for_connection(now):
            raise os_error(errno.ENOBUFS)
        key = (local_addr, local_port, raddr, rport)
        conn = TcpConnection(self, (local_addr, local_port), (raddr, rport),
                             self._isn(local_addr, local_port, raddr, rport, now), now)
        if rcvbuf is not None:
            conn._size_rcvbuf(rcvbuf)
        self._conns[key] = conn
        conn._open_active(now)
        return conn

    def bind_check(self, addr: int, port: int, reuse: bool = False) -> None:
        """Raise EADDRINUSE if ``(addr, port)`` may not be bound now.

        Listeners and other bindings always conflict; connections using the
        port conflict unless ``reuse`` (SO_REUSEADDR) is set.
        """
        if self._port_taken(addr, port, conns=not reuse):
            raise os_error(errno.EADDRINUSE)

    def bind(self, addr: int, port: int, reuse: bool = False) -> int:
        """Reserve ``(addr, port)`` for a socket (port 0: pick a free one); returns the port."""
        if port == 0:
            cfg = self.config
            num = cfg.ephemeral_high - cfg.ephemeral_low + 1
            start = self._rng.randrange(num)
            for i in range(num):
                p = cfg.ephemeral_low + (start + i) % num
                if not self._port_taken(addr, p, conns=True):
                    port = p
                    break
            else:
                raise os_error(errno.EADDRINUSE)
        else:
            self.bind_check(addr, port, reuse)
        self._bound[(addr, port)] += 1
        return port

    def unbind(self, addr: int, port: int) -> None:
        """Release a reservation made by :meth:`bind`."""
        k = (addr, port)
        if self._bound[k] > 1:
            self._bound[k] -= 1
        else:
            self._bound.pop(k, None)

    def _room_for_connection(self, now: float) -> bool:
        """Below ``max_connections``? At the bound the oldest TIME_WAIT
        connection makes room (as Linux skips TIME_WAIT beyond
        tcp_max_tw_buckets); with none, count the refusal."""
        if len(self._conns) < self.config.max_connections:
            return True
        old = next((c for c in self._conns.values() if c.state == TIME_WAIT), None)
        if old is not None:
            self.trace.count("tcp", "time_wait_recycled")
            old._set_state(CLOSED, "2MSL cut short: connection table full", now)
            old._finish()
            return True
        self.trace.drop("tcp", "too_many_connections")
        return False

    def connections(self) -> list[TcpConnection]:
        return list(self._conns.values())

    def close_all(self, now: float) -> None:
        """Stack shutdown: close every listener and reset every connection."""
        for lst in list(self._listeners.values()):
            lst.close(now)
        for conn in list(self._conns.values()):
            conn.abort(now)

    shutdown = close_all  # the name the runtime looks for

    # ---- ports and ISNs -------------------------------------------------------------

    def _port_taken(self, addr: int, port: int, conns: bool) -> bool:
        for (a, p) in itertools.chain(self._listeners, self._bound):
            if p == port and (a == addr or a == 0 or addr == 0):
                return True
        if conns:
            for (la, lp, _ra, _rp) in self._conns:
                if lp == port and (la == addr or addr == 0):
                    return True
        return False

    def _ephemeral(self, laddr: int, raddr: int, rport: int) -> int:
        """RFC 6056 algorithm 3 (simple hash-based port selection)."""
        cfg = self.config
        num = cfg.ephemeral_high - cfg.ephemeral_low + 1
        offset = int.from_bytes(hashlib.blake2s(_PORT_TUPLE.pack(laddr, raddr, rport),
                                                key=self._secret, digest_size=4).digest(), "big")
        for count in range(num):
            port = cfg.ephemeral_low + (self._next_ephemeral + offset + count) % num
            if ((laddr, port, raddr, rport) not in self._conns
                    and not self._port_taken(laddr, port, conns=False)):
                self._next_ephemeral += count + 1
                return port
        raise os_error(errno.EADDRNOTAVAIL)

    def _isn(self, laddr: int, lport: int, raddr: int, rport: int, now: float) -> int:
        """RFC 6528: a 4 microsecond clock plus a keyed hash of the 4-tuple."""
        h = hashlib.blake2s(_ISN_TUPLE.pack(laddr, lport, raddr, rport), key=self._secret,
                            digest_size=4).digest()
        return (int(now * 250_000) + int.from_bytes(h, "big")) & MASK

    def _ts_offset(self, laddr: int, lport: int, raddr: int, rport: int) -> int:
        """RFC 7323 7.1: a per-connection random offset for the timestamp clock."""
        h = hashlib.blake2s(_ISN_TUPLE.pack(laddr, lport, raddr, rport), key=self._secret,
                            person=b"tsoffset", digest_size=4).digest()
        return int.from_bytes(h, "big")

    # ---- timers -------------------------------------------------------------------

    def _schedule(self, conn: TcpConnection) -> None:
        """Make sure the heap holds an entry no later than the connection's deadline."""
        d = conn.deadline()
        if d is None:
            return
        s = conn._sched
        if s is None or d < s:
            if s is not None:
                self._stale += 1
            conn._sched = d
            heapq.heappush(self._heap, (d, next(self._tie), conn))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            d, _, conn = heap[0]
            if conn._sched != d:
                heapq.heappop(heap)
                self._stale -= 1
                continue
            real = conn.deadline()
            if real is not None and real <= d:
                return d
            # The connection's timers moved later (or stopped) since this
            # entry was pushed: move the entry instead of waking for nothing.
            heapq.heappop(heap)
            conn._sched = None
            if real is not None:
                conn._sched = real
                heapq.heappush(heap, (real, next(self._tie), conn))
        return None

    def on_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            d, _, conn = heapq.heappop(heap)
            if conn._sched != d:
                self._stale -= 1
                continue
            conn._sched = None
            conn._on_timer(now)
        self._compact()

    def _compact(self) -> None:
        if self._stale > 64 and self._stale * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2]._sched == e[0]]
            heapq.heapify(self._heap)
            self._stale = 0

    def _release(self, conn: TcpConnection) -> None:
        """A connection reached CLOSED: drop every reference the layer holds."""
        key = (conn.local[0], conn.local[1], conn.remote[0], conn.remote[1])
        if self._conns.get(key) is conn:
            del self._conns[key]
        lst = conn._listener
        if lst is not None:
            lst._half.pop(key, None)
        if conn._sched is not None:
            conn._sched = None
            self._stale += 1
            self._compact()


def _unicast(a: int) -> bool:
    return a != 0 and a != 0xFFFFFFFF and not (0xE0000000 <= a < 0xF0000000)
