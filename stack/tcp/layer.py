"""The TCP layer: what TCP accepts at all, demultiplexing, listeners, ISNs,
ports, RSTs for closed ports, ICMP errors and one timer heap for every
connection.

Where an incoming TCP segment is handled: :meth:`TcpLayer.receive` checks it
and hands it to a connection (``TcpConnection.segment_arrives``), to a
listener (:meth:`TcpLayer._listen_input`) or answers for a closed port
(:meth:`TcpLayer._reset_closed`).
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import itertools
import random as _random
import struct
from typing import Callable

from stack.tcp.config import TcpConfig
from stack.tcp.conn import TcpConnection
from stack.tcp.emit import Emitter, IpSend, conn_name
from stack.tcp.handshake import rcv_cause
from stack.tcp.listener import Listener
from stack.tcp.ports import Ports
from stack.tcp.seq import seq_add, seq_gt
from stack.tcp.states import LISTEN, SYN_RECEIVED, TIME_WAIT, os_error
from stack.tcp.syncookies import SynCookies
from stack.trace import Trace
from stack.wire import WireError
from stack.wire.ipv4 import int2ip
from stack.wire.tcp import ACK, FIN, PROTO_TCP, RST, SYN, TcpSegment, flags_str, parse_tcp

_TUPLE = struct.Struct("!IHIH")
_ICMP_QUOTE = struct.Struct("!HHI")
# The errors that drop a half-open passive connection (Linux's tcp_v4_err → tcp_req_err).
_HALF_OPEN_ABORTS = frozenset({"net_unreachable", "host_unreachable", "time_exceeded",
                               "parameter_problem"})
Key = tuple[int, int, int, int]


def _unicast(a: int) -> bool:
    return a != 0 and a != 0xFFFFFFFF and not (0xE0000000 <= a < 0xF0000000)


class TcpLayer:
    """All TCP endpoints of one stack. See ``docs/ARCHITECTURE.md``.

    ``ip_send(src, dst, proto, payload)`` hands a segment to IP and raises
    OSError when there is no route. ``is_broadcast(addr)`` and
    ``reachable(addr)`` are what IP knows about addresses (defaults:
    nothing is a broadcast, everything is reachable). ``route_mss(addr)``
    is the MSS to offer on the route to ``addr`` when it is not
    ``config.mss`` (None: it is; IP says so for ``lo``). ``isn`` and
    ``ts_offset`` replace the keyed-hash ISN and timestamp offset (tests use
    fixed ones to compare segments exactly)."""

    def __init__(self, ip_send: IpSend, trace: Trace, config: TcpConfig | None = None,
                 rng: _random.Random | None = None, *,
                 is_broadcast: Callable[[int], bool] | None = None,
                 reachable: Callable[[int], bool] | None = None,
                 route_mss: Callable[[int], int | None] | None = None,
                 isn: Callable[[int, int, int, int, float], int] | None = None,
                 ts_offset: Callable[[int, int, int, int], int] | None = None) -> None:
        self.trace = trace
        self.config = config if config is not None else TcpConfig()
        rng = rng or _random.Random()
        self._secret = rng.getrandbits(128).to_bytes(16, "big")
        self.emitter = Emitter(ip_send, trace)
        self.ports = Ports(self.config, self._secret, rng)
        self._is_broadcast = is_broadcast
        self._reachable = reachable
        self._route_mss = route_mss
        self._isn_fn = isn
        self._ts_fn = ts_offset
        self._conns: dict[Key, TcpConnection] = {}
        self._listeners: dict[tuple[int, int], Listener] = {}
        self.ports.attach(self._conns, self._listeners)
        self._heap: list[tuple[float, int, TcpConnection]] = []
        self._sched: dict[TcpConnection, float] = {}  # each connection's heap entry
        self._tie = itertools.count()
        self._stale = 0
        self._cookies = SynCookies(self._secret)
        # The largest TCP segment (header and data) IP may be handed when the
        # link cuts segments itself (TSO, software GSO); None: one MSS. Set by
        # the runtime, with the MSS (data plus options) the link cuts them
        # to: a connection whose MSS is smaller (a smaller path MTU, a peer's
        # smaller MSS) sends one MSS per segment.
        self.segment_max: int | None = None
        self.segment_mss: int | None = None

    def set_segmentation(self, segment_max: int, segment_mss: int) -> None:
        """The link takes TCP segments of up to ``segment_max`` bytes (header
        and data) and cuts them at ``segment_mss`` (data and options)."""
        self.segment_max = segment_max
        self.segment_mss = segment_mss

    def mss_for(self, addr: int) -> int:
        """The MSS our SYN offers to ``addr``: its route's (``lo``'s is 65495,
        as Linux's) or the configured one (the link's MTU less 40)."""
        if self._route_mss is not None:
            mss = self._route_mss(addr)
            if mss is not None:
                return mss
        return self.config.mss

    # ---- input ------------------------------------------------------------------

    def receive(self, src: int, dst: int, segment: bytes | memoryview, now: float) -> None:
        """One TCP segment (the IP payload) from ``src`` to ``dst``."""
        trace = self.trace
        if self._is_broadcast is not None and self._is_broadcast(dst):
            # RFC 1122 4.2.3.10: TCP is unicast; no SYN,ACK or RST from a broadcast address.
            trace.drop("tcp", "broadcast", dst=int2ip(dst))
            return
        if self._reachable is not None and not self._reachable(src):
            # No route back: nothing we answer could leave, so keep no state for it.
            trace.drop("tcp", "unroutable", src=int2ip(src))
            return
        trace.counters["tcp.in_segs"] += 1  # (per segment: no key formatting)
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
        conn = self._conns.get((dst, seg.dst_port, src, seg.src_port))
        if trace.on and trace.wants("tcp", "seg"):
            name = conn.name if conn is not None else conn_name(dst, seg.dst_port, src,
                                                                seg.src_port)
            trace.event("tcp", "seg", conn=name,
                        dir="in", flags=flags_str(flags), seq=seg.seq, ack=seg.ack,
                        win=seg.window, len=len(seg.payload), options=seg.options_list())
        if conn is not None:
            if (conn.state == TIME_WAIT and flags & SYN and not flags & ACK
                    and seq_gt(seg.seq, conn.receiver.rcv_nxt)
                    and self._find_listener(dst, seg.dst_port) is not None):
                # A new incarnation may take over a TIME_WAIT connection
                # (RFC 1122 4.2.2.13, as Linux).
                conn.drop(rcv_cause(seg) + " (new connection)", now)
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

    def _listen_input(self, lst: Listener, src: int, dst: int, seg: TcpSegment,
                      now: float) -> None:
        """RFC 9293 3.10.7.2: a segment for the LISTEN state."""
        trace = self.trace
        flags = seg.flags
        cfg = self.config
        if flags & RST:
            trace.drop("tcp", "rst_to_listener")
            return
        if flags & ACK:
            if not flags & SYN and cfg.syncookies and self._cookie_ack(lst, src, dst, seg, now):
                return
            trace.drop("tcp", "ack_to_listener")
            self.send_rst_reply(src, dst, seg)
            return
        if not flags & SYN:
            trace.drop("tcp", "no_syn")
            return
        if lst.queue_full() or lst.half_open() >= cfg.syn_backlog:
            if cfg.syncookies and not lst.queue_full():
                self._cookies.send_synack(self, lst, src, dst, seg, now)
                return
            trace.count("tcp", "listen_drops")
            trace.drop("tcp", "backlog_full", conn=lst.name)
            return
        conn = self._new_connection((dst, seg.dst_port), (src, seg.src_port), None, now, lst)
        if conn is None:
            return
        if lst.rcvbuf is not None:
            conn.size_rcvbuf(lst.rcvbuf)
        lst.add_half_open((dst, seg.dst_port, src, seg.src_port), conn)
        conn.open_passive(seg, now)

    def _cookie_ack(self, lst: Listener, src: int, dst: int, seg: TcpSegment,
                    now: float) -> bool:
        """An ACK for a listener that sent SYN cookies: True when it carried
        one (and made a connection if there was room)."""
        syn = self._cookies.ack_in(self, lst, src, dst, seg, now)
        if syn is None:
            return False
        if lst.queue_full():
            self.trace.count("tcp", "listen_drops")
            self.trace.drop("tcp", "accept_queue_full", conn=lst.name)
            return True
        conn = self._new_connection((dst, seg.dst_port), (src, seg.src_port),
                                    seq_add(seg.ack, -1), now, lst)
        if conn is not None:
            conn.open_from_cookie(syn, seg, now)
        return True

    def _reset_closed(self, src: int, dst: int, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.1: no connection. Answer with RST, never a RST with RST."""
        if seg.flags & RST:
            self.trace.drop("tcp", "rst_no_conn")
            return
        self.trace.drop("tcp", "no_conn", conn=conn_name(dst, seg.dst_port, src, seg.src_port),
                        src=src, dst=dst, port=seg.dst_port)
        self.send_rst_reply(src, dst, seg)

    def send_rst_reply(self, src: int, dst: int, seg: TcpSegment) -> None:
        """The RST that answers ``seg`` from ``src`` (RFC 9293 3.10.7.1): its ACK
        number as our sequence number, else ACK of all it occupied; no options
        (as Linux's ``tcp_v4_send_reset``)."""
        if not _unicast(src) or not _unicast(dst):
            return
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, seq_add(seg.seq, seg.seg_len), RST | ACK
        self.emitter.send(dst, seg.dst_port, src, seg.src_port, seq, ack, flags, 0)

    def icmp_error(self, kind: str, src: int, dst: int, quoted: bytes | memoryview, now: float,
                   mtu: int | None = None) -> bool:
        """An ICMP error from ``src`` quoting one of our datagrams (its IP
        header and at least 8 bytes). ``kind``: a name from
        :mod:`stack.wire.icmp_errors` (``frag_needed`` with ``mtu``). True
        when it quotes a segment a connection of ours has in flight."""
        q = memoryview(quoted).cast("B")
        trace = self.trace
        if len(q) < 28 or q[0] >> 4 != 4:
            trace.drop("icmp", "tcp_quote_short")
            return False
        ihl = (q[0] & 15) * 4
        if ihl < 20 or len(q) < ihl + 8 or q[9] != PROTO_TCP:
            trace.drop("icmp", "tcp_quote_bad")
            return False
        osrc, odst = struct.unpack_from("!II", q, 12)
        sport, dport, seq = _ICMP_QUOTE.unpack_from(q, ihl)
        conn = self._conns.get((osrc, sport, odst, dport))
        if conn is None:
            trace.drop("tcp", "icmp_no_conn")
            return False
        if conn.passive and conn.state == SYN_RECEIVED and kind != "frag_needed":
            # Linux's tcp_req_err: a half-open connection is dropped for these
            # (LISTENDROPS), and hears nothing of the others.
            if seq != conn.sender.iss:
                trace.drop("tcp", "icmp_stale", conn=conn.name)
                return False
            if kind in _HALF_OPEN_ABORTS:
                trace.count("tcp", "listen_drops")
                conn.drop(f"icmp {kind}", now)
            else:
                trace.drop("tcp", "icmp_half_open_ignored", conn=conn.name, kind=kind)
            return True
        return conn.icmp_error(kind, seq, mtu, now)

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
        lst.set_state(LISTEN, "user listen", now)
        return lst

    def connect(self, local_addr: int, remote: tuple[int, int], now: float,
                local_port: int = 0, rcvbuf: int | None = None,
                ttl: int | None = None) -> TcpConnection:
        """Active OPEN from ``local_addr`` (and ``local_port``, or an ephemeral one).
        ``rcvbuf`` (SO_RCVBUF) sizes the SYN's window and window scale; ``ttl``
        (IP_TTL) is its segments' TTL from the SYN on."""
        raddr, rport = remote
        if not local_addr or not raddr or not 0 < rport < 65536:
            raise os_error(errno.EADDRNOTAVAIL)
        if local_port:
            if (local_addr, local_port, raddr, rport) in self._conns:
                raise os_error(errno.EADDRINUSE)
        else:
            local_port = self.ports.ephemeral(local_addr, raddr, rport)
        conn = self._new_connection((local_addr, local_port), remote, None, now, None)
        if conn is None:
            raise os_error(errno.ENOBUFS)
        if rcvbuf is not None:
            conn.size_rcvbuf(rcvbuf)
        conn.ttl = ttl
        conn.open_active(now)
        return conn

    def bind_check(self, addr: int, port: int, reuse: bool = False) -> None:
        """Raise EADDRINUSE if ``(addr, port)`` may not be bound now.

        Listeners and other bindings always conflict; connections using the
        port conflict unless ``reuse`` (SO_REUSEADDR) is set."""
        if self.ports.taken(addr, port, conns=not reuse):
            raise os_error(errno.EADDRINUSE)

    def bind(self, addr: int, port: int, reuse: bool = False) -> int:
        """Reserve ``(addr, port)`` for a socket (port 0: pick a free one); returns the port."""
        if port:
            self.bind_check(addr, port, reuse)
        return self.ports.bind(addr, port)

    def unbind(self, addr: int, port: int) -> None:
        """Release a reservation made by :meth:`bind`."""
        self.ports.unbind(addr, port)

    def connections(self) -> list[TcpConnection]:
        return list(self._conns.values())

    def lookup(self, key: Key) -> TcpConnection | None:
        """The connection ``(laddr, lport, raddr, rport)``, if any."""
        return self._conns.get(key)

    def listeners(self) -> list[Listener]:
        return list(self._listeners.values())

    def listener(self, local: tuple[int, int]) -> Listener | None:
        """The listener bound to exactly ``(addr or 0, port)``, if any."""
        return self._listeners.get(local)

    def status(self) -> dict[str, int]:
        """How much the layer holds: connections, listeners, bound ports,
        timer-heap entries (for tests that check nothing is left behind)."""
        return {"connections": len(self._conns), "listeners": len(self._listeners),
                "bound": self.ports.bound_count(), "timers": len(self._heap),
                "scheduled": len(self._sched)}

    def close_all(self, now: float) -> None:
        """Stack shutdown: close every listener and reset every connection."""
        for lst in list(self._listeners.values()):
            lst.close(now)
        for conn in list(self._conns.values()):
            conn.abort(now)

    # ---- connections --------------------------------------------------------------

    def _new_connection(self, local: tuple[int, int], remote: tuple[int, int], iss: int | None,
                        now: float, lst: Listener | None) -> TcpConnection | None:
        """A connection in the table, or None when the table is full
        (``max_connections``): then the oldest TIME_WAIT connection makes
        room (as Linux skips TIME_WAIT beyond tcp_max_tw_buckets); with
        none, the refusal is counted."""
        if len(self._conns) >= self.config.max_connections:
            old = next((c for c in self._conns.values() if c.state == TIME_WAIT), None)
            if old is None:
                self.trace.drop("tcp", "too_many_connections")
                return None
            self.trace.count("tcp", "time_wait_recycled")
            old.drop("2MSL cut short: connection table full", now)
        if iss is None:
            iss = self.isn(*local, *remote, now)
        conn = TcpConnection(self, local, remote, iss, now, listener=lst)
        self._conns[(local[0], local[1], remote[0], remote[1])] = conn
        return conn

    def release(self, conn: TcpConnection) -> None:
        """A connection reached CLOSED: drop every reference the layer holds."""
        key = (conn.local[0], conn.local[1], conn.remote[0], conn.remote[1])
        if self._conns.get(key) is conn:
            del self._conns[key]
        if conn.listener is not None:
            conn.listener.forget(key)
        if self._sched.pop(conn, None) is not None:
            self._stale += 1
            self._compact()

    def release_listener(self, lst: Listener) -> None:
        if self._listeners.get(lst.local) is lst:
            del self._listeners[lst.local]

    # ---- ISNs and timestamps ------------------------------------------------------------

    def isn(self, laddr: int, lport: int, raddr: int, rport: int, now: float) -> int:
        """RFC 6528: a 4 microsecond clock plus a keyed hash of the 4-tuple."""
        if self._isn_fn is not None:
            return self._isn_fn(laddr, lport, raddr, rport, now)
        h = hashlib.blake2s(_TUPLE.pack(laddr, lport, raddr, rport), key=self._secret,
                            digest_size=4).digest()
        return seq_add(int(now * 250_000), int.from_bytes(h, "big"))

    def ts_offset(self, laddr: int, lport: int, raddr: int, rport: int) -> int:
        """RFC 7323 7.1: a per-connection random offset for the timestamp clock."""
        if self._ts_fn is not None:
            return self._ts_fn(laddr, lport, raddr, rport)
        h = hashlib.blake2s(_TUPLE.pack(laddr, lport, raddr, rport), key=self._secret,
                            person=b"tsoffset", digest_size=4).digest()
        return int.from_bytes(h, "big")

    # ---- timers -------------------------------------------------------------------

    def schedule(self, conn: TcpConnection) -> None:
        """Make sure the heap holds an entry no later than the connection's deadline."""
        d = conn.timers.deadline()
        if d is None:
            return
        s = self._sched.get(conn)
        if s is None or d < s:
            if s is not None:
                self._stale += 1
            self._sched[conn] = d
            heapq.heappush(self._heap, (d, next(self._tie), conn))

    def next_deadline(self) -> float | None:
        heap = self._heap
        sched = self._sched
        while heap:
            d, _, conn = heap[0]
            if sched.get(conn) != d:
                heapq.heappop(heap)
                self._stale -= 1
                continue
            real = conn.timers.deadline()
            if real is not None and real <= d:
                return d
            # The connection's timers moved later (or stopped) since this
            # entry was pushed: move the entry instead of waking for nothing.
            heapq.heappop(heap)
            del sched[conn]
            if real is not None:
                sched[conn] = real
                heapq.heappush(heap, (real, next(self._tie), conn))
        return None

    def on_timer(self, now: float) -> None:
        heap = self._heap
        sched = self._sched
        while heap and heap[0][0] <= now:
            d, _, conn = heapq.heappop(heap)
            if sched.get(conn) != d:
                self._stale -= 1
                continue
            del sched[conn]
            conn.on_timer(now)
        self._compact()

    def _compact(self) -> None:
        if self._stale > 64 and self._stale * 2 > len(self._heap):
            sched = self._sched
            self._heap = [e for e in self._heap if sched.get(e[2]) == e[0]]
            heapq.heapify(self._heap)
            self._stale = 0
