"""Side by side through the path emulator: a curl download (20 MB by default,
sha256 checked) from the stack and from the Linux kernel (CUBIC and BBR), each
over its own ``Path`` with its own emulator instance, all at the same time,
for each of issue 16's profiles. ``scripts/bench --only paths`` runs it
(``bench/e2e_paths.py``, 5 MB downloads there).

    python -m bench.pathemu.compare [--size BYTES] [--only NAME,...] [--columns COL,...]
                                    [--json FILE]

Run as root in a namespace of its own (``unshare --net``); every namespace
it makes is deleted when it ends. Columns: the stack with each congestion
control ``stack up --congestion`` accepts of ``cubic`` and ``bbr`` (one it
refuses shows as ``-`` with its reason in the notes), Linux ``cubic`` and, if
``net.ipv4.tcp_available_congestion_control`` lists it, ``bbr`` (chosen by the
server's route to the client, ``ip route ... congctl``). The kernel's server is
Python's ``http.server`` on a file of the same bytes the stack's
``--serve http:80`` answers for ``/bytes/N`` (byte i is i % 251).

Besides goodput, each column records the pure ACKs the server sent (counted
by its emulator), the stack's own counters of interest (``COUNTERS``, from
its control socket once the download is done), and, on a profile with a rate
limit, the RTT inflation: ICMP echo RTTs from the client through the path,
idle before the download and every 100 ms during it (median and p90, and the
loaded median less the idle one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench.pathemu.core import Profile
from bench.pathemu.topo import ROOT, Path, wait_for

PROFILES = {
    "10ms-1%loss": Profile(delay=10, loss=0.01),
    "20±5ms-0.5%loss-2%reorder": Profile(delay=20, jitter=5, loss=0.005, reorder=0.02),
    "5ms-5%loss": Profile(delay=5, loss=0.05),
    "50Mbit-100pkt-20ms": Profile(delay=20, rate=50, queue=100),
}
PORT = 8080
STACK_PYTHON = sys.executable
# The stack's counters a column keeps (``stack stats`` names).
COUNTERS = ("tcp.out_segs", "tcp.retrans_segs", "tcp.drop.paws", "tcp.paws_ack_skipped",
            "tcp.paws_old_ack", "tcp.paws_disordered_ack", "tcp.challenge_acks")
PING_EVERY = 0.1       # seconds between echo requests during the download
IDLE_PINGS = 5


def pattern(size: int) -> bytes:
    block = bytes(range(251))
    return (block * (size // 251 + 1))[:size]


def curl(path: Path, key: str, url: str, out: str, limit: float) -> dict:
    done = path.at(key, "curl", "-s", "-o", out, "--max-time", str(limit), "-w",
                   "%{http_code} %{size_download} %{time_total}", url, check=False)
    fields = done.stdout.split()
    if done.returncode or len(fields) != 3 or fields[0] != "200":
        return {"error": f"curl exit {done.returncode}: {done.stdout.strip()}"}
    size, seconds = int(fields[1]), float(fields[2])
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.unlink(out)
    return {"bytes": size, "seconds": seconds, "mbit": round(size * 8 / seconds / 1e6, 2),
            "sha256": digest}


def rtts(text: str) -> list[float]:
    """The RTTs (ms) in ``ping``'s output."""
    return [float(v) for v in re.findall(r"time=([0-9.]+) ms", text)]


class RttProbe:
    """ICMP echo RTTs from namespace ``key`` to ``host`` through the path:
    ``idle()`` before the download, ``start()`` and ``stop()`` around it;
    ``summary()`` the figures (None where no echo came back)."""

    def __init__(self, path: Path, key: str, host: str) -> None:
        self.path, self.key, self.host = path, key, host
        self.idle_ms: list[float] = []
        self.loaded_ms: list[float] = []
        self.proc: subprocess.Popen | None = None

    def idle(self) -> None:
        done = self.path.at(self.key, "ping", "-n", "-c", str(IDLE_PINGS),
                            "-i", "0.2", "-W", "1", self.host, check=False)
        self.idle_ms = rtts(done.stdout)

    def start(self) -> None:
        self.proc = self.path.popen(self.key, "ping", "-n", "-i", str(PING_EVERY), "-W", "1",
                                    self.host, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.loaded_ms = rtts(out or "")
        self.proc = None

    def summary(self) -> dict:
        def med(v: list[float]) -> float | None:
            return round(statistics.median(v), 2) if v else None

        def p90(v: list[float]) -> float | None:
            return round(sorted(v)[int(0.9 * (len(v) - 1))], 2) if v else None

        idle, loaded = med(self.idle_ms), med(self.loaded_ms)
        return {"idle_ms": idle, "loaded_ms": loaded, "loaded_p90_ms": p90(self.loaded_ms),
                "samples": len(self.loaded_ms),
                "inflation_ms": round(loaded - idle, 2) if idle is not None and loaded is not None
                else None}


def stack_counters(control_path: str) -> dict:
    """The running stack's ``COUNTERS`` (what ``stack stats`` shows), or an error."""
    from stack import control

    try:
        counters = control.request(control_path, "stats")["counters"]
    except (control.NoStack, control.ControlError) as e:
        return {"error": str(e)}
    return {k: counters.get(k, 0) for k in COUNTERS}


def reachable(path: Path, key: str, host: str, port: int) -> bool:
    with path.inside(key):
        s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def download(path: Path, key: str, url: str, out: str, limit: float,
             probe: RttProbe | None) -> dict:
    """``curl``, with the RTT probe (if any) idle before and running during it."""
    if probe is None:
        return curl(path, key, url, out, limit)
    probe.idle()
    probe.start()
    try:
        result = curl(path, key, url, out, limit)
    finally:
        probe.stop()
    result["rtt"] = probe.summary()
    return result


def kernel_column(tag: str, profile: Profile, cc: str, size: int, data_dir: str,
                  limit: float) -> dict:
    with Path(tag) as path:
        # The route's congctl picks the server's algorithm for connections to the
        # client: setting the namespace's default to one outside the host's
        # tcp_allowed_congestion_control is refused, and that list is global.
        path.at("s", "ip", "route", "add", f"{path.addresses['client']}/32", "dev", "s0",
                "congctl", cc)
        emu = path.start(profile)
        server = path.popen("s", sys.executable, "-m", "http.server", str(PORT), "--bind",
                            path.addresses["server"], "--directory", data_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_for(lambda: reachable(path, "c", path.addresses["server"], PORT), 15, 0.2):
                return {"error": "the kernel's server did not answer through the path"}
            url = f"http://{path.addresses['server']}:{PORT}/data"
            probe = RttProbe(path, "c", path.addresses["server"]) if profile.rate else None
            result = download(path, "c", url, os.path.join(data_dir, f"{tag}.out"), limit, probe)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
        result["path"] = emu.stop()["b_to_a"]          # server to client
        return result


def stack_column(tag: str, profile: Profile, cc: str, size: int, work: str,
                 limit: float) -> dict:
    with Path(tag, stack=True) as path:
        emu = path.start(profile)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        # "cubic+flight": CUBIC with --loss-window flight; "cubic+pacing": paced.
        cc, _, variant = cc.partition("+")
        extra = {"flight": ["--loss-window", "flight"], "pacing": ["--pacing"], "": []}[variant]
        proc = path.popen("e", STACK_PYTHON, "-m", "stack.cli", "up", "--tap", "tap0",
                          "--address", f"{path.addresses['stack']}/24", "--serve", "http:80",
                          "--congestion", cc, *extra, "--control", os.path.join(work, f"{tag}.ctl"),
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            up = wait_for(lambda: proc.poll() is not None or reachable(path, "s", path.addresses["stack"], 80),
                          15, 0.2)
            if proc.poll() is not None:
                return {"error": (proc.stderr.read() if proc.stderr else "").strip()
                        or f"stack up exit {proc.returncode}"}
            if not up:
                return {"error": "the stack did not answer through the path"}
            url = f"http://{path.addresses['stack']}/bytes/{size}"
            probe = RttProbe(path, "s", path.addresses["stack"]) if profile.rate else None
            result = download(path, "s", url, os.path.join(work, f"{tag}.out"), limit, probe)
            result["counters"] = stack_counters(os.path.join(work, f"{tag}.ctl"))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        result["path"] = emu.stop()["a_to_b"]          # the stack (server) to the client
        return result


def kernel_has(cc: str) -> bool:
    done = subprocess.run(["sysctl", "-n", "net.ipv4.tcp_available_congestion_control"],
                          capture_output=True, text=True, check=False)
    if cc in done.stdout.split():
        return True
    subprocess.run(["modprobe", f"tcp_{cc}"], capture_output=True, check=False)
    done = subprocess.run(["sysctl", "-n", "net.ipv4.tcp_available_congestion_control"],
                          capture_output=True, text=True, check=False)
    return cc in done.stdout.split()


def _column(results: dict, tag: str, profile: Profile, who: str, cc: str, size: int,
            work: str, limit: float) -> None:
    run = kernel_column if who == "linux" else stack_column
    try:
        results[f"{who} {cc}"] = run(tag, profile, cc, size, work, limit)
    except Exception as e:  # noqa: BLE001 - one column's failure is reported, not fatal
        results[f"{who} {cc}"] = {"error": f"{type(e).__name__}: {e}"}


COLUMNS = ("stack cubic", "stack bbr", "linux cubic", "linux bbr")
VARIANTS = ("stack cubic+flight", "stack cubic+pacing")  # on request (--columns)


def median_of(runs: list[dict]) -> dict:
    """One column's trials as one result: the median trial (its path and
    counters kept), with every trial's goodput; the first error if none ran."""
    good = sorted((r for r in runs if "error" not in r), key=lambda r: r["mbit"])
    if not good:
        return runs[0]
    pick = dict(good[(len(good) - 1) // 2])
    pick["trials"] = [r.get("mbit") for r in runs]
    return pick


def compare(names: list[str], size: int, limit: float,
            only_columns: tuple[str, ...] = COLUMNS, trials: int = 1) -> dict:
    expected = hashlib.sha256(pattern(size)).hexdigest()
    columns = [(c.split()[0], c.split()[1]) for c in only_columns
               if c != "linux bbr" or kernel_has("bbr")]
    report: dict = {"size": size, "sha256": expected, "profiles": {}, "trials": trials}
    with tempfile.TemporaryDirectory(prefix="pathemu-") as work:
        with open(os.path.join(work, "data"), "wb") as f:
            f.write(pattern(size))
        for n, name in enumerate(names):
            profile = PROFILES[name]
            runs: dict[str, list[dict]] = {f"{w} {c}": [] for w, c in columns}
            for _ in range(trials):
                results: dict = {}
                threads = [threading.Thread(target=_column, args=(
                    results, f"pc{os.getpid() % 100000}{n}{i}", profile, who, cc, size, work,
                    limit)) for i, (who, cc) in enumerate(columns)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for key, r in results.items():
                    if "sha256" in r and r["sha256"] != expected:
                        r["error"] = "sha256 mismatch"
                    runs[key].append(r)
            results = {key: median_of(rs) for key, rs in runs.items()}
            report["profiles"][name] = {"profile": profile.__dict__, "results": results}
            print(table_row(name, results, columns), file=sys.stderr, flush=True)
    report["columns"] = [f"{w} {c}" for w, c in columns]
    return report


def cell(r: dict) -> str:
    return "-" if "error" in r else f"{r['mbit']:.1f}"


def table_row(name: str, results: dict, columns: list) -> str:
    return f"| {name} | " + " | ".join(cell(results.get(f"{w} {c}", {"error": "missing"}))
                                       for w, c in columns) + " |"


def rtt_cell(r: dict) -> str:
    rtt = r.get("rtt") if "error" not in r else None
    if not rtt or rtt["inflation_ms"] is None:
        return "-"
    return f"{rtt['idle_ms']:.1f} → {rtt['loaded_ms']:.1f} (+{rtt['inflation_ms']:.1f})"


def markdown(report: dict) -> str:
    """The goodput table, the RTT table of the rate-limited profiles (if any),
    and a note per column: its error, or what its path and server did."""
    cols = report["columns"]
    lines = ["| path | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    rtt_lines: list[str] = []
    notes = []
    for name, entry in report["profiles"].items():
        res = entry["results"]
        lines.append(f"| {name} | " + " | ".join(cell(res.get(c, {"error": "missing"}))
                                                 for c in cols) + " |")
        if any("rtt" in r for r in res.values()):
            rtt_lines.append(f"| {name} | " + " | ".join(rtt_cell(res.get(c, {}))
                                                         for c in cols) + " |")
        for c in cols:
            r = res.get(c, {})
            if "error" in r:
                notes.append(f"- {name}, {c}: {r['error']}")
            elif "path" in r:
                notes.append(f"- {name}, {c}: {column_note(r)}")
    out = lines + ["", "Goodput in Mbit/s (sha256 checked)."]
    if rtt_lines:
        out += ["", "| RTT, ms: idle → during the download (+inflation) | " + " | ".join(cols)
                + " |", "|---|" + "---:|" * len(cols)] + rtt_lines
        out += ["", "ICMP echo through the same path, medians."]
    return "\n".join(out + ["", "Per column, the download direction:"] + notes)


def column_note(r: dict) -> str:
    p = r["path"]
    text = (f"trials {r['trials']} Mbit/s; " if len(r.get("trials", ())) > 1 else "") + (
            f"{p['forwarded']} frames down, {p['lost']} lost, {p['queue_drops']} queue drops, "
            f"mean added delay {p['mean_delay_ms']} ms; {p.get('pure_acks_in', '?')} pure ACKs "
            "from the server")
    k = r.get("counters")
    if k and "error" not in k:
        text += (f"; the stack dropped {k['tcp.drop.paws']} segments on PAWS and skipped "
                 f"{k['tcp.paws_ack_skipped']} of their ACKs, {k['tcp.retrans_segs']} "
                 "retransmitted")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pathemu-compare")
    p.add_argument("--size", type=int, default=20_000_000)
    p.add_argument("--only", default=",".join(PROFILES), help="profiles, comma-separated")
    p.add_argument("--limit", type=float, default=120.0, help="seconds per download")
    p.add_argument("--json", default=None)
    p.add_argument("--trials", type=int, default=1,
                   help="downloads per column and profile; the median is reported")
    p.add_argument("--columns", default=",".join(COLUMNS),
                   help="columns, comma-separated (default: all four)")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in PROFILES]
    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip())
    bad = [c for c in columns if c not in COLUMNS + VARIANTS]
    if bad or not columns:
        print(f"pathemu: error: unknown column {bad[0] if bad else args.columns!r} "
              f"(choose from {', '.join(COLUMNS)})", file=sys.stderr)
        return 2
    if args.trials < 1:
        print("pathemu: error: --trials must be at least 1", file=sys.stderr)
        return 2
    if unknown or args.size < 1:
        print(f"pathemu: error: unknown profile {unknown[0]!r} (choose from {', '.join(PROFILES)})"
              if unknown else "pathemu: error: --size must be at least 1", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("pathemu: error: run as root, in a namespace of its own (unshare --net)",
              file=sys.stderr)
        return 1
    # SIGTERM (the bench's timeout) unwinds like ^C: every ``with Path`` block
    # deletes its namespaces once its download has ended.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start = time.monotonic()
    report = compare(names, args.size, args.limit, columns, args.trials)
    report["seconds"] = round(time.monotonic() - start, 1)
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
