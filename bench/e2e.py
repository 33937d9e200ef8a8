"""End-to-end benchmark: the stack against the Linux kernel and nginx, side by side.

Run it through ``scripts/bench`` (which installs what it needs and enters a
private network namespace first), or as root::

    .venv/bin/python bench/e2e.py [--only download,upload,http,ping,rate,trace,concurrent,paths]
                                  [--profile] [--json OUT]

Every frame stays inside network namespaces this run creates and removes,
even on error or SIGTERM:

* ``stackbench-k1-PID`` and ``stackbench-k2-PID``: the kernel baseline, a
  veth pair 198.51.100.1/24 (servers) -- 198.51.100.2/24 (clients, and
  .11-.30 for the held connections). The servers are the project's own
  services on kernel sockets (``KernelNet``), so both sides run the same HTTP
  and echo code, and nginx on port 8080 (its configuration and files in this
  run's temporary folder).
* ``stackbench-s-PID``: ``stack up`` on a TAP, 192.0.2.1/24 kernel side (the
  clients, and .11-.30 for the held connections) and 192.0.2.2/24 the stack
  (the server).

Metrics (each one a bounded number of transfers or a bounded time):

* download / upload: ``curl`` of ``/bytes/N`` and ``curl -T`` (PUT) of an
  N-byte file, best of 3, at MTU 1500 without offloads and with offloads
  (downloads from nginx too);
* http: ``ab -c 20`` without and with keep-alive, ``wrk -t2 -c50 --latency``,
  against all three servers;
* ping: ``ping -c 200 -i 0.002``, median and p99 of the per-packet times,
  plain and with ``--busy-poll``;
* rate: new connections per second, a few Python client threads each opening
  a connection, sending ``GET /bytes/1``, reading the answer and closing;
* trace: the stack's download with ``--trace-level state`` and with
  ``--trace`` (all) ``--pcap``, each against an untraced one next to it;
* concurrent: K connections opened (non-blocking, from several client
  addresses) and held, then counted still open, with the server process's
  RSS growth per connection; once against the echo service and once against
  a bare listener that only accepts (up to 100,000);
* paths: issue 16's bad paths through the path emulator
  (``bench/pathemu/compare.py``, run by ``bench/e2e_paths.py``): a download
  from the stack (CUBIC, BBR) and from Linux (CUBIC, BBR) per profile, the
  four at the same time, each through its own emulator; goodput, and the RTT
  inflation on the rate-limited profile. Its own table.

The script is also its own helper: the underscore subcommands (``_serve-kernel``,
``_hold-stack``, ``_rate-client``, ``_hold-client``, in ``bench/e2e_procs.py``)
are the processes it starts inside the namespaces.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from e2e_lib import (
    ECHO_PORT, HOLD_PORT, HTTP_PORT, KERNEL_CLIENT, KERNEL_SERVER, MB, NGINX_PORT, NS_PREFIX, PY,
    ROOT, SELF, STACK_ADDR, STACK_HOST, client_addresses, in_ns, last_held, link_counters, log,
    percentile, rss_kib, run,
)
from e2e_paths import paths_table, run_paths
from e2e_load import ab_cmd, nginx_cmd, nginx_conf, nginx_files, parse_ab, parse_wrk, wrk_cmd
from e2e_procs import (
    cmd_hold_client, cmd_hold_kernel, cmd_hold_stack, cmd_rate_client, cmd_serve_kernel,
)
from e2e_report import ROWS, SIDES, WAITS, parse_profile, profile_text, table

METRICS = ("download", "upload", "http", "ping", "rate", "trace", "concurrent", "paths")

# ---------------------------------------------------------------- the orchestrator


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.tag = str(os.getpid())
        self.k1 = f"{NS_PREFIX}k1-{self.tag}"
        self.k2 = f"{NS_PREFIX}k2-{self.tag}"
        self.s = f"{NS_PREFIX}s-{self.tag}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = Path(tempfile.mkdtemp(prefix="stackbench-", dir=shm))
        self.results: dict[str, dict] = {}
        self.notes: list[str] = []
        self.kernel_pid: int | None = None
        self.nginx: subprocess.Popen | None = None
        self.kernel_holders: list[tuple[str, int]] = []
        self.sources = {"kernel": client_addresses(KERNEL_CLIENT, args.client_addresses),
                        "stack": client_addresses(STACK_HOST, args.client_addresses)}
        self.has_ethtool = shutil.which("ethtool") is not None
        self.offload_flag = "--offload" in run([PY, "-m", "stack", "up", "--help"]).stdout

    # -- lifecycle ------------------------------------------------------------

    def netns_add(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        ns = in_ns(name)
        run([*ns, "ip", "link", "set", "lo", "up"])
        run([*ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])
        run([*ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        run([*ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=False)

    def setup(self, metrics: list[str]) -> None:
        for name in (self.k1, self.k2, self.s):
            self.netns_add(name)
        va, vb = f"sbk1-{self.tag}"[:15], f"sbk2-{self.tag}"[:15]
        run(["ip", "link", "add", va, "netns", self.k1, "type", "veth",
             "peer", "name", vb, "netns", self.k2])
        for ns, dev, addr in ((self.k1, va, KERNEL_SERVER), (self.k2, vb, KERNEL_CLIENT)):
            run([*in_ns(ns), "ip", "addr", "add", f"{addr}/24", "dev", dev])
            run([*in_ns(ns), "ip", "link", "set", dev, "mtu", "1500", "up"])
        self.veths = ((self.k1, va), (self.k2, vb))
        if "concurrent" in metrics:
            for addr in self.sources["kernel"]:
                run([*in_ns(self.k2), "ip", "addr", "add", f"{addr}/24", "dev", vb])
        proc = self.start([*in_ns(self.k1), PY, SELF, "_serve-kernel", "--address", KERNEL_SERVER],
                          "kernel-server")
        self.wait_ready(proc, "kernel-server", "kernel-server: up")
        self.kernel_pid = proc.pid
        if "concurrent" in metrics:
            for i in range(self.processes()):
                name = f"hold-kernel-{i}"
                proc = self.start([*in_ns(self.k1), PY, SELF, "_hold-kernel", "--address",
                                   KERNEL_SERVER], name)
                self.wait_ready(proc, name, "hold-kernel: up")
                self.kernel_holders.append((name, proc.pid))
        if {"download", "http"} & set(metrics):
            self.start_nginx()
        run([*in_ns(self.k2), "ping", "-c", "2", "-i", "0.05", "-W", "1", KERNEL_SERVER])

    def start_nginx(self) -> None:
        """nginx on the kernel server's address, port 8080, serving /bytes/N."""
        if shutil.which("nginx") is None:
            self.notes.append("nginx is not installed (apt-get install nginx-light): "
                              "its column is n/a")
            return
        nginx_files(self.tmp, [1, self.args.kernel_mb * MB])
        conf = nginx_conf(self.tmp, KERNEL_SERVER, NGINX_PORT)
        proc = self.start([*in_ns(self.k1), *nginx_cmd(conf, self.tmp)], "nginx")
        end = time.monotonic() + 10
        url = f"http://{KERNEL_SERVER}:{NGINX_PORT}/bytes/1"
        while time.monotonic() < end and proc.poll() is None:
            r = run([*in_ns(self.k2), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     "--max-time", "1", url], check=False)
            if r.stdout == "200":
                self.nginx = proc
                return
            time.sleep(0.1)
        log_text = (self.tmp / "nginx-error.log").read_text()[-500:] if (
            self.tmp / "nginx-error.log").exists() else ""
        self.stop(proc)
        self.notes.append(f"nginx did not start: {log_text.strip()}")

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        for name in reversed(self.namespaces):
            run(["ip", "netns", "del", name], check=False)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, cmd: list[str], name: str, stdin=None, stdout=None) -> subprocess.Popen:
        err = open(self.tmp / f"{name}.err", "w")
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=err, text=True,
                                cwd=ROOT, start_new_session=True)
        err.close()
        proc.log_name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, wait: float = 15) -> None:
        """SIGTERM, then SIGKILL (and a note) after ``wait`` seconds."""
        name = getattr(proc, "log_name", "a process")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                self.notes.append(f"{name} did not stop within {wait:g} s of SIGTERM: killed")
            if time.monotonic() - t0 > 2:
                log(f"{name} took {time.monotonic() - t0:.1f} s to stop")
        if proc in self.procs:
            self.procs.remove(proc)

    def wait_ready(self, proc: subprocess.Popen, name: str, prefix: str, timeout=20.0) -> None:
        path = self.tmp / f"{name}.err"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = path.read_text()
            if any(line.startswith(prefix) for line in text.splitlines()):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start:\n{path.read_text()[-2000:]}")

    @contextmanager
    def stack_up(self, *extra: str, hold: bool = False):
        """Run ``stack up`` (or the hold server) in the stack namespace; yield its pid."""
        ns = in_ns(self.s)
        if hold:
            cmd = [*ns, PY, SELF, "_hold-stack", "--tap", "tap0", "--address",
                   f"{STACK_ADDR}/24", "--host-address", f"{STACK_HOST}/24",
                   "--max-connections", str(self.args.conns + 1024)]
        else:
            cmd = [*ns, PY, "-m", "stack", "up", "--tap", "tap0", "--host-address",
                   f"{STACK_HOST}/24", "--address", f"{STACK_ADDR}/24",
                   "--serve", f"http:{HTTP_PORT}", "--serve", f"echo:{ECHO_PORT}", *extra]
        proc = self.start(cmd, "stack")
        try:
            self.wait_ready(proc, "stack", "stack: up")
            run([*ns, "sysctl", "-qw", "net.ipv6.conf.tap0.disable_ipv6=1"], check=False)
            run([*ns, "ping", "-c", "2", "-i", "0.05", "-W", "1", STACK_ADDR], check=False)
            yield proc.pid
        finally:
            # Closing 100,000 held connections takes the stack a while.
            self.stop(proc, wait=40 if hold else 15)

    def set_kernel_offloads(self, on: bool) -> bool:
        """Turn TSO/GSO/GRO on the veth pair on or off; False when ethtool is missing."""
        if not self.has_ethtool:
            return False
        state = "on" if on else "off"
        for ns, dev in self.veths:
            run([*in_ns(ns), "ethtool", "-K", dev, "tso", state, "gso", state, "gro", state])
        return True

    def record(self, key: str, side: str, value, **detail) -> None:
        row = self.results.setdefault(key, {**dict.fromkeys(SIDES), "detail": {}})
        row[side] = value
        if detail:
            row["detail"][side] = detail

    # -- metrics --------------------------------------------------------------

    def curl_best(self, ns: str, host: str, size: int, upload: bool,
                  dev: str | None = None, tries: int = 3) -> tuple[float | None, list]:
        """Best of ``tries`` curl transfers of ``size`` bytes, in Mbit/s. ``host``
        may carry a port. With ``dev``, each run also notes the frames that
        crossed it each way and their mean size."""
        ns_cmd = in_ns(ns)
        if upload:
            path = self.tmp / f"upload-{size}.bin"
            if not path.exists():
                block = bytes(range(256)) * 4096
                with open(path, "wb") as f:
                    for off in range(0, size, len(block)):
                        f.write(block[: min(len(block), size - off)])
            cmd = [*ns_cmd, "curl", "-s", "-o", "/dev/null", "--max-time", "60", "-T", str(path),
                   "-w", "%{speed_upload} %{size_upload} %{http_code}", f"http://{host}/upload"]
        else:
            cmd = [*ns_cmd, "curl", "-s", "-o", "/dev/null", "--max-time", "60",
                   "-w", "%{speed_download} %{size_download} %{http_code}",
                   f"http://{host}/bytes/{size}"]
        runs = []
        for _ in range(tries):
            before = link_counters(ns, dev) if dev else None
            r = run(cmd, timeout=70, check=False)
            frames = {}
            if dev:
                after = link_counters(ns, dev)
                for way in ("rx", "tx"):
                    n = after[f"{way}_packets"] - before[f"{way}_packets"]
                    nbytes = after[f"{way}_bytes"] - before[f"{way}_bytes"]
                    frames[f"{dev}_{way}_frames"] = n
                    frames[f"{dev}_{way}_mean_bytes"] = round(nbytes / n) if n else None
            try:
                speed, moved, code = r.stdout.split()
            except ValueError:
                runs.append({"error": f"curl exit {r.returncode}"})
                continue
            if code != "200" or int(moved) != size:
                runs.append({"error": f"curl exit {r.returncode}, http {code}, {moved} bytes"})
                continue
            runs.append({"mbps": round(float(speed) * 8 / 1e6, 1), **frames})
        good = [x["mbps"] for x in runs if "mbps" in x]
        return (max(good) if good else None), runs

    def transfers(self, kinds: list[str]) -> None:
        a = self.args
        k_size, s_size = a.kernel_mb * MB, a.stack_mb * MB
        for offload in (False, True):
            suffix = "offload" if offload else "mtu1500"
            if self.set_kernel_offloads(offload) or offload:
                for kind in kinds:
                    best, runs = self.curl_best(self.k2, KERNEL_SERVER, k_size, kind == "upload")
                    self.record(f"{kind}_{suffix}", "kernel", best, runs=runs, bytes=k_size)
                    log(f"kernel {kind} {suffix}: {best} Mbit/s")
                if "download" in kinds and self.nginx is not None:
                    best, runs = self.curl_best(self.k2, f"{KERNEL_SERVER}:{NGINX_PORT}",
                                                k_size, False)
                    self.record(f"download_{suffix}", "nginx", best, runs=runs, bytes=k_size)
                    log(f"nginx download {suffix}: {best} Mbit/s")
            else:
                self.notes.append("ethtool missing: the kernel's MTU 1500 rows are not measured")
        self.set_kernel_offloads(True)
        variants = [(False, ())]
        if self.offload_flag:
            variants.append((True, ("--offload",)))
        else:
            self.notes.append("`stack up --help` has no --offload: the stack's offload rows are n/a")
        for offload, extra in variants:
            suffix = "offload" if offload else "mtu1500"
            with self.stack_up(*extra):
                for kind in kinds:
                    best, runs = self.curl_best(self.s, STACK_ADDR, s_size, kind == "upload",
                                                dev="tap0")
                    self.record(f"{kind}_{suffix}", "stack", best, runs=runs, bytes=s_size)
                    log(f"stack {kind} {suffix}: {best} Mbit/s")

    def ping_side(self, ns: str, host: str) -> tuple[float, float, dict]:
        run([*in_ns(ns), "ping", "-c", "5", "-i", "0.01", "-W", "1", host], check=False)
        r = run([*in_ns(ns), "ping", "-c", str(self.args.pings), "-i", "0.002", "-W", "1", host],
                timeout=60, check=False)
        times = [float(m) * 1000 for m in re.findall(r"time=([0-9.]+) ms", r.stdout)]
        if not times:
            return None, None, {"error": r.stdout[-300:] + r.stderr[-300:]}
        return (round(statistics.median(times), 1), round(percentile(times, 99), 1),
                {"replies": len(times), "sent": self.args.pings, "min_us": round(min(times), 1)})

    def ping(self) -> None:
        med, p99, detail = self.ping_side(self.k2, KERNEL_SERVER)
        self.record("ping_median", "kernel", med, **detail)
        self.record("ping_p99", "kernel", p99)
        with self.stack_up():
            med, p99, detail = self.ping_side(self.s, STACK_ADDR)
        self.record("ping_median", "stack", med, **detail)
        self.record("ping_p99", "stack", p99)
        # Linux busy-polls too when asked (net.core.busy_poll); the kernel
        # column is the same plain figure for comparison.
        self.record("ping_median_busy", "kernel", self.results["ping_median"]["kernel"])
        with self.stack_up("--busy-poll", "5000"):
            busy, _, bdetail = self.ping_side(self.s, STACK_ADDR)
        self.record("ping_median_busy", "stack", busy, **bdetail)
        log(f"ping median/p99: kernel {self.results['ping_median']['kernel']}/"
            f"{self.results['ping_p99']['kernel']} us, stack {med}/{p99} us")

    def rate_side(self, ns: str, host: str) -> tuple[float | None, dict]:
        cmd = [*in_ns(ns), PY, SELF, "_rate-client", "--host", host, "--port", str(HTTP_PORT),
               "--seconds", str(self.args.rate_seconds), "--threads", str(self.args.rate_threads)]
        r = run(cmd, timeout=self.args.rate_seconds + 30, check=False)
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return None, {"error": r.stderr[-500:]}
        return out["per_second"], out

    def rate(self) -> None:
        value, detail = self.rate_side(self.k2, KERNEL_SERVER)
        self.record("conn_rate", "kernel", value, **detail)
        with self.stack_up():
            svalue, sdetail = self.rate_side(self.s, STACK_ADDR)
        self.record("conn_rate", "stack", svalue, **sdetail)
        log(f"new connections/s: kernel {value}, stack {svalue}")

    def load_side(self, side: str, ns: str, host: str) -> None:
        """``ab`` without and with keep-alive, then ``wrk``, against one server."""
        a = self.args
        url = f"http://{host}/bytes/1"
        for key, keepalive in (("ab_close", False), ("ab_keepalive", True)):
            r = run([*in_ns(ns), *ab_cmd(url, a.ab_requests, a.http_seconds, 20, keepalive)],
                    timeout=a.http_seconds + 30, check=False)
            out = parse_ab(r.stdout)
            if out["rps"] is None:
                out["error"] = (r.stderr or r.stdout)[-300:]
            elif out["failed"] or out["non_2xx"]:
                self.notes.append(f"{key} {side}: {out['failed']} failed, {out['non_2xx']} "
                                  f"non-2xx of {out['complete']} requests")
            self.record(key, side, out["rps"], **out)
        r = run([*in_ns(ns), *wrk_cmd(url, a.http_seconds, 50, 2)],
                timeout=a.http_seconds + 30, check=False)
        out = parse_wrk(r.stdout)
        if out["rps"] is None:
            out["error"] = (r.stderr or r.stdout)[-300:]
        elif any(out["errors"].values()) or out["non_2xx"]:
            self.notes.append(f"wrk {side}: socket errors {out['errors']}, "
                              f"{out['non_2xx']} non-2xx")
        self.record("wrk_rps", side, out["rps"], **out)
        self.record("wrk_p50", side, out["latency_us"].get("p50"))
        self.record("wrk_p99", side, out["latency_us"].get("p99"))
        log(f"{side}: ab {self.results['ab_close'][side]}, ab -k "
            f"{self.results['ab_keepalive'][side]}, wrk {out['rps']} req/s "
            f"(p50/p99 {out['latency_us'].get('p50')}/{out['latency_us'].get('p99')} us)")

    def http(self) -> None:
        missing = [tool for tool in ("ab", "wrk") if shutil.which(tool) is None]
        if missing:
            self.notes.append(f"http skipped: {', '.join(missing)} not installed "
                              "(apt-get install apache2-utils wrk)")
            return
        self.load_side("kernel", self.k2, KERNEL_SERVER)
        if self.nginx is not None:
            self.load_side("nginx", self.k2, f"{KERNEL_SERVER}:{NGINX_PORT}")
        with self.stack_up():
            self.load_side("stack", self.s, STACK_ADDR)

    def trace(self) -> None:
        """The stack's download traced at level state, and at level all with a
        capture, each against an untraced download in the same run: rounds of
        the three, one ``stack up`` each, so that a slow spell of a shared
        machine hits all three alike; the best of each counts."""
        a = self.args
        size = a.trace_mb * MB
        trace_file, pcap_file = self.tmp / "trace.jsonl", self.tmp / "trace.pcap"
        variants = (("untraced", ()),
                    ("state", ("--trace", str(trace_file), "--trace-level", "state")),
                    ("all", ("--trace", str(trace_file), "--pcap", str(pcap_file))))
        runs: dict[str, list] = {name: [] for name, _ in variants}
        for _ in range(a.trace_tries):
            for name, extra in variants:
                with self.stack_up(*extra):
                    _, one = self.curl_best(self.s, STACK_ADDR, size, False, tries=1)
                for path in (trace_file, pcap_file):
                    if path.exists():
                        one[0][f"{path.suffix[1:]}_bytes"] = path.stat().st_size
                        path.unlink()
                runs[name] += one
        best = {name: max((r["mbps"] for r in rs if "mbps" in r), default=None)
                for name, rs in runs.items()}
        log(f"download untraced/state/all+pcap: {best} Mbit/s")
        self.record("trace_untraced_mbps", "stack", best["untraced"], runs=runs["untraced"],
                    bytes=size)
        for name in ("state", "all"):
            self.record(f"trace_{name}_mbps", "stack", best[name], runs=runs[name], bytes=size)
            ratio = (round(best[name] / best["untraced"], 3)
                     if best[name] is not None and best["untraced"] else None)
            self.record(f"trace_{name}_ratio", "stack", ratio)

    def processes(self) -> int:
        """Processes to spread the held connections over, each holding at most
        --per-process of them (below RLIMIT_NOFILE, which cannot be raised here)."""
        return max(1, -(-self.args.conns // self.args.per_process))

    def hold_side(self, side: str, ns: str, host: str, port: int, servers: list[tuple[str, int]],
                  conns: int, count_held: bool) -> dict:
        """Open ``conns`` connections from the side's client addresses (spread
        over several client processes), hold them, and measure: the clients'
        still-open count, the servers' held count (their ``holder: held N``
        lines, with ``count_held``) and the servers' RSS growth."""
        a = self.args
        held_before = sum(last_held(self.tmp / f"{n}.err") or 0 for n, _ in servers)
        before = sum(rss_kib(pid) for _, pid in servers)
        nproc = self.processes() if port == HOLD_PORT else 1
        clients = []
        for i in range(nproc):
            share = conns // nproc + (i < conns % nproc)
            cmd = [*in_ns(ns), PY, SELF, "_hold-client", "--host", host, "--port", str(port),
                   "--conns", str(share), "--connect-seconds", str(a.connect_seconds),
                   "--hold", "2", "--window", str(max(1, a.connect_window // nproc))]
            if port == HOLD_PORT:
                cmd += ["--sources", ",".join(self.sources[side][i::nproc])]
            clients.append(self.start(cmd, f"hold-client-{i}", stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE))
        try:
            outs: dict[int, dict] = {}
            end = time.monotonic() + a.connect_seconds + 30
            while len(outs) < nproc and time.monotonic() < end:
                waiting = [c.stdout for c in clients if id(c.stdout) not in outs]
                ready, _, _ = select.select(waiting, [], [], max(0.0, end - time.monotonic()))
                for f in ready:
                    try:
                        outs[id(f)] = json.loads(f.readline())
                    except ValueError:
                        outs[id(f)] = {"error": "no result"}
            after = sum(rss_kib(pid) for _, pid in servers)
            failed = [o for o in outs.values() if "error" in o]
            if failed or len(outs) < nproc:
                errs = [(self.tmp / f"hold-client-{i}.err").read_text()[-300:]
                        for i in range(nproc)]
                return {"error": " | ".join(e for e in errs if e.strip()) or "no result"}
            res = list(outs.values())
            out: dict = {k: sum(o[k] for o in res) for k in ("attempted", "established", "open")}
            out["connect_seconds"] = max(o["connect_seconds"] for o in res)
            out["per_second"] = (round(out["established"] / out["connect_seconds"], 1)
                                 if out["connect_seconds"] else None)
            out["processes"], out["sources"] = nproc, sum(o["sources"] for o in res)
            out["nofile"] = min(o["nofile"] for o in res)
            errors: Counter = Counter()
            for o in res:
                errors.update(o["errors"])
            out["errors"] = dict(errors)
            value = out["open"]
            if count_held:
                time.sleep(0.6)  # the holders log their counts every half second
                out["server_held"] = sum(last_held(self.tmp / f"{n}.err") or 0
                                         for n, _ in servers) - held_before
                value = min(value, out["server_held"])
            out["held"] = value
            out["rss_before_kib"], out["rss_after_kib"] = before, after
            out["rss_per_conn_kib"] = round((after - before) / value, 2) if value else None
            for c in clients:
                c.stdin.write("close\n")
                c.stdin.flush()
            for c in clients:
                c.wait(60)
            return out
        finally:
            for c in clients:
                self.stop(c)

    def concurrent(self) -> None:
        # The echo service serves at most MAX_CLIENTS clients and closes the
        # rest on accept, on either side: fewer attempts show that cap as well
        # as 100,000 do, in a fraction of the time. The bare listener only
        # accepts, so it measures the TCP layer and the socket facade.
        a = self.args
        for key, port, conns in (("concurrent_echo", ECHO_PORT, min(a.echo_conns, a.conns)),
                                 ("concurrent_listener", HOLD_PORT, a.conns)):
            hold = port == HOLD_PORT
            servers = self.kernel_holders if hold else [("kernel-server", self.kernel_pid)]
            out = self.hold_side("kernel", self.k2, KERNEL_SERVER, port, servers, conns, hold)
            self.record(key, "kernel", out.get("held"), **out)
            with self.stack_up(hold=hold) as pid:
                if hold:
                    for addr in self.sources["stack"]:
                        run([*in_ns(self.s), "ip", "addr", "add", f"{addr}/24", "dev", "tap0"])
                sout = self.hold_side("stack", self.s, STACK_ADDR, port, [("stack", pid)], conns,
                                      hold)
            self.record(key, "stack", sout.get("held"), **sout)
            log(f"{key}: kernel {out.get('held')} held, stack {sout.get('held')} held "
                f"({sout.get('rss_per_conn_kib')} KiB/conn, {sout.get('per_second')} conn/s)")
        self.record("hold_rate", "kernel", out.get("per_second"))
        self.record("hold_rate", "stack", sout.get("per_second"))
        self.record("rss_listener", "kernel", out.get("rss_per_conn_kib"))
        self.record("rss_listener", "stack", sout.get("rss_per_conn_kib"))
        if (sout.get("held") or 0) < a.conns:
            self.notes.append(f"held connections: the stack held {sout.get('held')} of "
                              f"{a.conns} within {a.connect_seconds:g} s "
                              f"({sout.get('per_second')} established/s; "
                              f"errors {sout.get('errors')})")
        self.notes.append("server RSS per held conn: the kernel's socket memory is in no RSS, "
                          "its figure is the Python server process's only")

    def profile(self) -> None:
        spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not os.access(spy, os.X_OK):
            self.notes.append("profile skipped: py-spy is not installed "
                              "(.venv/bin/pip install py-spy)")
            return
        seconds = self.args.profile_seconds
        variants = {"MTU 1500": ()}
        if self.offload_flag:
            variants["--offload"] = ("--offload",)
        self.results["profile"] = {}
        # Two views of one download: every thread py-spy sees busy (time in
        # system calls such as the TAP write included), then only the thread
        # holding the GIL (where the Python work goes).
        views = {"busy": ([], WAITS), "gil": (["--gil"], ())}
        for name, extra in variants.items():
            raw = self.tmp / "profile.txt"
            out = self.results["profile"][name] = {}
            with self.stack_up(*extra) as pid:
                # A download that outlasts the sampling at the stack's speed.
                curl = self.start([*in_ns(self.s), "curl", "-s", "-o", "/dev/null",
                                   "--max-time", str(2 * seconds + 20),
                                   f"http://{STACK_ADDR}/bytes/{8_000 * MB}"], "profile-curl")
                time.sleep(0.5)
                for view, (flags, skip) in views.items():
                    run([spy, "record", "--pid", str(pid), "--duration", str(seconds),
                         "--rate", "250", "--format", "raw", "--function", "--nonblocking",
                         *flags, "-o", str(raw)], timeout=seconds + 60)
                    out[view] = parse_profile(raw.read_text(), skip=skip)
                self.stop(curl)

    def paths(self) -> None:
        log(f"paths: {self.args.paths_mb} MB downloads through the path emulator, "
            f"4 profiles x 4 columns x {self.args.paths_trials} trials")
        self.results["paths"] = run_paths(self.tmp, self.args.paths_mb * MB,
                                          self.args.paths_limit, self.args.paths_trials)

    # -- the run ----------------------------------------------------------------

    def run(self, metrics: list[str]) -> None:
        steps = []
        kinds = [m for m in ("download", "upload") if m in metrics]
        if kinds:
            steps.append(("transfers", lambda: self.transfers(kinds)))
        for name in ("http", "ping", "rate", "trace", "concurrent", "paths", "profile"):
            if name in metrics:
                steps.append((name, getattr(self, name)))
        for name, step in steps:
            t0 = time.monotonic()
            try:
                step()
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                self.notes.append(f"{name} failed: {e}")
                log(f"{name} failed: {e}")
            log(f"{name}: {time.monotonic() - t0:.1f} s")



def source_version() -> str:
    """The commit measured, marked dirty when stack/ has uncommitted changes."""
    head = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False)
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "stack", "native"],
                check=False)
    commit = head.stdout.strip() or "unknown"
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def tool_versions() -> dict[str, str | None]:
    """The first line each load generator and nginx print about their version."""
    out: dict[str, str | None] = {}
    for tool, flag in (("ab", "-V"), ("wrk", "-v"), ("nginx", "-v"), ("curl", "--version")):
        if shutil.which(tool) is None:
            out[tool] = None
            continue
        r = run([tool, flag], check=False)
        lines = (r.stdout or r.stderr).strip().splitlines()
        out[tool] = lines[0] if lines else None
    return out


def clean_stale() -> None:
    """Remove namespaces of earlier runs whose process no longer exists."""
    r = run(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(?:k1|k2|s)-(\d+)", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            run(["ip", "netns", "del", name], check=False)


SETTINGS = ("kernel_mb", "stack_mb", "pings", "rate_seconds", "rate_threads", "http_seconds",
            "ab_requests", "trace_mb", "trace_tries", "conns", "echo_conns", "client_addresses",
            "connect_seconds", "connect_window", "per_process", "paths_mb", "paths_limit",
            "paths_trials")


def cmd_main(args) -> int:
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, TAP, veth)", file=sys.stderr)
        return 2
    metrics = [m.strip() for m in args.only.split(",")] if args.only else list(METRICS)
    if args.profile and "profile" not in metrics:
        metrics.append("profile")
    unknown = set(metrics) - set(METRICS) - {"profile"}
    if unknown:
        print(f"bench: unknown metric(s) {', '.join(sorted(unknown))}; "
              f"choose from {', '.join(METRICS)}, profile", file=sys.stderr)
        return 2
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    problems = [msg for bad, msg in (
        (not 0 <= args.client_addresses <= 200, "--client-addresses must be 0-200"),
        (args.conns < 1 or args.per_process < 1, "--conns and --per-process must be >= 1"),
        (hard != resource.RLIM_INFINITY and args.per_process > hard - 1024,
         f"--per-process must stay 1,024 below the fd hard limit ({hard})"),
        (args.http_seconds <= 0 or args.connect_seconds <= 0 or args.paths_limit <= 0,
         "durations must be > 0"),
        (args.paths_mb < 1, "--paths-mb must be >= 1"),
        (args.paths_trials < 1, "--paths-trials must be >= 1"),
    ) if bad]
    if problems:
        print(f"bench: {'; '.join(problems)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    clean_stale()
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"load average {load:.2f} before the run: other work shares the CPUs, "
            "figures will be low and noisy")
    started = time.monotonic()
    bench = Bench(args)
    try:
        bench.setup(metrics)
        bench.run(metrics)
    finally:
        bench.close()
    results = bench.results
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(), "load_before": round(load, 2),
                    "load_after": round(os.getloadavg()[0], 2)},
        "settings": {k: getattr(args, k) for k in SETTINGS},
        "commit": source_version(),
        "tools": tool_versions(),
        "seconds": round(time.monotonic() - started, 1),
        "metrics": {k: v for k, v in results.items() if k != "profile"},
        "notes": bench.notes,
    }
    if "profile" in results:
        report["profile"] = results["profile"]
    if any(key in results for key, *_ in ROWS):
        print(table(results, markdown=args.markdown))
    if "paths" in results:
        print(("\n" if any(key in results for key, *_ in ROWS) else "")
              + paths_table(results["paths"], markdown=args.markdown))
    for note in bench.notes:
        print(f"note: {note}")
    if "profile" in results:
        print(profile_text(results["profile"]))
    print(f"({report['date']}, commit {report['commit']}, {report['seconds']} s, "
          f"load average {load:.2f} before, {report['machine']['load_after']:.2f} after)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", metavar="LIST",
                   help=f"comma-separated metrics: {', '.join(METRICS)}, profile (default: all "
                        "but profile)")
    p.add_argument("--profile", action="store_true",
                   help="also profile `stack up` with py-spy during a download")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--kernel-mb", type=int, default=200, help="kernel transfer size (MB) (default: %(default)s)")
    p.add_argument("--stack-mb", type=int, default=100, help="stack transfer size (MB) (default: %(default)s)")
    p.add_argument("--pings", type=int, default=200, help="pings per train (default: %(default)s)")
    p.add_argument("--rate-seconds", type=float, default=5.0,
                   help="length of the Python connection-rate loop (default: %(default)s)")
    p.add_argument("--rate-threads", type=int, default=4,
                   help="its client threads (default: %(default)s)")
    p.add_argument("--http-seconds", type=float, default=5.0,
                   help="time limit of each ab run and the length of each wrk run (default: %(default)s)")
    p.add_argument("--ab-requests", type=int, default=200_000,
                   help="request limit of each ab run (the time limit usually ends it first) (default: %(default)s)")
    p.add_argument("--trace-mb", type=int, default=50, help="traced download size (MB) (default: %(default)s)")
    p.add_argument("--trace-tries", type=int, default=3,
                   help="rounds of the three trace variants, one download each (the best "
                        "counts) (default: %(default)s)")
    p.add_argument("--conns", type=int, default=100_000,
                   help="connections to hold on the bare listener (default: %(default)s)")
    p.add_argument("--echo-conns", type=int, default=1_000,
                   help="connections to open to the echo service (default: %(default)s)")
    p.add_argument("--client-addresses", type=int, default=20,
                   help="extra client addresses (.11 up) the held connections come from (default: %(default)s)")
    p.add_argument("--connect-seconds", type=float, default=60.0,
                   help="time limit for opening the held connections (default: %(default)s)")
    p.add_argument("--connect-window", type=int, default=256,
                   help="connects in flight at once (all client processes together) while "
                        "opening the held connections (default: %(default)s)")
    p.add_argument("--per-process", type=int, default=15_000,
                   help="held connections per client process and per kernel holder process "
                        "(each process's fds stay below RLIMIT_NOFILE) (default: %(default)s)")
    p.add_argument("--paths-mb", type=int, default=20,
                   help="download size of each bad-path transfer (MB) (default: %(default)s)")
    p.add_argument("--paths-trials", type=int, default=3,
                   help="bad-path downloads per column and profile, the median reported "
                        "(default: %(default)s)")
    p.add_argument("--paths-limit", type=float, default=60.0,
                   help="time limit of each bad-path download (s) (default: %(default)s)")
    p.add_argument("--profile-seconds", type=int, default=8,
                   help="py-spy sampling time per view (two views per variant) (default: %(default)s)")
    sub = p.add_subparsers(dest="helper")
    s = sub.add_parser("_serve-kernel")
    s.add_argument("--address", required=True)
    s = sub.add_parser("_hold-kernel")
    s.add_argument("--address", required=True)
    s = sub.add_parser("_hold-stack")
    s.add_argument("--tap", required=True)
    s.add_argument("--address", required=True)
    s.add_argument("--host-address", required=True)
    s.add_argument("--max-connections", type=int, default=16384)
    s = sub.add_parser("_rate-client")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--linger0", action="store_true", help="close with RST (SO_LINGER 0)")
    s = sub.add_parser("_hold-client")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--conns", type=int, required=True)
    s.add_argument("--connect-seconds", type=float, default=40.0)
    s.add_argument("--hold", type=float, default=2.0)
    s.add_argument("--window", type=int, default=256)
    s.add_argument("--sources", default="", help="comma-separated client addresses to bind")
    args = p.parse_args(argv)
    helpers = {"_serve-kernel": cmd_serve_kernel, "_hold-kernel": cmd_hold_kernel,
               "_hold-stack": cmd_hold_stack,
               "_rate-client": cmd_rate_client, "_hold-client": cmd_hold_client}
    if args.helper:
        return helpers[args.helper](args)
    return cmd_main(args)


if __name__ == "__main__":
    sys.exit(main())
