"""The ``paths`` metric of the end-to-end benchmark: issue 16's bad paths.

``bench/pathemu/compare.py`` runs them: for each profile, a download from the
stack (CUBIC, BBR) and from the Linux kernel (CUBIC, BBR), each through its
own path emulator, the four at the same time. This module runs it as a
subprocess (it makes and deletes its own namespaces) and renders its report
as the bench's second table: goodput per profile and column, the RTT
inflation on the rate-limited profile, and a note per column that could not
run (the stack's ``bbr`` while ``stack up --congestion bbr`` refuses it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from e2e_lib import PY, ROOT

COLUMNS = ("stack cubic", "stack bbr", "linux cubic", "linux bbr")
LABELS = {"stack cubic": "stack CUBIC", "stack bbr": "stack BBR", "linux cubic": "Linux CUBIC",
          "linux bbr": "Linux BBR"}
PROFILES = 4                # compare.PROFILES, run one after another
SETUP = 30.0                # seconds per profile beyond its download limit (namespaces, pings)


def run_paths(tmp: Path, size: int, limit: float, trials: int = 1) -> dict:
    """compare.py's JSON report for every profile (``size`` bytes a download,
    each limited to ``limit`` seconds); RuntimeError when it fails."""
    out = tmp / "paths.json"
    cmd = [PY, "-m", "bench.pathemu.compare", "--size", str(size), "--limit", str(limit),
           "--trials", str(trials), "--json", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=PROFILES * trials * (limit + SETUP))
    finally:
        if proc.poll() is None:
            # A timeout, or the bench itself stopped: SIGTERM lets compare.py
            # delete its namespaces and stop its servers and emulators.
            proc.terminate()
            try:
                proc.wait(limit + SETUP)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.returncode != 0 or not out.exists():
        tail = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise RuntimeError(f"pathemu compare: {tail}")
    return json.loads(out.read_text())


def _goodput(r: dict | None) -> str:
    if not r or "error" in r:
        return "-"
    return f"{r['mbit']:.1f}"


def _rtt(r: dict | None) -> str:
    rtt = (r or {}).get("rtt")
    if not rtt or "error" in (r or {}) or rtt.get("inflation_ms") is None:
        return "-"
    return f"+{rtt['inflation_ms']:.1f} ({rtt['idle_ms']:.1f} → {rtt['loaded_ms']:.1f})"


def paths_rows(report: dict) -> tuple[list[tuple[str, ...]], list[str]]:
    """(rows: label and one cell per column, notes: why a cell is ``-``)."""
    rows: list[tuple[str, ...]] = []
    why: dict[tuple[str, str], list[str]] = {}
    for name, entry in report.get("profiles", {}).items():
        res = entry["results"]
        rows.append((f"{name} (Mbit/s)", *(_goodput(res.get(c)) for c in COLUMNS)))
        for c in COLUMNS:
            r = res.get(c)
            if r is None:
                reason = ("the kernel offers no bbr (net.ipv4.tcp_available_congestion_control)"
                          if c == "linux bbr" else "not run")
                why.setdefault((c, reason), []).append(name)
            elif "error" in r:
                why.setdefault((c, r["error"].strip().splitlines()[-1]), []).append(name)
        if any("rtt" in r for r in res.values()):
            rows.append((f"{name}: RTT inflation, ms (idle → during)",
                         *(_rtt(res.get(c)) for c in COLUMNS)))
    every = len(report.get("profiles", {}))
    notes = [f"{LABELS[c]} `-` {'in every profile' if len(names) == every else 'in ' + ', '.join(names)}: "
             f"{reason}" for (c, reason), names in why.items()]
    return rows, notes


def paths_table(report: dict, markdown: bool = False) -> str:
    """The paths table, aligned for a terminal or as Markdown, and its notes."""
    rows, notes = paths_rows(report)
    head = (f"bad paths, {report.get('size', 0) / 1e6:g} MB curl download",
            *(LABELS[c] for c in COLUMNS))
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(COLUMNS)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(head)]
        out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
               "-|-".join("-" * w for w in widths)]
        out += [" | ".join([r[0].ljust(widths[0])]
                           + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)])
                for r in rows]
    return "\n".join(out + [f"paths: {n}" for n in notes])
