"""``stack ss``: the stack's sockets printed the way iproute2's ``ss`` prints them.

Formatting only: the input is the list of socket dicts that
:func:`stack.live.connections` makes (also what the control socket answers).

The table follows ``ss`` (iproute2 6.x) column for column: ``Netid`` when
both TCP and UDP are shown, ``State`` unless one state alone was asked for,
``Recv-Q``, ``Send-Q``, the local and peer address right-aligned up to their
``:`` with the port left-aligned after it, and ``Process``; each column as
wide as its widest cell (header included), one space before ``State``,
``Recv-Q``, ``Send-Q`` and each address. Which sockets are listed is ss's
choice too: without ``-l``/``-a`` the connected ones (not SYN-RECV and
TIME-WAIT, which ss keeps for ``-a`` and ``state``), ``-l`` the listening
ones (and unconnected UDP), ``-a`` all, ``state NAME`` (repeatable) exactly
those states.

``-i`` adds ss's indented second line for each TCP connection: ``ts``,
``sack``, the congestion control, ``wscale:SND,RCV``, ``rto:`` and
``rtt:SRTT/RTTVAR`` in ms with µs precision, ``mss:``, ``cwnd:`` and
``ssthresh:`` in segments (ssthresh only once it is finite), ``bytes_sent:``
(retransmissions included), ``bytes_retrans:``, ``bytes_acked:``,
``bytes_received:``, ``segs_out:``, ``segs_in:``,
``retrans:NOW/TOTAL`` (NOW: the retransmission timer's expiries since the
last new ACK; TOTAL: segments sent again), ``rcv_wnd:`` and ``snd_wnd:``.
Figures that are 0 are left out, as ss does. ``-o`` (also implied by
``-i``) shows the pending timer after the peer, like ``timer:(on,180ms,0)``.
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass, field
from typing import Any

# RFC 9293 state names -> the names ss prints.
SS_STATE = {
    "ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECEIVED": "SYN-RECV",
    "FIN_WAIT_1": "FIN-WAIT-1", "FIN_WAIT_2": "FIN-WAIT-2", "CLOSE_WAIT": "CLOSE-WAIT",
    "LAST_ACK": "LAST-ACK", "TIME_WAIT": "TIME-WAIT", "CLOSING": "CLOSING",
    "LISTEN": "LISTEN", "CLOSED": "UNCONN", "UNCONN": "UNCONN", "ESTAB": "ESTAB",
}

# ss's state filter names, each a set of ss state names. "connected" (also
# what ss lists without -l/-a) leaves out the "bucket" states, SYN-RECV and
# TIME-WAIT, as ss.c's SS_CONN does.
_ALL = {"ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT",
        "LAST-ACK", "TIME-WAIT", "CLOSING", "LISTEN", "UNCONN"}
_BUCKET = {"SYN-RECV", "TIME-WAIT"}
_CONNECTED = _ALL - {"LISTEN", "UNCONN"} - _BUCKET
FILTERS: dict[str, set[str]] = {
    "all": set(_ALL),
    "connected": _CONNECTED,
    "synchronized": _CONNECTED - {"SYN-SENT"},
    "bucket": set(_BUCKET),
    "big": _ALL - _BUCKET,
    "established": {"ESTAB"}, "syn-sent": {"SYN-SENT"}, "syn-recv": {"SYN-RECV"},
    "fin-wait-1": {"FIN-WAIT-1"}, "fin-wait-2": {"FIN-WAIT-2"}, "time-wait": {"TIME-WAIT"},
    "closed": {"UNCONN"}, "close-wait": {"CLOSE-WAIT"}, "last-ack": {"LAST-ACK"},
    "listening": {"LISTEN"}, "listen": {"LISTEN"}, "closing": {"CLOSING"},
}


def state_filter(name: str) -> set[str]:
    """The ss states a ``state NAME`` filter selects: ss's names
    (``time-wait``, ``established``, ``connected``, ...), the names ss prints
    (``ESTAB``, ``SYN-RECV``) or the RFC 9293 names (``TIME_WAIT``).
    Raises ValueError for anything else."""
    key = name.strip().lower().replace("_", "-")
    if key in FILTERS:
        return set(FILTERS[key])
    upper = name.strip().upper().replace("-", "_")
    if upper in SS_STATE:
        return {SS_STATE[upper]}
    shown = key.upper()
    if shown in FILTERS["all"]:
        return {shown}
    raise ValueError(f"unknown state {name!r} (one of: {', '.join(FILTERS)})")


@dataclass
class Options:
    """What ``ss`` was asked for (its flags)."""

    tcp: bool = False
    udp: bool = False
    listening: bool = False
    all: bool = False
    numeric: bool = False
    info: bool = False
    process: bool = False
    timers: bool = False
    states: list[str] = field(default_factory=list)


def selected(socks: list[dict[str, Any]], opt: Options) -> list[dict[str, Any]]:
    """The sockets ss would list for these options, in ss's order (UDP,
    then TCP listeners, then TCP connections)."""
    protos = {p for p, on in (("tcp", opt.tcp), ("udp", opt.udp)) if on} or {"tcp", "udp"}
    if opt.states:
        wanted: set[str] = set()
        for name in opt.states:
            wanted |= state_filter(name)
    elif opt.all:
        wanted = FILTERS["all"]
    elif opt.listening:
        wanted = {"LISTEN", "UNCONN"}
    else:
        wanted = _CONNECTED
    order = {"udp": 0, "tcp": 1}
    keep = [s for s in socks if s["proto"] in protos and SS_STATE[s["state"]] in wanted]
    return sorted(keep, key=lambda s: (order[s["proto"]], s["state"] != "LISTEN"))


def port_name(port: int, proto: str, numeric: bool) -> str:
    """A port as ss shows it: ``*`` for none, else its service name unless ``-n``."""
    if port == 0:
        return "*"
    return str(port) if numeric else _service(port, proto)


@functools.lru_cache(maxsize=1024)
def _service(port: int, proto: str) -> str:
    try:
        return socket.getservbyport(port, proto)
    except OSError:
        return str(port)


def ms(seconds: float) -> str:
    """Seconds as ss prints a time in ms: µs precision, ``%g``."""
    return f"{round(seconds * 1e6) / 1000:g}"


def ms_timer(seconds: float) -> str:
    """A timer's time left as ss's ``print_ms_timer`` writes it (iproute2
    6.1, the one here): ``180ms``, ``039ms``, ``59sec``, ``1.500ms`` (sic:
    seconds and ms; releases from 2024 on write ``1.500sec``), ``2min``."""
    timeout = int(seconds * 1000)
    secs, msecs = divmod(timeout, 1000)
    minutes, secs = divmod(secs, 60)
    out = ""
    if minutes:
        msecs = 0
        out = f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        out += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        out += f"{msecs:03d}ms"
    return out


def rate(bytes_per_second: float) -> str:
    """A rate as ss prints it (iproute2 ``sprint_bw``): bits per second, in K, M or G."""
    bps = bytes_per_second * 8
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if bps > scale:
            return f"{bps / scale:.1f}{unit}bps"
    return f"{bps:g}bps"


def info_line(info: dict[str, Any]) -> str:
    """ss -i's second line for one connection (tab, then `` name:value`` items)."""
    mss = max(1, int(info["mss"]))
    items = []
    if info.get("timestamps"):
        items.append("ts")
    if info.get("sack"):
        items.append("sack")
    items.append(str(info["congestion"]))
    if info.get("snd_wscale") is not None:
        items.append(f"wscale:{info['snd_wscale']},{info['rcv_wscale']}")
    items.append(f"rto:{ms(info['rto'])}")
    if info.get("srtt") is not None:
        items.append(f"rtt:{ms(info['srtt'])}/{ms(info['rttvar'])}")
    items.append(f"mss:{mss}")
    items.append(f"cwnd:{max(1, int(info['cwnd']) // mss)}")
    ssthresh = int(info["ssthresh"]) // mss
    if ssthresh < 0xFFFF:
        items.append(f"ssthresh:{ssthresh}")
    for name in ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received",
                 "segs_out", "segs_in"):
        if info.get(name):
            items.append(f"{name}:{info[name]}")
    if info.get("bbr_mode"):
        mrtt = info["bbr_min_rtt"]
        items.append(f"bbr:(bw:{rate(info['bbr_bw'])},mrtt:{mrtt * 1000 if mrtt else 0:g},"
                     f"pacing_gain:{info['bbr_pacing_gain']:g},"
                     f"cwnd_gain:{info['bbr_cwnd_gain']:g})")
    if info.get("pacing_rate"):
        items.append(f"pacing_rate {rate(info['pacing_rate'])}")
    if info.get("retransmit_retries") or info.get("retrans"):
        items.append(f"retrans:{info.get('retransmit_retries', 0)}/{info.get('retrans', 0)}")
    if info.get("sacked"):
        items.append(f"sacked:{info['sacked']}")
    items.append(f"rcv_wnd:{info['rcv_wnd']}")
    items.append(f"snd_wnd:{info['snd_wnd']}")
    return "\t " + " ".join(items)


def _process(s: dict[str, Any], opt: Options) -> str:
    """The Process cell: each item with a space before it, as ss writes them."""
    out = ""
    owner = s.get("owner")
    if opt.process and owner:
        out = f' users:(("{owner["program"]}",pid={owner["pid"]}))'
    timer = s.get("timer")
    if (opt.timers or opt.info) and timer:
        name, left, count = timer
        out += f" timer:({name},{ms_timer(left)},{count})"
    return out


def format_table(socks: list[dict[str, Any]], opt: Options) -> list[str]:
    """The lines ``ss`` prints for these sockets (header first)."""
    rows = selected(socks, opt)
    wanted = set()
    for name in opt.states:
        wanted |= state_filter(name)
    netid = len({p for p, on in (("tcp", opt.tcp), ("udp", opt.udp)) if on}) != 1
    show_state = not (len(opt.states) >= 1 and len(wanted) == 1)
    # (header, right-aligned, delimiter before it)
    cols: list[tuple[str, bool, str]] = []
    if netid:
        cols.append(("Netid", False, ""))
    if show_state:
        cols.append(("State", False, " "))
    cols += [("Recv-Q", False, " "), ("Send-Q", False, " "), ("Local Address:", True, " "),
             ("Port", False, ""), ("Peer Address:", True, " "), ("Port", False, ""),
             ("Process", False, "")]
    table: list[list[str]] = [[c[0] for c in cols]]
    for s in rows:
        cells = []
        if netid:
            cells.append(s["proto"])
        if show_state:
            cells.append(SS_STATE[s["state"]])
        (la, lp), (ra, rp) = s["local"], s["remote"]
        cells += [str(s["recv_q"]), str(s["send_q"]), f"{la}:",
                  port_name(lp, s["proto"], opt.numeric), f"{ra}:",
                  port_name(rp, s["proto"], opt.numeric), _process(s, opt)]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = []
    for n, cells in enumerate(table):
        parts = []
        for i, (cell, (_, right, delim)) in enumerate(zip(cells, cols)):
            text = cell.rjust(widths[i]) if right else cell.ljust(widths[i])
            parts.append(text if i == 0 else delim + text)
        lines.append("".join(parts))
        if n and opt.info and rows[n - 1].get("info") and rows[n - 1]["state"] != "LISTEN":
            lines.append(info_line(rows[n - 1]["info"]))
    return lines
