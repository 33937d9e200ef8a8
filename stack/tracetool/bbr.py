"""BBR's model as a connection's trace shows it: the ``bbr`` events.

A BBR connection traces ``{"event": "bbr", "bbr_mode": ..., "bbr_bw": ...,
"bbr_min_rtt": ..., "pacing_rate": ..., "bbr_pacing_gain": ...}`` once per
round trip and whenever its mode or gain changes. This module turns those
into what the views need: the phase at each point (PROBE_BW's gain cycle
split into its probe up, drain down and cruise phases), the spans between
phase changes (the plot shades them) and the one-line summary of the
timeline ("bbr: STARTUP 0.000 s → DRAIN 0.381 s → PROBE_BW 0.395 s").
"""

from __future__ import annotations

from typing import Iterable

from stack.tracetool.read import duration

PHASES = ("STARTUP", "DRAIN", "PROBE_BW up", "PROBE_BW down", "PROBE_BW cruise", "PROBE_RTT")


def events(evs: Iterable[dict]) -> list[dict]:
    """The ``bbr`` events among a connection's TCP events."""
    return [e for e in evs if e.get("layer") == "tcp" and e.get("event") == "bbr"]


def phase(e: dict) -> str:
    """A ``bbr`` event's mode, PROBE_BW named by its pacing gain: ``up``
    (above 1, probing for more bandwidth), ``down`` (below 1, draining the
    queue the probe made) or ``cruise`` (1)."""
    mode = str(e.get("bbr_mode", "?"))
    if mode != "PROBE_BW":
        return mode
    gain = float(e.get("bbr_pacing_gain", 1.0))
    return "PROBE_BW up" if gain > 1.0 + 1e-9 else "PROBE_BW down" if gain < 1.0 - 1e-9 \
        else "PROBE_BW cruise"


def spans(evs: Iterable[dict], end: float) -> list[tuple[float, float, str]]:
    """``(start, stop, phase)`` for each run of ``bbr`` events in one phase,
    the last running to ``end``; times as the events give them."""
    out: list[tuple[float, float, str]] = []
    for e in events(evs):
        t, p = float(e["t"]), phase(e)
        if out and out[-1][2] == p:
            continue
        if out:
            out[-1] = (out[-1][0], t, out[-1][2])
        out.append((t, t, p))
    if out:
        out[-1] = (out[-1][0], max(end, out[-1][0]), out[-1][2])
    return out


def mode_changes(evs: Iterable[dict]) -> list[tuple[float, str]]:
    """``(t, mode)`` at each change of BBR's mode (the gain cycle within
    PROBE_BW is not a change of mode)."""
    out: list[tuple[float, str]] = []
    for e in events(evs):
        mode = str(e.get("bbr_mode", "?"))
        if not out or out[-1][1] != mode:
            out.append((float(e["t"]), mode))
    return out


def rate(bytes_per_s: float) -> str:
    """A rate in bytes per second as ``12.3 Mbit/s`` (kbit/s below 1 Mbit/s)."""
    bits = bytes_per_s * 8
    if bits < 1e6:
        return f"{bits / 1e3:.1f} kbit/s"
    return f"{bits / 1e6:.1f} Mbit/s"


def summary_lines(evs: Iterable[dict], t0: float, most: int = 6) -> list[str]:
    """The timeline summary's lines for a BBR connection (none for another):
    its modes in order with their times since ``t0`` (PROBE_RTT, which comes
    back every ten seconds or so, counted instead), the gain cycles it ran in
    PROBE_BW, and its last bandwidth, min-RTT and pacing rate."""
    evs = events(evs)
    if not evs:
        return []
    changes = mode_changes(evs)
    main = [(t, m) for t, m in changes if m != "PROBE_RTT"]
    # Leaving PROBE_RTT for the mode it was in is no change worth naming.
    steps = [x for i, x in enumerate(main) if i == 0 or x[1] != main[i - 1][1]]
    words = [f"{m} {t - t0:.3f} s" for t, m in steps[:most]]
    if len(steps) > most:
        words.append(f"… ({len(steps) - most} more)")
    text = " → ".join(words)
    probe_rtt = [t for t, m in changes if m == "PROBE_RTT"]
    if probe_rtt:
        text += f"; PROBE_RTT ×{len(probe_rtt)} (first {probe_rtt[0] - t0:.3f} s)"
    ups = sum(1 for _, _, p in spans(evs, float(evs[-1]["t"])) if p == "PROBE_BW up")
    if ups:
        text += f"; {ups} bandwidth {'probe' if ups == 1 else 'probes'} in PROBE_BW"
    last = evs[-1]
    mrtt = last.get("bbr_min_rtt")
    model = (f"final bw {rate(float(last.get('bbr_bw', 0)))}, min-RTT "
             f"{duration(float(mrtt)) if mrtt is not None else 'none yet'}, pacing rate "
             f"{rate(float(last.get('pacing_rate', 0)))}, cwnd {int(last.get('cwnd', 0))} bytes")
    return [f"bbr       {text}", f"          {model}"]
