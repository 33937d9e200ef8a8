"""Issue 4 over a real TAP: TCP between the Linux kernel and the stack.

The kernel side of the TAP is 192.0.2.1/24, the stack 192.0.2.2/24 (see
conftest). The kernel's clients (curl, nc, Python sockets) talk to the
stack's built-in services; a program on the stack's socket API talks to a
kernel-side ``python -m http.server``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

import stack
from stack.services import KernelNet, ServiceSpec, parse_service, start_service
from tests.helpers.tap import kill, sh, stack_up, stop_stack_up, wait_for

STACK = "192.0.2.2"
HOST = "192.0.2.1"
MB = 1 << 20


def _pattern_sha256(n: int) -> str:
    """sha256 of the /bytes/n body: byte i is i % 251."""
    period = bytes(range(251))
    block = period * (4 * MB // 251)  # a whole number of periods
    h = hashlib.sha256()
    while n >= len(block):
        h.update(block)
        n -= len(block)
    h.update((period * (n // 251 + 1))[:n])
    return h.hexdigest()


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MB):
            h.update(chunk)
    return h.hexdigest()


def _mbit(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6


def _curl_download(url: str, out, timeout: float = 60) -> float:
    t = time.monotonic()
    sh(f"curl -sS --max-time {timeout} -o {out} {url}", timeout=timeout + 10)
    return time.monotonic() - t


def _http_service(net, port=80):
    return start_service(net, parse_service(f"http:{port}"))


def _state_events(events, name):
    return [(e["from"], e["to"], e["cause"]) for e in events
            if e.get("event") == "state" and e.get("conn") == name]


# -- bulk data with curl -----------------------------------------------------------------


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_curl_download_50mb_sha256_and_throughput(tap_stack, tmp_path, offload):
    size = 50_000_000
    expected = _pattern_sha256(size)
    net = tap_stack(trace=None, offload=offload)
    svc = _http_service(net)
    out = tmp_path / "download"
    try:
        took = _curl_download(f"http://{STACK}/bytes/{size}", out)
    finally:
        svc.close()
    assert out.stat().st_size == size
    assert _file_sha256(out) == expected
    out.unlink()
    # The same server code and the same curl on the kernel's own loopback.
    ksvc = start_service(KernelNet, ServiceSpec("http", 0), address="127.0.0.1")
    try:
        ktook = _curl_download(f"http://127.0.0.1:{ksvc.port}/bytes/{size}", out)
    finally:
        ksvc.close()
    assert _file_sha256(out) == expected
    st = net.stats()
    mode = "with offloads" if offload else "plain"
    print(f"\ncurl GET 50 MB from the stack over the TAP ({mode}): {took:.2f} s, "
          f"{_mbit(size, took):.0f} Mbit/s (retransmitted segments "
          f"{st.get('tcp.retrans_segs', 0)}); same server on kernel loopback: "
          f"{ktook:.2f} s, {_mbit(size, ktook):.0f} Mbit/s")


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_curl_upload_20mb_sha256(tap_stack, tmp_path, offload):
    size = 20 * MB
    data = os.urandom(size)
    src = tmp_path / "upload"
    src.write_bytes(data)
    net = tap_stack(trace=None, offload=offload)
    svc = _http_service(net)
    try:
        t = time.monotonic()
        r = sh(f"curl -sS --max-time 60 -T {src} http://{STACK}/upload", timeout=70)
        took = time.monotonic() - t
    finally:
        svc.close()
    answer = json.loads(r.stdout)
    assert answer == {"bytes": size, "sha256": hashlib.sha256(data).hexdigest()}
    ksvc = start_service(KernelNet, ServiceSpec("http", 0), address="127.0.0.1")
    try:
        t = time.monotonic()
        r = sh(f"curl -sS --max-time 60 -T {src} http://127.0.0.1:{ksvc.port}/upload", timeout=70)
        ktook = time.monotonic() - t
    finally:
        ksvc.close()
    assert json.loads(r.stdout) == answer
    mode = "with offloads" if offload else "plain"
    print(f"\ncurl PUT 20 MB to the stack over the TAP ({mode}): {took:.2f} s, "
          f"{_mbit(size, took):.0f} Mbit/s; same server on kernel loopback: {ktook:.2f} s, "
          f"{_mbit(size, ktook):.0f} Mbit/s")


def test_keep_alive_reuses_one_connection(tap_stack):
    net = tap_stack()
    events = []
    net.trace.subscribe(events.append)
    svc = _http_service(net)
    try:
        urls = " ".join(f"http://{STACK}/bytes/{n}" for n in (1000, 100_000, 10))
        r = sh(f"curl -sS -v -o /dev/null -o /dev/null -o /dev/null {urls}")
    finally:
        svc.close()
    assert r.stderr.count("Re-using existing connection") == 2, r.stderr
    opens = [e for e in events if e.get("event") == "state" and e["from"] == "LISTEN"
             and e["to"] == "SYN_RECEIVED"]
    assert len(opens) == 1
    assert net.stats()["tcp.passive_opens"] == 1


def test_500_requests_from_50_concurrent_clients(tap_stack):
    net = tap_stack(trace=None)
    svc = _http_service(net)
    sizes = [0, 1, 1460, 1461, 20_000, 70_000]
    failures = []
    done = []

    def client(k: int) -> None:
        try:
            conn = None
            for i in range(10):
                # Half the requests reuse a connection, half open a new one.
                if conn is None or i % 2 == 0:
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection(STACK, 80, timeout=20)
                n = sizes[(k + i) % len(sizes)]
                conn.request("GET", f"/bytes/{n}")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or body != bytes(j % 251 for j in range(n)):
                    failures.append((k, i, resp.status, len(body)))
                done.append(1)
            conn.close()
        except Exception as e:  # collected, so that one failure names itself
            failures.append((k, repr(e)))

    try:
        t = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        took = time.monotonic() - t
    finally:
        svc.close()
    assert failures == []
    assert len(done) == 500
    print(f"\n500 requests from 50 clients (300 connections): {took:.2f} s")


@pytest.mark.parametrize("mtu", [576, 9000])
def test_download_and_upload_with_other_mtus(tap_stack, tmp_path, mtu):
    net = tap_stack(trace=None, mtu=mtu)
    svc = _http_service(net)
    out = tmp_path / "download"
    data = os.urandom(3 * MB)
    src = tmp_path / "upload"
    src.write_bytes(data)
    try:
        _curl_download(f"http://{STACK}/bytes/5000000", out, timeout=30)
        r = sh(f"curl -sS --max-time 30 -T {src} http://{STACK}/upload", timeout=40)
    finally:
        svc.close()
    assert _file_sha256(out) == _pattern_sha256(5_000_000)
    assert json.loads(r.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
    assert net.stats().get("ip.fragmented", 0) == 0  # TCP fits its segments to the MTU


# -- the small services -------------------------------------------------------------------


def test_echo_1mb_byte_exact(tap_stack):
    net = tap_stack(trace=None)
    svc = start_service(net, parse_service("echo:7"))
    data = os.urandom(MB)
    got = bytearray()
    try:
        with socket.create_connection((STACK, 7), timeout=10) as s:
            def reader():
                while chunk := s.recv(65536):
                    got.extend(chunk)

            t = threading.Thread(target=reader)
            t.start()
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            t.join(20)
    finally:
        svc.close()
    assert bytes(got) == data


def test_discard_and_chargen(tap_stack, tmp_path):
    from stack.services.simple import chargen_lines

    net = tap_stack()
    svcs = [start_service(net, parse_service(s)) for s in ("discard:9", "chargen:19")]
    try:
        src = tmp_path / "junk"
        src.write_bytes(os.urandom(500_000))
        # nc sends the file, closes its side (-N) and waits for the service's EOF.
        r = sh(f"nc -N -w 5 {STACK} 9 < {src}", timeout=20)
        assert r.stdout == ""
        with socket.create_connection((STACK, 9), timeout=5) as s:
            s.sendall(b"x" * 100_000)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b""  # discard sends nothing and closes after EOF
        with socket.create_connection((STACK, 19), timeout=5) as s:
            want = chargen_lines(200)
            got = bytearray()
            while len(got) < len(want):
                got += s.recv(65536)
            assert bytes(got[:len(want)]) == want
        out = tmp_path / "chargen"
        sh(f"nc -w 2 {STACK} 19 < /dev/null | head -c 7400 > {out}", timeout=20)
        assert out.read_bytes() == chargen_lines(100)
    finally:
        for svc in svcs:
            svc.close()
    st = net.stats()
    assert st["tcp.passive_opens"] == 4


def test_closed_port_refused_at_once(tap_stack):
    tap_stack()
    with socket.socket() as s:
        s.settimeout(5)
        t = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            s.connect((STACK, 4444))
        assert time.monotonic() - t < 0.5
    assert sh(f"nc -z -w 2 {STACK} 4444", check=False).returncode != 0


def test_client_killed_mid_download_leaves_nothing_behind(tap_stack):
    from stack.tcp.states import TIME_WAIT

    net = tap_stack(trace=None)
    svc = _http_service(net)
    try:
        for _ in range(3):
            curl = subprocess.Popen(["curl", "-sS", "-o", "/dev/null",
                                     f"http://{STACK}/bytes/10000000000"],
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            curl.kill()
            curl.wait()
        # The kernel answers the stack's next segments with RST: every
        # connection and its service thread goes away.
        assert wait_for(lambda: svc.active_clients == 0, timeout=5)

        def live():
            with net.lock:
                return [c for c in net.tcp.connections() if c.state != TIME_WAIT]

        assert wait_for(lambda: not live(), timeout=5), live()
        # And the service still answers.
        r = sh(f"curl -sS --max-time 5 http://{STACK}/bytes/1000 | sha256sum")
        assert r.stdout.split()[0] == _pattern_sha256(1000)
    finally:
        svc.close()
    # Each killed client's kernel answers with RST; one killed with nothing
    # unread closes with FIN first, and the service's close then meets the
    # RST in LAST_ACK, which (as Linux's TCPEstabResets) is not counted.
    assert net.stats().get("tcp.estab_resets", 0) >= 1


def test_stack_client_refused_by_kernel(tap_stack):
    net = tap_stack()
    t = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        net.create_connection((HOST, 4444), timeout=5)
    assert time.monotonic() - t < 0.5
    s = net.socket(stack.AF_INET, stack.SOCK_STREAM)
    with s:
        s.settimeout(5)
        assert s.connect_ex((HOST, 4444)) == errno.ECONNREFUSED


# -- flow control ---------------------------------------------------------------------------


def test_slow_reader_with_tiny_window_gets_every_byte(tap_stack):
    size = 2_000_000
    net = tap_stack()
    events = []
    net.trace.subscribe(events.append)
    svc = _http_service(net)
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.connect((STACK, 80))
            s.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            resp = http.client.HTTPResponse(s)
            resp.begin()
            assert resp.status == 200
            h = hashlib.sha256()
            got = 0
            t = time.monotonic()
            while got < size:
                if got % 400_000 < 4096:
                    time.sleep(0.5)  # stop reading: the window closes
                chunk = resp.read(4096)
                assert chunk
                h.update(chunk)
                got += len(chunk)
            took = time.monotonic() - t
    finally:
        svc.close()
    assert got == size and h.hexdigest() == _pattern_sha256(size)
    zero = [e for e in events if e.get("event") == "seg" and e.get("dir") == "in"
            and e.get("win") == 0]
    probes = [e for e in events if e.get("event") == "timer" and e.get("timer") == "persist"]
    assert zero, "the kernel never closed its window"
    print(f"\nslow reader: {took:.1f} s, {len(zero)} zero-window segments from the kernel, "
          f"{len(probes)} persist probes")


# -- the stack as a client of the kernel -------------------------------------------------


@pytest.fixture
def kernel_http_server(tmp_path):
    """``python -m http.server`` on the kernel side, serving a 20 MB random file."""
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(20 * MB)
    (root / "big.bin").write_bytes(data)
    port = 8000
    p = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", HOST,
                          "--directory", str(root), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield port, hashlib.sha256(data).hexdigest()
    p.terminate()
    p.wait(5)


def _wait_listening(net, port):
    def ok():
        try:
            with net.create_connection((HOST, port), timeout=1):
                return True
        except ConnectionRefusedError:
            return False

    assert wait_for(ok, timeout=10)


def test_stack_program_downloads_from_kernel_http_server(tap_stack, kernel_http_server):
    port, expected = kernel_http_server
    net = tap_stack(trace=None)
    _wait_listening(net, port)
    request = f"GET /big.bin HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode()

    # 1. A recv loop; headers split off by hand.
    with net.create_connection((HOST, port), timeout=10) as s:
        t = time.monotonic()
        s.sendall(request)
        raw = bytearray()
        while chunk := s.recv(65536):
            raw += chunk
        took = time.monotonic() - t
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    assert length == len(body) == 20 * MB
    assert hashlib.sha256(body).hexdigest() == expected

    # 2. Through makefile('rb') and http.client's response parser.
    with net.create_connection((HOST, port), timeout=10) as s:
        s.sendall(request)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200 and resp.length == 20 * MB
        h = hashlib.sha256()
        while chunk := resp.read(100_000):
            h.update(chunk)
        resp.close()
    assert h.hexdigest() == expected

    # 3. http.client itself, with the stack's socket in place of a kernel one.
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.sock = net.create_connection((HOST, port), timeout=10)
    conn.request("GET", "/big.bin")
    resp = conn.getresponse()
    assert hashlib.sha256(resp.read()).hexdigest() == expected
    conn.close()
    print(f"\nstack downloads 20 MB from kernel http.server: {took:.2f} s, "
          f"{_mbit(20 * MB, took):.0f} Mbit/s")


def test_stack_slow_reader_with_tiny_buffer(tap_stack, kernel_http_server):
    """The stack closes its window; the kernel's persist timer probes it open."""
    port, expected = kernel_http_server
    net = tap_stack()
    events = []
    net.trace.subscribe(events.append)
    _wait_listening(net, port)
    s = net.socket(stack.AF_INET, stack.SOCK_STREAM)
    with s:
        s.setsockopt(stack.SOL_SOCKET, stack.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect((HOST, port))
        s.sendall(f"GET /big.bin HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        buf = bytearray(4096)
        raw = bytearray()
        pauses = 0
        while True:
            if len(raw) > pauses * 5 * MB:
                pauses += 1
                time.sleep(0.4)  # nobody reads: the window must close
            n = s.recv_into(buf)
            if not n:
                break
            raw += buf[:n]
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and len(body) == 20 * MB
    assert hashlib.sha256(body).hexdigest() == expected
    name = [e["conn"] for e in events if e.get("event") == "state" and e["to"] == "SYN_SENT"][-1]
    out = [e for e in events if e.get("event") == "seg" and e["conn"] == name
           and e["dir"] == "out"]
    shift = int(next(o for o in out[0]["options"] if o.startswith("wscale")).split()[1])
    # From the SYN on the stack never offers more than its 4 KB buffer, and
    # it closes the window.
    assert max([out[0]["win"]] + [e["win"] << shift for e in out[1:]]) <= 4096
    assert any(e["win"] == 0 for e in out), "the stack never closed its window"


# -- the trace ---------------------------------------------------------------------------


def test_trace_shows_each_connection_life(tap_stack, tmp_path):
    trace = tmp_path / "life.jsonl"
    net = tap_stack(trace=str(trace))
    svc = _http_service(net)
    try:
        sh(f"curl -sS -o /dev/null http://{STACK}/bytes/300000")
        # A client that waits for the server's FIN before closing: the
        # server closes first.
        with socket.create_connection((STACK, 80), timeout=5) as s:
            s.sendall(b"GET /bytes/1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = bytearray()
            while chunk := s.recv(65536):
                reply += chunk
            assert reply.endswith(bytes(i % 251 for i in range(1000)))
        time.sleep(0.3)
    finally:
        svc.close()
    net.close()
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    names = []
    for e in events:
        if (e.get("event") == "state" and e["from"] == "LISTEN"
                and e["conn"].startswith(f"{STACK}:80-")):
            names.append(e["conn"])
    assert len(names) == 2
    cause_re = re.compile(r"^(rcv [A-Z,]+ seq=\d+( ack=\d+)?( \(.*\))?|user \w+|timer \w+)$")
    lives = []
    for name in names:
        life = _state_events(events, name)
        for _, _, cause in life:
            assert cause_re.match(cause), (name, cause)
        lives.append([(f, t) for f, t, _ in life])
    passive_close = [("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED"),
                     ("ESTABLISHED", "CLOSE_WAIT"), ("CLOSE_WAIT", "LAST_ACK"),
                     ("LAST_ACK", "CLOSED")]
    active_close = [("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED"),
                    ("ESTABLISHED", "FIN_WAIT_1")]
    # curl closes its keep-alive connection first; the second client waits
    # for the server's FIN. The kernel may ACK that FIN alone or with its
    # own FIN; the server's TIME_WAIT ends at the latest with the stack.
    assert lives[0] == passive_close, lives[0]
    assert lives[1][:3] == active_close, lives[1]
    assert lives[1][3:] in (
        [("FIN_WAIT_1", "FIN_WAIT_2"), ("FIN_WAIT_2", "TIME_WAIT"), ("TIME_WAIT", "CLOSED")],
        [("FIN_WAIT_1", "TIME_WAIT"), ("TIME_WAIT", "CLOSED")]), lives[1]
    life = _state_events(events, names[0])
    assert life[0][2].startswith("rcv SYN seq=")
    assert life[1][2].startswith("rcv ACK seq=")
    assert life[2][2].startswith("rcv FIN,ACK seq=")
    assert life[3][2].startswith("user ")
    assert life[4][2].startswith("rcv ACK seq=")


# -- `stack up` -------------------------------------------------------------------------------


def test_stack_up_serves_http_and_echo(netns, tmp_path):
    trace = tmp_path / "up.jsonl"
    p = stack_up("tapweb", "--serve", "http:8080", "--serve", "echo:7", "--trace", str(trace))
    try:
        line = p.stderr.readline()
        assert line.startswith("stack: up"), line
        r = sh(f"curl -sS --max-time 10 http://{STACK}:8080/bytes/100000 | sha256sum")
        assert r.stdout.split()[0] == _pattern_sha256(100_000)
        with socket.create_connection((STACK, 7), timeout=5) as s:
            s.sendall(b"hello echo")
            assert s.recv(100) == b"hello echo"
        rest = stop_stack_up(p)
    finally:
        kill(p)
    assert "stack: down" in rest
    events = [json.loads(ln) for ln in trace.read_text().splitlines()]
    states = [e for e in events if e["event"] == "state"]
    assert any(e["to"] == "LISTEN" and e["conn"].endswith(":8080-0.0.0.0:0") for e in states)
    assert any(e["to"] == "ESTABLISHED" and ":7-" in e["conn"] for e in states)
