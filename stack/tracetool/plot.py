"""``stack trace --plot``: the time-sequence graph and the window and RTT beneath."""

from __future__ import annotations

from typing import Any, Iterable

from stack.tracetool import bbr
from stack.tracetool.read import HUGE_SSTHRESH, MASK

# How the plot shades BBR's phases.
PHASE_COLOURS = {"STARTUP": "tab:red", "DRAIN": "tab:orange", "PROBE_BW up": "tab:green",
                 "PROBE_BW down": "tab:olive", "PROBE_BW cruise": "tab:gray",
                 "PROBE_RTT": "tab:blue"}


# -- plot ---------------------------------------------------------------------------


def _rel(seq: int, base: int) -> int:
    d = (seq - base) & MASK
    return d - (1 << 32) if d >= 1 << 31 else d


def _wscale(e: dict) -> int | None:
    for opt in e.get("options") or []:
        text = str(opt)
        if text.startswith("wscale "):
            try:
                return int(text.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def plot_data(events: Iterable[dict], conn: str, direction: str | None = None,
              t_from: float | None = None, t_to: float | None = None) -> dict:
    """The numbers behind :func:`plot` for connection ``conn`` (its name).

    ``direction`` is ``"out"`` (data this stack sent), ``"in"`` (data it
    received) or None: the one that carried more bytes. Sequence numbers are
    offsets from that direction's ISN (the SYN's sequence number; the first
    data byte is 1), times are seconds since the connection's first event.
    Returns lists of tuples: ``segments`` and ``retransmissions`` as
    ``(t, seq, len)``; ``acks`` and ``window`` (ack + window, the receiver's
    right edge) as ``(t, seq)``; ``cwnd``, ``ssthresh`` (bytes) and ``srtt``
    (seconds) as ``(t, value)``. For ``"out"`` the retransmissions are the
    trace's retransmit events; for ``"in"`` the stack does not know the
    peer's, so they are the segments that start below bytes already seen.
    ``t_from``/``t_to`` (seconds since the stack started, like the trace's
    ``t``) keep the points inside that window; the sequence origin and the
    time origin stay the connection's, so a window is a zoom, not a new graph.

    BBR's model, from its ``bbr`` events (empty lists for another congestion
    control): ``bbr_bw`` (its bandwidth estimate), ``pacing_rate`` and
    ``delivery_rate`` (the latest rate sample) in bytes per second,
    ``bbr_min_rtt`` in seconds, as ``(t, value)``; ``bbr_phases`` as
    ``(start, stop, phase)``, the phase one of ``bbr.PHASES`` (PROBE_BW
    split by its pacing gain into up, down and cruise), the last running
    to the connection's last event.
    """
    evs = [e for e in events if e.get("conn") == conn and e.get("layer") == "tcp"]
    segs = [e for e in evs if e["event"] == "seg"]
    if direction is None:
        out_bytes = sum(int(e.get("len", 0)) for e in segs if e.get("dir") == "out")
        in_bytes = sum(int(e.get("len", 0)) for e in segs if e.get("dir") == "in")
        direction = "in" if in_bytes > out_bytes else "out"
    if direction not in ("in", "out"):
        raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
    back = "in" if direction == "out" else "out"
    sent = [e for e in segs if e.get("dir") == direction]
    acks = [e for e in segs if e.get("dir") == back]
    t0 = min((float(e["t"]) for e in evs), default=0.0)
    syn = next((e for e in sent if "S" in str(e.get("flags", ""))), None)
    if syn is not None:
        isn = int(syn["seq"])
    else:
        data = [int(e["seq"]) for e in sent if int(e.get("len", 0)) > 0]
        isn = (data[0] - 1) & MASK if data else 0
    # Window scaling holds only when both SYNs offered it; SYN windows are never scaled.
    back_syn = next((e for e in acks if "S" in str(e.get("flags", ""))), None)
    scale = 0
    if syn is not None and back_syn is not None:
        mine, theirs = _wscale(syn), _wscale(back_syn)
        if mine is not None and theirs is not None:
            scale = theirs
    result: dict = {"conn": conn, "direction": direction, "t0": t0, "isn": isn,
                    "segments": [], "retransmissions": [], "acks": [], "window": [],
                    "cwnd": [], "ssthresh": [], "srtt": [], "bbr_bw": [], "pacing_rate": [],
                    "delivery_rate": [], "bbr_min_rtt": [], "bbr_phases": []}
    for e in sent:
        n = int(e.get("len", 0))
        if n > 0:
            result["segments"].append((float(e["t"]) - t0, _rel(int(e["seq"]), isn), n))
    for e in acks:
        flags = str(e.get("flags", ""))
        if "." not in flags or "R" in flags:
            continue
        t = float(e["t"]) - t0
        ack = _rel(int(e["ack"]), isn)
        win = int(e.get("win", 0)) << (0 if "S" in flags else scale)
        result["acks"].append((t, ack))
        result["window"].append((t, ack + win))
    if direction == "out":
        result["retransmissions_from"] = "retransmit events"
        for e in evs:
            if e["event"] == "retransmit":
                result["retransmissions"].append(
                    (float(e["t"]) - t0, _rel(int(e.get("seq", isn)), isn), int(e.get("len", 0))))
    else:
        result["retransmissions_from"] = "repeated sequence numbers"
        top = None
        for t, seq, n in result["segments"]:
            if top is not None and seq < top:
                result["retransmissions"].append((t, seq, n))
            top = seq + n if top is None else max(top, seq + n)
    for e in evs:
        t = float(e["t"]) - t0
        if e["event"] == "cwnd":
            if "cwnd" in e:
                result["cwnd"].append((t, int(e["cwnd"])))
            if "ssthresh" in e and int(e["ssthresh"]) < HUGE_SSTHRESH:
                result["ssthresh"].append((t, int(e["ssthresh"])))
        elif e["event"] == "rtt" and "srtt" in e:
            result["srtt"].append((t, float(e["srtt"])))
        elif e["event"] == "bbr":
            for key, field in (("bbr_bw", "bbr_bw"), ("pacing_rate", "pacing_rate"),
                               ("delivery_rate", "delivery_rate")):
                if isinstance(e.get(field), (int, float)):
                    result[key].append((t, float(e[field])))
            if isinstance(e.get("bbr_min_rtt"), (int, float)):
                result["bbr_min_rtt"].append((t, float(e["bbr_min_rtt"])))
    end = max((float(e["t"]) for e in evs), default=t0)
    result["bbr_phases"] = [(a - t0, b - t0, p) for a, b, p in bbr.spans(evs, end)]
    result["window_s"] = (t_from, t_to)
    if t_from is not None or t_to is not None:
        lo = -float("inf") if t_from is None else t_from - t0
        hi = float("inf") if t_to is None else t_to - t0
        for key in ("segments", "retransmissions", "acks", "window", "cwnd", "ssthresh", "srtt",
                    "bbr_bw", "pacing_rate", "delivery_rate", "bbr_min_rtt"):
            result[key] = [p for p in result[key] if lo <= p[0] <= hi]
        result["bbr_phases"] = [(max(a, lo), min(b, hi), p) for a, b, p in result["bbr_phases"]
                                if b >= lo and a <= hi]
    return result


def plot(data: dict, out: str, title: str | None = None) -> None:
    """Draw :func:`plot_data`'s result into the PNG ``out`` (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    model = bool(data.get("bbr_phases") or data.get("bbr_bw"))
    if model:
        fig = Figure(figsize=(11, 10), dpi=100)
        FigureCanvasAgg(fig)
        top, bottom, under = fig.subplots(3, 1, sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1.3, 1.3]})
    else:
        fig = Figure(figsize=(11, 8), dpi=100)
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    segs = data["segments"]
    rex = data["retransmissions"]
    who = "this stack" if data["direction"] == "out" else "the peer"
    if segs:
        top.vlines([t for t, _, _ in segs], [s for _, s, _ in segs],
                   [s + n for _, s, n in segs], color="tab:blue", linewidth=1.2)
        top.plot([t for t, _, _ in segs], [s + n for _, s, n in segs], linestyle="none",
                 marker="_", markersize=4, color="tab:blue",
                 label=f"data sent by {who} ({len(segs)} segments)")
    if data["acks"]:
        top.step([t for t, _ in data["acks"]], [a for _, a in data["acks"]], where="post",
                 color="tab:green", linewidth=1, label="ACK (cumulative)")
    if data["window"]:
        top.step([t for t, _ in data["window"]], [w for _, w in data["window"]], where="post",
                 color="tab:orange", linewidth=1, label="receive window edge (ack + win)")
    if rex:
        top.vlines([t for t, _, _ in rex], [s for _, s, _ in rex],
                   [s + max(n, 1) for _, s, n in rex], color="tab:red", linewidth=2.5)
        top.plot([t for t, _, _ in rex], [s for _, s, _ in rex], linestyle="none", marker="x",
                 markersize=7, color="tab:red",
                 label=f"retransmission ({len(rex)}, from {data['retransmissions_from']})")
    top.set_ylabel("sequence offset from ISN")
    top.yaxis.set_major_formatter(EngFormatter(unit="B"))
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    total = sum(n for _, _, n in segs)
    top.set_title(title or f"{data['conn']}: {total} bytes sent by {who}, "
                  f"{len(rex)} retransmissions", fontsize="medium")
    if data["cwnd"]:
        bottom.step([t for t, _ in data["cwnd"]], [c / 1024 for _, c in data["cwnd"]],
                    where="post", color="tab:purple", label="cwnd")
    if data["ssthresh"]:
        bottom.step([t for t, _ in data["ssthresh"]], [c / 1024 for _, c in data["ssthresh"]],
                    where="post", color="tab:gray", linestyle="--", label="ssthresh")
    bottom.set_ylabel("KB")
    bottom.set_ylim(bottom=0)
    bottom.ticklabel_format(axis="y", useOffset=False, style="plain")
    if not model:
        bottom.set_xlabel("time since the connection's first event (s)")
    bottom.grid(True, alpha=0.3)
    rtt_ax = bottom.twinx()
    if data["srtt"]:
        rtt_ax.plot([t for t, _ in data["srtt"]], [r * 1000 for _, r in data["srtt"]],
                    color="tab:cyan", linewidth=1, label="smoothed RTT")
    if model and data.get("bbr_min_rtt"):
        mins = data["bbr_min_rtt"]
        rtt_ax.step([t for t, _ in mins], [r * 1000 for _, r in mins], where="post",
                    color="tab:brown", linewidth=1, linestyle=":", label="BBR min-RTT")
    rtt_ax.set_ylabel("srtt, min-RTT (ms)" if model else "srtt (ms)")
    rtt_ax.set_ylim(bottom=0)
    handles, labels = bottom.get_legend_handles_labels()
    h2, l2 = rtt_ax.get_legend_handles_labels()
    if handles or h2:
        bottom.legend(handles + h2, labels + l2, loc="upper right", fontsize="small")
    if model:
        _draw_model(under, data)
    fig.tight_layout()
    fig.savefig(out, format="png")


def _draw_model(ax: Any, data: dict) -> None:
    """BBR's panel: its phases shaded and named, its bandwidth estimate,
    pacing rate and delivery-rate samples in Mbit/s."""
    seen: set[str] = set()
    for a, b, p in data["bbr_phases"]:
        ax.axvspan(a, b, color=PHASE_COLOURS.get(p, "tab:gray"), alpha=0.15, linewidth=0,
                   label=None if p in seen else p)
        seen.add(p)
    mbit = 8 / 1e6
    if data["delivery_rate"]:
        ax.plot([t for t, _ in data["delivery_rate"]], [r * mbit for _, r in data["delivery_rate"]],
                linestyle="none", marker=".", markersize=3, color="tab:gray",
                label="delivery rate (sample)")
    if data["bbr_bw"]:
        ax.step([t for t, _ in data["bbr_bw"]], [r * mbit for _, r in data["bbr_bw"]],
                where="post", color="tab:green", linewidth=1.5, label="bandwidth estimate (max)")
    if data["pacing_rate"]:
        ax.step([t for t, _ in data["pacing_rate"]], [r * mbit for _, r in data["pacing_rate"]],
                where="post", color="tab:red", linewidth=1, label="pacing rate")
    ax.set_ylabel("BBR (Mbit/s)")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time since the connection's first event (s)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="x-small", ncol=3)
