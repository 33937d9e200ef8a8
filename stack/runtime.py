"""The runtime: one stack on one link, and the thread that drives it.

``Stack`` wires the layers together (link → Ethernet/ARP → IPv4 → ICMP, UDP,
TCP) from what the link declares it can do (``mtu``, ``segment_max`` with
``offload``, ``defer_writes``) and owns the only real clock. One network
thread waits on the link's fd and a wake-up fd with a timeout equal to the
nearest timer deadline, reads frames in batches and runs timers. User threads
call the socket facade; one re-entrant lock (``net.lock``) guards all protocol
state, and blocking calls wait on conditions bound to it.

For tests, ``Stack(..., thread=False, clock=manual)`` runs no thread: the
test calls ``net.step()`` to process what the link holds and due timers.
"""

from __future__ import annotations

import ipaddress
import os
import random
import selectors
import socket as _socket
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from stack import native
from stack.dhcp import DhcpAgent, dhcp_mac
from stack.link.base import Link, earliest
from stack.link.impair import ImpairLink
from stack.net.arp import ArpConfig, EthernetArp, describe_frame
from stack.net.icmp import IcmpLayer
from stack.net.ipv4 import Ipv4Layer
from stack.net.udp import UdpLayer
from stack.ping import Pinger
from stack.tcp.layer import TcpLayer
from stack.trace import FLUSH_DELAY, Trace
from stack.wire.eth import mac2str, str2mac
from stack.wire.ipv4 import PROTO_TCP, int2ip, ip2int


def default_mac(address: int) -> bytes:
    """A stable, locally administered unicast MAC derived from the address."""
    return bytes([0x02, 0x53]) + address.to_bytes(4, "big")


class StackLock:
    """The stack's re-entrant lock; when the last level is released (also by a
    Condition's wait), ``on_release`` runs: it writes the queued frames."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        # Any: the private RLock methods below are what Condition calls.
        self._lock: Any = threading.RLock()
        self._on_release = on_release

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()
        if not self._lock._is_owned():
            self._on_release()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()

    # What threading.Condition uses to wait on a re-entrant lock.
    def _is_owned(self) -> bool:
        return self._lock._is_owned()

    def _release_save(self):
        state = self._lock._release_save()
        self._on_release()
        return state

    def _acquire_restore(self, state) -> None:
        self._lock._acquire_restore(state)


def _tcp_config_for(config, mtu: int):
    """The TCP settings for a link: our MSS option follows the MTU (MTU - 40)
    unless the caller chose a smaller one."""
    from dataclasses import replace

    from stack.tcp.config import TcpConfig

    config = config if config is not None else TcpConfig()
    default_mss = TcpConfig.mss
    if config.mss == default_mss or config.mss > mtu - 40:
        config = replace(config, mss=max(mtu - 40, 88))
    return config


def parse_cidr(text: str) -> tuple[int, int]:
    iface = ipaddress.IPv4Interface(text)
    return int(iface.ip), iface.network.prefixlen


class Stack:
    """A TCP/IP host on one link."""

    def __init__(self, link: Link, address: str = "192.0.2.2/24", gateway: str | None = None,
                 mac: str | bytes | None = None, trace: Trace | None = None,
                 clock: Callable[[], float] = time.monotonic, thread: bool = True,
                 seed: int | None = None, tcp_config=None, arp_config: ArpConfig | None = None,
                 close_link: bool = True, busy_poll: float = 0.0,
                 dns: list[str] | None = None, hosts: dict[str, str] | None = None,
                 dhcp_config=None, gro: bool | None = None) -> None:
        self.link = link
        # Software GRO (stack.native.gro_coalesce): each batch read from the
        # link has its in-order segments of a flow merged before TCP sees
        # them. On by default where the link does software GSO (a TAP).
        self.gro = link.gso if gro is None else gro
        self.clock = clock
        self.started = clock()
        dhcp = address == "dhcp"  # no address until a lease binds (stack/dhcp.py)
        addr, prefix_len = parse_cidr("0.0.0.0/32" if dhcp else address)
        if isinstance(mac, str):
            mac = str2mac(mac)
        self.mac: bytes = mac or default_mac(addr)
        self.trace = trace or Trace()
        self.trace.clock = lambda: self.clock() - self.started
        self.rng = random.Random(seed)
        self._txq: deque[bytes] = deque()
        self._tx_lock = threading.Lock()
        # Frames for a TAP leave after the stack lock is released, so the
        # write system calls of one thread overlap the protocol work of another.
        self._defer_tx = thread and link.defer_writes
        self.lock = StackLock(self._flush_tx) if self._defer_tx else threading.RLock()
        self._close_link = close_link
        # Seconds the network thread keeps polling the link after a frame
        # before it sleeps again (Linux's net.core.busy_poll): lower latency
        # for a core's worth of CPU while traffic flows. 0: off.
        self.busy_poll = busy_poll
        self._closed = False

        self.eth = EthernetArp(self.mac, addr, self._send_frame, self.trace, arp_config)
        self.ip = Ipv4Layer(self.eth, addr, prefix_len, ip2int(gateway) if gateway else None,
                            link.mtu, self.trace, ident_seed=self.rng.getrandbits(16))
        self.eth.ipv4_receive = self.ip.receive
        self.icmp = IcmpLayer(self.ip, self.trace, utc_offset=time.time() - clock())
        self.udp = UdpLayer(self.ip, self.icmp, self.trace, rng=self.rng)
        self.tcp = TcpLayer(self._tcp_send, self.trace, _tcp_config_for(tcp_config, link.mtu),
                            rng=self.rng, is_broadcast=self.ip.is_broadcast,
                            reachable=self.ip.has_route, route_mss=self.ip.route_mss)
        segment_max = link.segment_max if link.offload or link.gso else None
        if segment_max is not None:
            # TSO or software GSO: TCP hands down segments of many MSS, IP
            # sends them whole (a 20-byte header: TCP sends no IP options),
            # the link cuts them.
            self.ip.tcp_gso_max = segment_max + 20
            self.tcp.set_segmentation(segment_max, link.mtu - 40)
        self.ip.handlers[PROTO_TCP] = self._tcp_receive
        self.icmp.error_handlers[PROTO_TCP] = self._tcp_icmp_error
        # The fault injector somewhere in the link chain, if any (its seed is
        # what reproduces a run).
        self.injector: ImpairLink | None = next(
            (x for x in link.chain() if isinstance(x, ImpairLink)), None)
        from stack.names import Names

        self.names = Names(self, dns, hosts)  # getaddrinfo and friends (stack/names.py)
        self.pinger = Pinger(self, self.rng.getrandbits(16))

        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._kicked = False
        self._sleep_until = 0.0  # when the network thread will wake by itself
        self._thread: threading.Thread | None = None
        self.trace.event("link", "up", address=f"{int2ip(self.address)}/{self.prefix_len}",
                         mac=mac2str(self.mac), checksum=native.IMPL, mtu=link.mtu)
        if self.injector is not None:
            self._watch_injector(self.injector)
        with self.lock:
            self.eth.announce()
        self.dhcp = DhcpAgent(self, dhcp_config) if dhcp else None
        if thread:
            self._thread = threading.Thread(target=self._loop, name="stack-net", daemon=True)
            self._thread.start()
            self.trace.on_unflushed = self._wake_to_flush

    # -- construction helpers ------------------------------------------------

    @classmethod
    def tap(cls, name: str = "tap0", address: str = "192.0.2.2/24", gateway: str | None = None,
            host_address: str | None = None, mtu: int = 1500, mac: str | None = None,
            trace: str | None = None, trace_format: str = "jsonl", pcap: str | None = None,
            impair: str | None = None, trace_level: str = "all", offload: bool = False,
            gso: bool = True, **kwargs) -> "Stack":
        """Open (or create) a TAP device and run a stack on it (SPEC's Python API).

        ``offload=True`` opens the TAP with the virtio-net header and TSO/checksum
        offloads: the kernel hands over TCP super-frames and cuts ours. Without
        it the TAP does software GSO and the stack software GRO (``gso=False``:
        neither; ``gro=`` alone turns GRO on or off)."""
        from stack.link.tap import TapLink

        link: Link = TapLink(name, host_address=host_address, mtu=mtu, offload=offload, gso=gso)
        mac = mac or (dhcp_mac(name) if address == "dhcp" else None)  # stable per TAP
        return cls._on_link(link, address=address, gateway=gateway, mac=mac, trace=trace,
                            trace_format=trace_format, pcap=pcap, impair=impair,
                            trace_level=trace_level, **kwargs)

    @classmethod
    def _on_link(cls, link: Link, *, trace=None, trace_format="jsonl", pcap=None, impair=None,
                 trace_level="all", **kwargs) -> "Stack":
        device = link
        try:
            if impair:
                link = ImpairLink(link, impair, clock=kwargs.get("clock", time.monotonic))
            if pcap:
                from stack.link.pcap import PcapLink

                link = PcapLink(link, pcap)
            tr = kwargs.pop("trace_obj", None)
            if tr is None:
                if trace == "-":  # a person watching: readable lines on stderr
                    sink, trace_format = sys.stderr, "text"
                else:
                    sink = open(trace, "w", buffering=1 << 16) if isinstance(trace, str) else trace
                tr = Trace(sink, trace_format, level=trace_level)
            return cls(link, trace=tr, **kwargs)
        except BaseException:
            # A bad spec or a capture file that cannot be written: the device
            # (a TAP this call created is removed) does not outlive the failure.
            device.close()
            raise

    def _watch_injector(self, injector: ImpairLink) -> None:
        """Trace the fault injector's seed, and every impairment it applies
        unless someone else already listens to them."""
        self.trace.event("link", "impair", spec=str(injector.spec), seed=injector.seed)
        if injector.on_impair is not None:
            return
        trace = self.trace

        def on_impair(direction: str, kind: str, frame: bytes) -> None:
            if trace.wants("link", "impaired"):
                trace.event("link", "impaired", dir=direction, kind=kind, length=len(frame),
                            **describe_frame(frame, outgoing=direction == "tx"))

        injector.on_impair = on_impair

    @classmethod
    def pair(cls, address_a: str = "192.0.2.1/24", address_b: str = "192.0.2.2/24",
             impair: str | None = None, mtu: int = 1500, **kwargs) -> tuple["Stack", "Stack"]:
        """Two stacks joined by an in-memory link (no TAP, no privileges)."""
        from stack.link.memory import MemoryLink

        a, b = MemoryLink.pair(mtu=mtu)
        first: Link = a
        if impair:
            first = ImpairLink(a, impair, clock=kwargs.get("clock", time.monotonic))
        return cls(first, address=address_a, **kwargs), cls(b, address=address_b, **kwargs)

    # -- the socket API --------------------------------------------------------

    def socket(self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM,
               proto: int = 0):
        from stack.socket import Socket

        return Socket(self, family, type, proto)

    def create_connection(self, address, timeout=..., source_address=None, **kw):
        from stack.socket import create_connection

        return create_connection(self, address, timeout, source_address, **kw)

    def create_server(self, address, **kw):
        from stack.socket import create_server

        return create_server(self, address, **kw)

    def is_local(self, addr: int) -> bool:
        """Is ``addr`` one of this stack's own addresses?"""
        return self.ip.is_local(addr)

    def source_for(self, dst: int) -> int:
        """The local address a connection or datagram to ``dst`` leaves from."""
        return self.ip.source_for(dst)

    # The socket module's name functions, answered by the stack (stack/names.py).
    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        return self.names.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(self, name):
        return self.names.gethostbyname(name)

    def gethostbyname_ex(self, name):
        return self.names.gethostbyname_ex(name)

    def gethostbyaddr(self, address):
        return self.names.gethostbyaddr(address)

    def getnameinfo(self, sockaddr, flags):
        return self.names.getnameinfo(sockaddr, flags)

    def getfqdn(self, name=""):
        return self.names.getfqdn(name)

    def patched(self):
        """The drop-in for a ``with`` block: the ``socket`` module over this stack (stack/dropin.py)."""
        from stack import dropin

        return dropin.patched(self)

    def ping(self, host: str, size: int = 56, timeout: float = 2.0, df: bool = False) -> float:
        """One ICMP echo request; its round-trip time in seconds (stack/ping.py)."""
        return self.pinger.ping(host, size, timeout, df)

    def traceroute(self, host: str, max_hops: int = 30, probes: int = 3, timeout: float = 5.0,
                   port: int = 33434) -> list:
        """The hops to ``host`` by UDP probes, as traceroute(8) (stack/traceroute.py)."""
        from stack import traceroute

        return traceroute.traceroute(self, host, max_hops, probes, timeout, port)

    def stats(self) -> dict[str, int]:
        """Counters by layer (like ``netstat -s``), every drop reason included."""
        with self.lock:
            out = dict(self.trace.counters)
            for link in self.link.chain():
                for k, v in link.counters().items():
                    out[f"link.{k}"] = v
            return out

    def neighbours(self) -> dict[str, str]:
        """The ARP cache: ``{ip: mac}`` (``neighbour_table()`` adds the states)."""
        with self.lock:
            return self.eth.neighbours()

    # The live views (stack ss, stack neigh, stack route); see stack/live.py.
    def connections(self) -> list[dict]:
        """Every TCP connection and listener and every UDP socket, as dicts."""
        from stack import live

        return live.connections(self)

    def neighbour_table(self) -> list[dict]:
        """The ARP cache like ``ip neigh``: address, device, MAC and state."""
        from stack import live

        return live.neighbours(self)

    def routes(self) -> list[dict]:
        """The routes like ``ip route``: the connected subnet and the default route."""
        from stack import live

        return live.routes(self)

    address = property(lambda self: self.ip.address, doc="Our address (0 without: DHCP).")
    prefix_len = property(lambda self: self.ip.prefix_len)

    @property
    def address_str(self) -> str:
        return int2ip(self.address)

    # -- frames in -------------------------------------------------------------

    def receive_frame(self, frame: bytes | memoryview, now: float) -> None:
        """Handle one Ethernet frame (:meth:`EthernetArp.receive`). Never raises:
        bad frames are dropped and counted, and an exception from any layer is
        counted as ``eth.drop.internal_error`` (each one is a bug)."""
        try:
            self.eth.receive(frame, now)
        except Exception as e:  # the receive loop survives anything
            self.trace.drop("eth", "internal_error", error=repr(e))

    def _send_frame(self, frame: bytes) -> None:
        if self._defer_tx:
            self._txq.append(frame)
        else:
            self.link.send(frame)

    def _flush_tx(self, wait: bool = False) -> None:
        """Write the queued frames, in order, one writer at a time. A thread
        that finds another one writing leaves its frames to it (the writer
        looks at the queue again after letting go) and goes back to work
        instead of waiting through the other's system calls; ``wait``: write
        them before returning (close)."""
        q = self._txq
        send = self.link.send
        lock = self._tx_lock
        while q:
            if not lock.acquire(wait):
                return
            try:
                while q:
                    try:
                        frame = q.popleft()
                    except IndexError:
                        break
                    try:
                        send(frame)
                    except (OSError, ValueError) as e:  # the link is gone (closed, removed)
                        self.trace.drop("link", "send_failed", error=repr(e))
            finally:
                lock.release()

    def _tcp_send(self, src: int, dst: int, proto: int, payload: bytes, ttl=None) -> None:
        self.ip.send(src, dst, proto, payload, self.clock(), df=True, ttl=ttl)  # PMTUD, RFC 1191

    def _tcp_receive(self, h, payload, now) -> None:
        self.tcp.receive(h.src, h.dst, payload, now)

    def _tcp_icmp_error(self, kind, src, dst, quoted, mtu, now) -> bool:
        return self.tcp.icmp_error(kind, src, dst, quoted, now, mtu=mtu or None)

    # -- the loop --------------------------------------------------------------

    def _wake_to_flush(self) -> None:
        """An event is waiting to be flushed (written by any thread, with or
        without the lock): wake the network thread if it would sleep past
        the flush's deadline. A lost race costs one late flush, never a
        missed one (the loop wakes at least every second)."""
        if (self._thread is not None and not self._kicked
                and self.clock() + FLUSH_DELAY < self._sleep_until):
            self._kicked = True
            try:
                os.write(self._wake_w, b"\x01")
            except (BlockingIOError, OSError):
                pass

    def kick(self) -> None:
        """Wake the network thread if a timer now falls before its wake-up (call under the lock)."""
        if self._thread is not None and not self._kicked:
            d = self._wake_deadline()
            if d is None or d >= self._sleep_until:
                return
            self._kicked = True
            try:
                os.write(self._wake_w, b"\x01")
            except BlockingIOError:
                pass

    def next_deadline(self) -> float | None:
        return earliest(self.eth.next_deadline(), self.ip.next_deadline(), self.tcp.next_deadline(),
                        self.link.next_deadline(), self.dhcp.next_deadline() if self.dhcp else None)

    def _wake_deadline(self) -> float | None:
        """The loop's next wake-up: the layers' timers, or the trace's flush."""
        d = self.next_deadline()
        f = self.trace.next_flush()
        if f is not None:
            f += self.started
            d = f if d is None else min(d, f)
        return d

    def step(self, now: float | None = None, max_frames: int = 4096) -> int:
        """Process the frames the link holds and the timers due; return frames handled."""
        with self.lock:
            fresh = now is None  # the real clock: read again for every batch
            if now is None:
                now = self.clock()
            self.link.poll(now)
            handled = 0
            while handled < max_frames:
                frames = self.link.recv_batch(64)
                if not frames:
                    break
                if fresh and handled:
                    now = self.clock()
                handled += len(frames)
                if self.gro and len(frames) > 1:
                    merged = native.gro_coalesce(frames)
                    if len(merged) < len(frames):  # (segments folded into others)
                        self.trace.counters["tcp.gro_merged"] += len(frames) - len(merged)
                else:
                    merged = frames
                for frame in merged:
                    self.receive_frame(frame, now)
                if self.ip.local:
                    self.ip.deliver_local(now)
                if len(frames) < 64:
                    break  # the link had no more: no second read just to hear EAGAIN
            if self.ip.local:
                self.ip.deliver_local(now)
            self._run_timers(now)
            return handled

    def _run_timers(self, now: float) -> None:
        d = self.eth.next_deadline()
        if d is not None and d <= now:
            self.eth.on_timer(now)
        d = self.ip.next_deadline()
        if d is not None and d <= now:
            self.ip.on_timer(now)
        d = self.tcp.next_deadline()
        if d is not None and d <= now:
            self.tcp.on_timer(now)
        if self.dhcp is not None:
            self.dhcp.on_timer(now)  # (nothing before its deadline)
        if self.ip.local:
            self.ip.deliver_local(now)

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.link.fileno(), selectors.EVENT_READ, "link")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        busy_until = 0.0
        try:
            while not self._closed:
                if busy_until and self.clock() < busy_until:
                    # Busy polling: read the link again at once (step runs the
                    # timers too), without select or the deadlines' sums.
                    if self.step():
                        busy_until = self.clock() + self.busy_poll
                    self.trace.flush_due(self.clock() - self.started)
                    continue
                with self.lock:
                    deadline = self._wake_deadline()
                    self._kicked = False
                    now = self.clock()
                    timeout = 1.0 if deadline is None else min(1.0, max(0.0, deadline - now))
                    self._sleep_until = now + timeout
                for key, _ in sel.select(timeout):
                    if key.data == "wake":
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                if self._closed:
                    break
                if self.step() and self.busy_poll:
                    busy_until = self.clock() + self.busy_poll
                self.trace.flush_due(self.clock() - self.started)
        except Exception as e:  # pragma: no cover - a bug; keep it visible
            self.trace.drop("link", "loop_crashed", error=repr(e))
            raise
        finally:
            sel.close()

    # -- shutdown --------------------------------------------------------------

    def close(self, grace: float = 1.0) -> None:
        """Close every connection (FIN, then RST for what is still open after
        ``grace`` seconds), stop the thread, flush the trace, close the link."""
        if self._closed:
            return
        if self._thread is not None and grace > 0:
            self._close_gracefully(grace)
        if self.dhcp is not None:  # RELEASE (a moment for ARP to find the server)
            self.dhcp.release(self.clock(), linger=1.0 if self._thread is not None else 0.0)
        with self.lock:
            self.tcp.close_all(self.clock())
            self._closed = True
            self.trace.event("link", "down")
        try:
            os.write(self._wake_w, b"\x01")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.trace.on_unflushed = None  # before the pipe's fd can be reused
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._flush_tx(wait=True)
        with self._tx_lock:  # a writer still in its last frames is done first
            self.trace.flush()
            if self._close_link:
                self.link.close()
        sink = self.trace.sink
        if sink is not None and hasattr(sink, "name") and sink not in (sys.stderr, sys.stdout):
            try:
                if not sink.closed and getattr(sink, "fileno", None) and sink.fileno() > 2:
                    sink.close()
                    self.trace.sink = None  # a socket closed later writes nowhere, not raises
            except (OSError, ValueError):
                pass

    def _close_gracefully(self, grace: float) -> None:
        from stack.tcp.states import CLOSED, LISTEN, TIME_WAIT

        def open_conns():
            return [c for c in self.tcp.connections() if c.state not in (CLOSED, TIME_WAIT, LISTEN)]

        with self.lock:
            for conn in open_conns():
                conn.close(self.clock())
            self.kick()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self.lock:
                if not open_conns():
                    return
            time.sleep(0.01)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Stack {int2ip(self.address)}/{self.prefix_len} mac {mac2str(self.mac)}>"
