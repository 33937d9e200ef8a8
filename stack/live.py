"""What a running stack holds, as plain data: its sockets, neighbours and routes.

These are the views ``stack ss``, ``stack neigh`` and ``stack route`` print
(through the control socket) and that ``net.connections()``,
``net.neighbour_table()`` and ``net.routes()`` return. Every function here
takes the stack's lock only to copy what it answers with, and returns dicts
of str, int, float, bool, None and lists, so the same value goes into JSON
unchanged.

A socket is one dict::

    {"proto": "tcp" | "udp", "state": "ESTABLISHED" (RFC 9293 name; UDP:
     "UNCONN" or "ESTAB" when connected), "local": [addr, port],
     "remote": [addr, port] (["0.0.0.0", 0] for a listener or an unconnected
     UDP socket), "recv_q": int, "send_q": int,
     "owner": {"program": str, "pid": int} or None,
     "timer": [name, seconds left, count] or None,
     "info": dict or None}

``recv_q``/``send_q`` are what Linux's ``ss`` shows: bytes received and not
read, bytes written and not acknowledged; for a listener the accept queue's
length and its backlog. ``timer`` is the timer ``ss -o`` shows (``on``:
retransmission, ``persist``, ``keepalive``, ``timewait``) with the count
ss puts after it (retransmissions, probes). ``info`` is a TCP connection's
``status()`` (without ``local``/``remote``; ``timers`` as seconds left).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from stack.tcp import timers as T
from stack.tcp.states import CLOSED, TIME_WAIT
from stack.wire.eth import mac2str
from stack.wire.ipv4 import int2ip

if TYPE_CHECKING:
    from stack.runtime import Stack
    from stack.tcp.conn import TcpConnection

# Which of a connection's timers ``ss -o`` would show, in the order Linux
# reports them (the retransmission or probe timer before the socket timer).
SS_TIMERS = (("reo", "on"), ("rto", "on"), ("persist", "persist"), ("time_wait", "timewait"),
             ("fin_wait_2", "timewait"), ("keepalive", "keepalive"))


def program() -> dict[str, Any]:
    """This process as ``ss -p`` names it: its command name and pid."""
    try:
        with open("/proc/self/comm") as f:
            name = f.read().strip()
    except OSError:
        name = "python"
    return {"program": name, "pid": os.getpid()}


def _addr(pair: tuple[int, int] | None) -> list[Any]:
    if pair is None:
        return ["0.0.0.0", 0]
    return [int2ip(pair[0]), pair[1]]


def _timer(conn: TcpConnection, now: float) -> list[Any] | None:
    at = conn.timers.at
    snd = conn.sender
    counts = {"rto": snd.retries, "persist": snd.probes, "keepalive": snd.ka_probes}
    for kind, shown in SS_TIMERS:
        when = at[T.NAMES.index(kind)]
        if when is not None:
            return [shown, max(0.0, when - now), counts.get(kind, 0)]
    return None


def _info(conn: TcpConnection, now: float) -> dict[str, Any]:
    info = conn.status()
    del info["local"], info["remote"]
    info["timers"] = {k: max(0.0, t - now) for k, t in info["timers"].items()}
    info["ooo_ranges"] = [list(r) for r in info["ooo_ranges"]]
    return info


def connections(net: Stack) -> list[dict[str, Any]]:
    """Every TCP listener and connection and every bound UDP socket."""
    me = program()
    out: list[dict[str, Any]] = []
    with net.lock:
        now = net.clock()
        for lst in net.tcp.listeners():
            out.append({"proto": "tcp", "state": lst.state, "local": _addr(lst.local),
                        "remote": _addr(None), "recv_q": lst.queued(), "send_q": lst.backlog,
                        "owner": me, "timer": None, "info": None})
        for conn in net.tcp.connections():
            if conn.state == CLOSED:
                continue
            owned = (conn.listener is None and not conn.user_closed
                     and conn.state != TIME_WAIT)
            out.append({"proto": "tcp", "state": conn.state, "local": _addr(conn.local),
                        "remote": _addr(conn.remote), "recv_q": len(conn.receiver.buf),
                        "send_q": len(conn.sender.buf), "owner": me if owned else None,
                        "timer": _timer(conn, now), "info": _info(conn, now)})
        for ep in list(net.udp.bound.values()):
            out.append({"proto": "udp", "state": "ESTAB" if ep.remote else "UNCONN",
                        "local": _addr(ep.local), "remote": _addr(ep.remote),
                        "recv_q": ep.queued, "send_q": 0, "owner": me, "timer": None,
                        "info": None})
    return out


def neighbours(net: Stack) -> list[dict[str, Any]]:
    """The ARP cache as ``ip neigh`` shows it: REACHABLE while an entry is
    trusted, STALE after its lifetime (until it is confirmed or removed),
    INCOMPLETE while a request is unanswered."""
    dev = device(net)
    out: list[dict[str, Any]] = []
    with net.lock:
        now = net.clock()
        eth = net.eth
        for ip, (mac, until) in eth.cache.items():
            out.append({"dst": int2ip(ip), "dev": dev, "lladdr": mac2str(mac),
                        "state": "REACHABLE" if now < until else "STALE"})
        for ip in eth.pending:
            if ip not in eth.cache:
                out.append({"dst": int2ip(ip), "dev": dev, "lladdr": None,
                            "state": "INCOMPLETE"})
    return out


def routes(net: Stack) -> list[dict[str, Any]]:
    """The routing table as ``ip route show table all`` shows it: the default
    route (when there is a gateway), the connected subnet, and the local
    route of 127.0.0.0/8 on ``lo`` (``type`` and ``table`` "local"), through
    which every packet to one of our own addresses goes; then one entry per
    destination with a learnt path MTU (``cache``: ``mtu`` and the seconds
    until it ``expires``), as ``ip route get`` shows it."""
    dev = device(net)
    ip = net.ip
    out: list[dict[str, Any]] = []
    if ip.gateway is not None:
        out.append({"dst": "default", "via": int2ip(ip.gateway), "dev": dev})
    out.append({"dst": f"{int2ip(ip.network)}/{ip.prefix_len}", "dev": dev,
                "proto": "kernel", "scope": "link", "src": int2ip(ip.address)})
    out.append({"type": "local", "dst": "127.0.0.0/8", "dev": ip.lo.name, "table": "local",
                "proto": "kernel", "scope": "host", "src": "127.0.0.1"})
    with net.lock:
        cached = ip.pmtu.view(net.clock())
    for dst, mtu, left in cached:
        # As ``ip route get`` shows a route exception: the path MTU learnt and its time left.
        out.append({"dst": int2ip(dst), "via": None if ip.on_link(dst) else int2ip(ip.gateway or 0),
                    "dev": dev, "src": int2ip(ip.address),
                    "cache": {"mtu": mtu, "expires": int(left)}})
    return out


def device(net: Stack) -> str:
    """The name of the device under the link's wrappers (a TAP's name)."""
    name = getattr(net.link.chain()[-1], "name", None)
    return name if isinstance(name, str) else "mem0"
