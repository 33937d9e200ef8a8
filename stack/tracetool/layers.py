"""``stack trace --layer ip|arp|icmp|udp|dhcp``: what the layers below TCP did.

* ip — datagrams fragmented on the way out (id, size, fragments and their
  offsets) and reassembled on the way in (fragments, offsets, the time from
  the first fragment to the whole datagram), and those that timed out;
* arp — resolutions: each request, the reply and the time it took, the
  failures, the requests answered for others, and the cache's changes;
* icmp — each message by name, errors with the datagram they quote, echo
  replies matched to their requests;
* udp — datagrams per socket (this stack's address and port), and those
  sent to a closed port;
* dhcp — the client's messages (DISCOVER, OFFER, REQUEST, ACK, ...), its
  state changes, the leases bound and given up, and the replies dropped.

Each view is a list of lines followed by a one-line summary; :func:`summary`
gives that line alone for the default view.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from stack.tracetool.read import duration, plural
from stack.tracetool.timeline import quote_text

VIEWS = ("ip", "arp", "icmp", "udp", "dhcp")


def _t(e: dict) -> float:
    return float(e["t"])


def _offsets(values: list) -> str:
    return ",".join(str(v) for v in values)


# -- ip -----------------------------------------------------------------------------


def ip_view(events: list[dict]) -> tuple[list[str], str]:
    lines: list[str] = []
    out_n = out_frags = in_n = in_frags = timeouts = 0
    pending: dict[tuple[str, object], list[dict]] = {}
    for e in events:
        if e["layer"] != "ip":
            continue
        kind = e["event"]
        if kind == "fragmented":
            out_n += 1
            out_frags += int(e.get("fragments", 0))
            offs = f" at offsets {_offsets(e['offsets'])}" if e.get("offsets") else ""
            lines.append(f"{_t(e):12.6f}  out id={e.get('id')} to {e.get('dst')}: "
                         f"{e.get('length')} bytes in {e.get('fragments')} fragments{offs}"
                         + (f" (MTU {e['mtu']})" if e.get("mtu") else ""))
        elif kind == "fragment":
            pending.setdefault((str(e.get("src")), e.get("id")), []).append(e)
        elif kind == "reassembled":
            frags = pending.pop((str(e.get("src")), e.get("id")), [])
            in_n += 1
            in_frags += len(frags)
            took = duration(_t(e) - _t(frags[0])) if frags else "?"
            offs = _offsets([f.get("offset") for f in frags])
            lines.append(f"{_t(e):12.6f}  in  id={e.get('id')} from {e.get('src')}: "
                         f"{plural(len(frags), 'fragment')} at offsets {offs}, reassembled "
                         f"{e.get('length')} bytes in {took}")
        elif kind == "drop" and str(e.get("reason", "")).startswith(("reassembly", "fragment",
                                                                       "too_many")):
            key = (str(e.get("src")), e.get("id"))
            frags = pending.pop(key, []) if e.get("reason") in (
                "reassembly_timeout", "reassembly_evicted") else pending.get(key, [])
            if e.get("reason") == "reassembly_timeout":
                timeouts += 1
                took = duration(_t(e) - _t(frags[0])) if frags else "?"
                have = sum(int(f.get("length", 0)) for f in frags)
                lines.append(f"{_t(e):12.6f}  in  id={e.get('id')} from {e.get('src')}: "
                             f"timed out after {took} with {plural(len(frags), 'fragment')} "
                             f"({have} bytes) at offsets {_offsets([f.get('offset') for f in frags])}")
            else:
                lines.append(f"{_t(e):12.6f}  in  id={e.get('id')}: drop {e.get('reason')}")
    for (src, ident), frags in pending.items():
        lines.append(f"{_t(frags[-1]):12.6f}  in  id={ident} from {src}: "
                     f"{plural(len(frags), 'fragment')} still waiting at the end of the trace")
    total = (f"ip: {out_n} datagrams fragmented out ({plural(out_frags, 'fragment')}), "
             f"{in_n} reassembled in ({plural(in_frags, 'fragment')}), "
             f"{plural(timeouts, 'reassembly timeout')}")
    return lines, total


# -- arp ----------------------------------------------------------------------------


def arp_view(events: list[dict]) -> tuple[list[str], str]:
    lines: list[str] = []
    asked: dict[str, float] = {}     # address -> time of the first request still open
    took: list[float] = []
    failures = answered = 0
    for e in events:
        if e["layer"] != "arp":
            continue
        kind, t = e["event"], _t(e)
        if kind == "request":
            target = str(e.get("target"))
            asked.setdefault(target, t)
            lines.append(f"{t:12.6f}  request who-has {target} (attempt {e.get('attempt', '?')})")
        elif kind == "reply_in":
            sender = str(e.get("sender"))
            since = asked.pop(sender, None)
            extra = ""
            if since is not None:
                took.append(t - since)
                extra = f": resolved in {duration(t - since)}"
            lines.append(f"{t:12.6f}  reply {sender} is-at {e.get('mac')}{extra}")
        elif kind == "request_in":
            lines.append(f"{t:12.6f}  request in: {e.get('sender')} ({e.get('mac')}) "
                         f"asks who-has {e.get('target')}")
        elif kind == "reply":
            answered += 1
            lines.append(f"{t:12.6f}  reply out to {e.get('target')}: we are its target")
        elif kind == "failed":
            failures += 1
            asked.pop(str(e.get("ip")), None)
            dropped = e.get("dropped")
            tail = f"; {plural(int(dropped), 'waiting packet')} dropped" if dropped else ""
            lines.append(f"{t:12.6f}  failed: "
                         f"{e.get('cause') or 'no ARP reply for ' + str(e.get('ip'))}{tail}")
        elif kind in ("cache_add", "cache_expire"):
            what = (f"cache add {e.get('ip')} at {e.get('mac')}" if kind == "cache_add"
                    else f"cache expire {e.get('ip')}")
            lines.append(f"{t:12.6f}  {what}")
        elif kind == "gratuitous":
            lines.append(f"{t:12.6f}  gratuitous: {e.get('ip')} is-at {e.get('mac')}")
        elif kind == "drop":
            lines.append(f"{t:12.6f}  drop {e.get('reason')}"
                         + (f" {e['ip']}" if "ip" in e else ""))
    avg = f", average {duration(sum(took) / len(took))}" if took else ""
    total = (f"arp: {plural(len(took), 'resolution')}{avg}, {plural(failures, 'failure')}, "
             f"{plural(answered, 'request')} answered")
    return lines, total


# -- icmp ---------------------------------------------------------------------------


def icmp_view(events: list[dict]) -> tuple[list[str], str]:
    lines: list[str] = []
    names: Counter[str] = Counter()
    echo_out: dict[tuple[object, object, object], float] = {}
    for e in events:
        layer, kind, t = e["layer"], e["event"], _t(e)
        if layer == "icmp" and kind in ("in", "out", "error_out"):
            name = str(e.get("name") or f"type {e.get('type')} code {e.get('code')}")
            names[name] += 1
            way = f"in  from {e.get('src')}" if kind == "in" else f"out to   {e.get('dst')}"
            text = f"{t:12.6f}  {way}  {name}"
            if "seq" in e and "quote" not in e:
                text += f" id={e.get('id')} seq={e.get('seq')} length={e.get('length')}"
                peer = e.get("src") if kind == "in" else e.get("dst")
                key = (peer, e.get("id"), e.get("seq"))
                if kind == "out" and e.get("type") == 8:
                    echo_out[key] = t
                elif kind == "in" and e.get("type") == 0 and key in echo_out:
                    text += f", {duration(t - echo_out.pop(key))} after the request"
            if e.get("mtu"):
                text += f", MTU {e['mtu']}"
            if "quote" in e:
                text += f"\n{'':12}      quoting {quote_text(e['quote'])}"
            lines.append(text)
        elif layer == "icmp" and kind == "drop":
            lines.append(f"{t:12.6f}  drop {e.get('reason')}")
        elif layer == "udp" and kind == "icmp_error":
            lines.append(f"{t:12.6f}      delivered to the UDP socket on port {e.get('port')}: "
                         f"{e.get('kind')}")
        elif layer == "tcp" and kind == "icmp":
            lines.append(f"{t:12.6f}      delivered to TCP {e.get('conn')}: {e.get('kind')}")
    total = "icmp: " + (", ".join(f"{n} {k}" for k, n in names.most_common()) or "no messages")
    return lines, total


# -- udp ----------------------------------------------------------------------------


def udp_view(events: list[dict]) -> tuple[list[str], str]:
    socks: dict[str, list[str]] = {}
    stats: dict[str, list[int]] = {}   # datagrams in, bytes in, out, bytes out
    closed: Counter[str] = Counter()
    last_in: str | None = None    # the socket the last incoming datagram was counted for
    for e in events:
        if e["layer"] != "udp":
            continue
        kind, t = e["event"], _t(e)
        if kind == "drop" and e.get("reason") == "port_closed" and last_in is not None \
                and last_in.endswith(f":{e.get('port')}"):
            # The datagram just counted found no socket: take it back.
            st = stats[last_in]
            st[0] -= 1
            st[1] -= int(socks[last_in].pop().split()[-2])
            if not socks[last_in]:
                del socks[last_in], stats[last_in]
        last_in = None
        if kind in ("in", "out"):
            local = str(e.get("dst") if kind == "in" else e.get("src"))
            peer = e.get("src") if kind == "in" else e.get("dst")
            n = int(e.get("length", 0))
            st = stats.setdefault(local, [0, 0, 0, 0])
            i = 0 if kind == "in" else 2
            st[i] += 1
            st[i + 1] += n
            arrow = "<-" if kind == "in" else "->"
            last_in = local if kind == "in" else None
            socks.setdefault(local, []).append(f"{t:12.6f}  {kind:<3} {arrow} {peer}  {n} bytes")
        elif kind == "drop":
            if e.get("reason") == "port_closed":
                closed[str(e.get("port"))] += 1
            socks.setdefault("(drops)", []).append(
                f"{t:12.6f}  drop {e.get('reason')}"
                + (f" port {e['port']} from {e.get('src')}" if "port" in e else ""))
    lines: list[str] = []
    for local, rows in socks.items():
        if local in stats:
            a = stats[local]
            lines.append(f"socket {local}: {a[0]} in ({a[1]} bytes), {a[2]} out ({a[3]} bytes)")
        else:
            lines.append("drops" + (" (closed ports, answered with ICMP port unreachable: "
                                    + ", ".join(f"port {p} x{n}" for p, n in closed.items()) + ")"
                                    if closed else ""))
        lines.extend("  " + r for r in rows)
    n_in = sum(a[0] for a in stats.values())
    n_out = sum(a[2] for a in stats.values())
    total = (f"udp: {plural(len(stats), 'socket')}, {n_in} datagrams in, {n_out} out, "
             f"{sum(closed.values())} to closed ports")
    return lines, total


# -- dhcp ---------------------------------------------------------------------------


def dhcp_view(events: list[dict]) -> tuple[list[str], str]:
    lines: list[str] = []
    messages: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    last = "no lease"
    for e in events:
        if e["layer"] != "dhcp":
            continue
        kind, t = e["event"], _t(e)
        if kind in ("send", "receive"):
            messages[str(e.get("message"))] += 1
            arrow = "->" if kind == "send" else "<-"
            where = (f"to {e.get('dst')}" + (f" ciaddr {e['ciaddr']}" if e.get("ciaddr") not in
                                              (None, "0.0.0.0") else "")
                     + (f" asking {e['requested']}" if "requested" in e else "")
                     if kind == "send" else
                     f"yiaddr {e.get('yiaddr')} from {e.get('server')}")
            lines.append(f"{t:12.6f}  {arrow} {e.get('message'):<8} xid {e.get('xid')}  {where}")
        elif kind == "state":
            lines.append(f"{t:12.6f}  {e.get('from')} -> {e.get('to')} ({e.get('cause')})")
        elif kind == "bound":
            last = f"bound {e.get('address')}"
            dns = ",".join(map(str, e.get("dns") or [])) or "-"
            lines.append(f"{t:12.6f}  {'renewed' if e.get('renewal') else 'bound'} "
                         f"{e.get('address')} router {e.get('router')} dns {dns} "
                         f"lease {e.get('lease')} s (T1 {e.get('t1')}, T2 {e.get('t2')})")
        elif kind == "unbound":
            last = f"gave up {e.get('address')} ({e.get('reason')})"
            lines.append(f"{t:12.6f}  gave up {e.get('address')}: {e.get('reason')}")
        elif kind == "drop":
            drops[str(e.get("reason"))] += 1
            lines.append(f"{t:12.6f}  drop {e.get('reason')}"
                         + (f" ({e['message']} xid {e.get('xid')})" if "message" in e else ""))
    sent = ", ".join(f"{n} {name}" for name, n in messages.items()) or "no messages"
    n = sum(drops.values())
    total = f"dhcp: {sent}; {last}; {n} {'reply' if n == 1 else 'replies'} dropped"
    return lines, total


_VIEWS: dict[str, Callable[[list[dict]], tuple[list[str], str]]] = {
    "ip": ip_view, "arp": arp_view, "icmp": icmp_view, "udp": udp_view, "dhcp": dhcp_view}

_LAYERS_OF = {"ip": ("ip",), "arp": ("arp",), "icmp": ("icmp",), "udp": ("udp",),
              "dhcp": ("dhcp",)}


def has_events(events: list[dict], layer: str) -> bool:
    return any(e["layer"] in _LAYERS_OF[layer] for e in events)


def layer_view(events: list[dict], layer: str) -> str:
    """The ``--layer`` view: the lines, then the summary."""
    lines, total = _VIEWS[layer](events)
    head = f"{layer} layer"
    if not lines:
        return f"{head}: no events\n{total}"
    return "\n".join([head, *lines, total])


def summary(events: list[dict], layer: str) -> str:
    """The one-line summary of ``layer`` (for the default view)."""
    return _VIEWS[layer](events)[1]
