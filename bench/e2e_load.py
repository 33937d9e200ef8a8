"""The C load generators (``ab``, ``wrk``) and the nginx reference server of
the end-to-end benchmark: command lines, nginx's configuration, and the
parsing of what the tools print."""

from __future__ import annotations

import re
from pathlib import Path

from e2e_lib import write_pattern


def nginx_conf(tmp: Path, address: str, port: int) -> Path:
    """Write an nginx configuration into ``tmp`` and return its path.

    Everything it opens is under ``tmp`` (no /etc/nginx, /var/log or /run):
    a foreground master (``daemon off``, stopped by its PID) with its workers,
    no access log, and ``/bytes/N`` served from files made by
    :func:`nginx_files`."""
    conf = tmp / "nginx.conf"
    www = tmp / "nginx-www"
    temps = "\n".join(f"    {name}_temp_path {tmp}/nginx-{name};"
                      for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""\
daemon off;
user root;
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
{temps}
    server {{
        listen {address}:{port} backlog=4096;
        root {www};
        location /bytes/ {{ }}
    }}
}}
""")
    return conf


def nginx_files(tmp: Path, sizes: list[int]) -> None:
    """Files ``/bytes/N`` for each N: the same bytes the http service sends."""
    folder = tmp / "nginx-www" / "bytes"
    folder.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        path = folder / str(size)
        if not path.exists():
            write_pattern(path, size)


def nginx_cmd(conf: Path, tmp: Path) -> list[str]:
    return ["nginx", "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)]


def ab_cmd(url: str, requests: int, seconds: float, concurrency: int,
           keepalive: bool) -> list[str]:
    """``ab``: at most ``requests`` requests, at most ``seconds`` (``-t`` first:
    a later ``-n`` overrides the 50,000 it implies), ``-r`` so that one reset
    does not end the run."""
    return ["ab", "-q", "-r", "-s", "5", "-t", f"{seconds:g}", "-n", str(requests),
            "-c", str(concurrency), *(["-k"] if keepalive else []), url]


def parse_ab(text: str) -> dict:
    """The figures of an ``ab`` report; ``rps`` None when it has none."""
    def num(label: str) -> float | None:
        m = re.search(rf"^{re.escape(label)}:\s+([0-9.]+)", text, re.M)
        return float(m.group(1)) if m else None

    out = {"rps": num("Requests per second"), "complete": num("Complete requests"),
           "failed": num("Failed requests"), "seconds": num("Time taken for tests"),
           "non_2xx": num("Non-2xx responses") or 0, "keepalive": num("Keep-Alive requests")}
    return {k: (int(v) if isinstance(v, float) and k not in ("rps", "seconds") else v)
            for k, v in out.items()}


def wrk_cmd(url: str, seconds: float, connections: int, threads: int) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s",
            "--latency", url]


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _us(value: str, unit: str) -> float:
    return round(float(value) * _UNITS[unit], 1)


def parse_wrk(text: str) -> dict:
    """Requests/s, the latency percentiles (µs) and the errors of a ``wrk --latency`` report."""
    out: dict = {"rps": None, "latency_us": {}, "errors": {}, "non_2xx": 0}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s)\s*$", text,
                                       re.M):
        out["latency_us"][f"p{pct}"] = _us(value, unit)
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                 map(int, m.groups()), strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non_2xx"] = int(m.group(1))
    return out
