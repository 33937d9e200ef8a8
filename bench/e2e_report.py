"""What the end-to-end benchmark prints: its rows and targets, the table,
and the py-spy profile summaries."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from e2e_lib import PY, ROOT

SIDES = ("stack", "kernel", "nginx")

# (key, label, unit, target as (op, value) or None, whether a ratio between
# the columns means anything). Targets: issue 15.
ROWS = (
    ("download_mtu1500", "download, MTU 1500", "Mbit/s", (">=", 1000), True),
    ("download_offload", "download, offloads", "Mbit/s", (">=", 8000), True),
    ("upload_mtu1500", "upload, MTU 1500", "Mbit/s", (">=", 1000), True),
    ("upload_offload", "upload, offloads", "Mbit/s", (">=", 5000), True),
    ("ab_close", "ab -c 20, new connection each", "req/s", (">=", 5000), True),
    ("ab_keepalive", "ab -k -c 20, keep-alive", "req/s", None, True),
    ("wrk_rps", "wrk -t2 -c50, keep-alive", "req/s", (">=", 15000), True),
    ("wrk_p50", "wrk -c50 latency p50", "us", None, True),
    ("wrk_p99", "wrk -c50 latency p99", "us", None, True),
    ("ping_median", "ping RTT median", "us", ("<=", 100), True),
    ("ping_p99", "ping RTT p99", "us", None, True),
    ("ping_median_busy", "ping RTT median, --busy-poll 5000", "us", ("<=", 40), True),
    ("conn_rate", "new connections, Python client", "conn/s", None, True),
    ("trace_untraced_mbps", "download, untraced (next to the traced)", "Mbit/s", None, False),
    ("trace_state_mbps", "download, --trace-level state", "Mbit/s", None, False),
    ("trace_state_ratio", "traced/untraced, --trace-level state", "ratio", (">=", 0.8), False),
    ("trace_all_mbps", "download, --trace (all) --pcap", "Mbit/s", None, False),
    ("trace_all_ratio", "traced/untraced, --trace (all) --pcap", "ratio", (">=", 0.5), False),
    ("concurrent_echo", "concurrent held, echo service", "conns", None, True),
    ("concurrent_listener", "concurrent held, bare listener", "conns", (">=", 100000), True),
    ("hold_rate", "held connections opened per second", "conn/s", None, True),
    # The kernel's socket memory is in no process's RSS: its figure is the
    # server process's Python objects only, so no ratio.
    ("rss_listener", "server RSS per held conn", "KiB", ("<=", 4), False),
)


# Blocking calls that py-spy does not always see as idle: left out of the
# "busy" view so that it ranks work, not waiting.
WAITS = ("Condition.wait", "EpollSelector.select", "PollSelector.select", "Event.wait",
         "Thread.join", "wait_stop")


def parse_profile(text: str, top: int = 15, skip: tuple[str, ...] = ()) -> dict:
    """py-spy raw (collapsed) stacks -> the functions with the most own samples.

    Samples whose innermost frame is a function named in ``skip`` are dropped
    (and counted in ``skipped``)."""
    own: Counter = Counter()
    skipped = 0
    total_incl: Counter = Counter()
    samples = 0
    prefixes = (str(ROOT) + "/", str(Path(PY).parent.parent) + "/")
    for line in text.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        n = int(count)
        frames = []
        for frame in stack_text.split(";"):
            for p in prefixes:
                frame = frame.replace(p, "")
            frames.append(re.sub(r"/usr/lib/python3[.0-9]*/|/usr/local/lib/python3[.0-9]*/",
                                 "", frame))
        if frames[-1].split(" (", 1)[0] in skip:
            skipped += n
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total_incl[frame] += n
    return {
        "samples": samples,
        "skipped": skipped,
        "own": [{"function": f, "samples": n, "percent": round(100 * n / samples, 1)}
                for f, n in own.most_common(top)] if samples else [],
        "inclusive": [{"function": f, "samples": n, "percent": round(100 * n / samples, 1)}
                      for f, n in total_incl.most_common(top + 10)] if samples else [],
    }


def fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("conns", "conn/s", "Mbit/s", "req/s"):
        return f"{value:,.0f}"
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "us" and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _ratio(a, b, comparable: bool) -> str:
    return f"{a / b:.2f}" if comparable and a is not None and b else "n/a"


def table(results: dict, markdown: bool = False) -> str:
    """The rows measured, aligned for a terminal, or as a Markdown table."""
    head = ("metric", "stack", "kernel, same app", "nginx", "stack/kernel", "stack/nginx",
            "target", "met")
    rows = []
    for key, label, unit, target, comparable in ROWS:
        if key not in results:
            continue
        r = results[key]
        s, k, n = (r.get(side) for side in SIDES)
        tgt, met = "", ""
        if target is not None:
            op, goal = target
            tgt = f"{op.replace('>=', '≥').replace('<=', '≤')} {goal:,}"
            if s is not None:
                met = "yes" if (s >= goal if op == ">=" else s <= goal) else "no"
        rows.append((f"{label} ({unit})", fmt(s, unit), fmt(k, unit), fmt(n, unit),
                     _ratio(s, k, comparable), _ratio(s, n, comparable), tgt, met))
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * 5 + "---:|:-:|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
           "-|-".join("-" * w for w in widths)]
    for r in rows:
        out.append(" | ".join([r[0].ljust(widths[0])]
                              + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]))
    return "\n".join(out)


PROFILE_VIEWS = {"busy": "busy threads, waits left out (system calls such as the TAP write in)",
                 "gil": "the thread holding the GIL (the Python work)"}


def profile_text(profiles: dict) -> str:
    lines = []
    for name, views in profiles.items():
        for view, prof in views.items():
            lines.append(f"\nstack up ({name}) during a download, top functions by own time, "
                         f"{PROFILE_VIEWS[view]} ({prof['samples']} samples):")
            for i, row in enumerate(prof["own"], 1):
                lines.append(f"{i:3d}. {row['percent']:5.1f}%  {row['function']}")
    return "\n".join(lines)


