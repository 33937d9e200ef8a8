"""The control socket's protocol, on a stack pair (no TAP): answers, bad
requests, slow clients, the socket file's life, and the commands' errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from stack import Stack, control


@pytest.fixture
def served(tmp_path):
    a, b = Stack.pair()
    path = str(tmp_path / "ctl.sock")
    srv = control.ControlServer(b, path, tap="mem0")
    yield a, b, srv, path
    srv.close()
    a.close()
    b.close()


def raw(path, data: bytes, shut: bool = True, timeout: float = 5.0) -> dict:
    """Send raw bytes to the control socket; its one-line JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # the server answered (an error) and closed before we were done
        out = b""
        while not out.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return json.loads(out)


def test_each_command_answers(served):
    a, b, srv, path = served
    with b.create_server(("0.0.0.0", 7000)):
        socks = control.request(path, "ss")["sockets"]
        assert [(s["proto"], s["state"], s["local"]) for s in socks] == [
            ("tcp", "LISTEN", ["0.0.0.0", 7000])]
    before = control.request(path, "stats")["counters"].get("ip.packets_in", 0)
    a.ping("192.0.2.2")
    a.ping("192.0.2.2")
    assert control.request(path, "stats")["counters"]["ip.packets_in"] == before + 2
    neigh = control.request(path, "neigh")["neighbours"]
    assert neigh == [{"dst": "192.0.2.1", "dev": "mem0", "lladdr": "02:53:c0:00:02:01",
                      "state": "REACHABLE"}]
    assert control.request(path, "route")["routes"] == [
        {"dst": "192.0.2.0/24", "dev": "mem0", "proto": "kernel", "scope": "link",
         "src": "192.0.2.2"},
        {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local",
         "proto": "kernel", "scope": "host", "src": "127.0.0.1"}]
    hello = control.request(path, "hello")
    assert hello["tap"] == "mem0" and hello["pid"] == os.getpid()
    assert srv.requests == 6 and srv.errors == 0


@pytest.mark.parametrize("data, why", [
    (b"this is not json\n", "bad request: not JSON"),
    (b'{"cmd": "reboot"}\n', "unknown command 'reboot'"),
    (b'["ss"]\n', "unknown command None"),
    (b'{"cmd": 7}\n', "unknown command 7"),
    (b"\xff\xfe\n", "bad request: not JSON"),
    (b"[" * 4000 + b"\n", "bad request: not JSON (maximum recursion depth"),
    (b"\n", "bad request: not JSON"),
    (b'{"cmd": "ss"' + b" " * 5000 + b"}\n", "request longer than 4096 bytes"),
])
def test_bad_requests_get_an_error_and_the_server_goes_on(served, data, why):
    a, b, srv, path = served
    answer = raw(path, data)
    assert answer["ok"] is False and answer["error"].startswith(why)
    assert b.stats()["socket.control_errors"] == 1
    assert srv.errors == 1
    assert control.request(path, "ss") == {"sockets": []}


def test_the_size_bound_counts_the_newline(served):
    path = served[3]
    pad = control.MAX_REQUEST - len(b'{"cmd": "route"}') - 1
    assert raw(path, b'{"cmd": "route"}' + b" " * pad + b"\n")["ok"] is True
    answer = raw(path, b'{"cmd": "route"}' + b" " * (pad + 1) + b"\n")
    assert answer == {"ok": False, "error": "request longer than 4096 bytes"}


def test_a_request_without_a_newline_ends_at_eof(served):
    path = served[3]
    assert raw(path, b'{"cmd": "route"}')["ok"] is True


def test_errors_are_traced(tmp_path):
    events = []

    class Sink:
        def write(self, text):
            events.extend(json.loads(line) for line in text.splitlines() if line)

        def flush(self):
            pass

    a, b = Stack.pair(trace=None)
    from stack.trace import Trace

    b.trace = Trace(Sink(), "jsonl")
    path = str(tmp_path / "c")
    with control.ControlServer(b, path):
        raw(path, b"nonsense\n")
    b.trace.flush()
    a.close()
    b.close()
    assert any(e["layer"] == "socket" and e["event"] == "control_error"
               and e["reason"].startswith("bad request") for e in events)


def test_a_slow_client_holds_up_nobody_and_times_out(served, monkeypatch):
    a, b, srv, path = served
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(path)
    slow.sendall(b'{"cmd": ')            # ...and nothing more
    t0 = time.monotonic()
    assert control.request(path, "ss", timeout=1.0) == {"sockets": []}
    assert time.monotonic() - t0 < 0.5
    slow.settimeout(control.REQUEST_TIMEOUT + 2)
    answer = json.loads(slow.recv(65536))
    waited = time.monotonic() - t0
    slow.close()
    assert answer == {"ok": False, "error": "request timed out"}
    assert control.REQUEST_TIMEOUT - 0.5 <= waited <= control.REQUEST_TIMEOUT + 1.5


def test_too_many_clients_are_told_so(served):
    path = served[3]
    idle = []
    for _ in range(control.MAX_CLIENTS):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        idle.append(s)
    try:
        time.sleep(0.2)
        assert raw(path, b'{"cmd": "ss"}\n') == {"ok": False, "error": "too many clients"}
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert control.request(path, "ss") == {"sockets": []}


def test_the_socket_file_is_removed_and_a_stale_one_replaced(tmp_path):
    a, b = Stack.pair()
    path = str(tmp_path / "ctl")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)                     # bound, never listening: left by a dead stack
    stale.close()
    srv = control.ControlServer(b, path)
    assert control.request(path, "route")["routes"]
    with pytest.raises(OSError):         # a live one is not taken over
        control.ControlServer(a, path)
    assert control.request(path, "route")["routes"][0]["src"] == "192.0.2.2"
    srv.close()
    assert not os.path.exists(path)
    with pytest.raises(control.NoStack):
        control.request(path, "ss")
    a.close()
    b.close()


def test_a_regular_file_is_never_replaced(tmp_path):
    a, b = Stack.pair()
    path = tmp_path / "precious"
    path.write_text("data")
    with pytest.raises(OSError):
        control.ControlServer(b, str(path))
    assert path.read_text() == "data"
    a.close()
    b.close()


def test_abstract_names_are_per_tap():
    assert control.abstract_name("tap0") == "\0stack/tap0"
    assert control.describe("\0stack/tap0") == "@stack/tap0"


def run_stack(*args):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "stack", *args], capture_output=True,
                          text=True, timeout=30, env=env)


@pytest.mark.parametrize("cmd", ["ss", "stats", "neigh", "route"])
def test_no_stack_is_one_error_line(cmd, tmp_path):
    r = run_stack(cmd, "--tap", "nosuchtap9")
    assert r.returncode == 1
    assert r.stderr.startswith("stack: error: no stack on tap nosuchtap9 (@stack/nosuchtap9: ")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = run_stack(cmd, "--control", str(tmp_path / "none"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"stack: error: no stack at {tmp_path / 'none'} (")


def test_commands_print_what_the_server_answers(served):
    a, b, srv, path = served
    a.ping("192.0.2.2")
    with b.create_server(("0.0.0.0", 7000), backlog=5):
        r = run_stack("ss", "-tln", "--control", path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [
            "State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess",
            "LISTEN 0      5            0.0.0.0:7000      0.0.0.0:*          ",
        ]
    r = run_stack("neigh", "--control", path)
    assert r.stdout == "192.0.2.1 dev mem0 lladdr 02:53:c0:00:02:01 REACHABLE\n"
    r = run_stack("route", "--control", path)
    assert r.stdout == ("192.0.2.0/24 dev mem0 proto kernel scope link src 192.0.2.2\n"
                        "local 127.0.0.0/8 dev lo table local proto kernel scope host"
                        " src 127.0.0.1\n")
    r = run_stack("stats", "--control", path)
    assert "icmp:\n" in r.stdout and "ip:\n    packets_in: " in r.stdout


def test_a_bad_state_filter_is_a_usage_error(served):
    r = run_stack("ss", "state", "waiting", "--control", served[3])
    assert r.returncode == 2 and r.stderr.startswith("stack: error: state: unknown state")
    r = run_stack("ss", "established", "--control", served[3])
    assert r.returncode == 2 and "expected 'state NAME'" in r.stderr


def test_a_stack_that_does_not_answer_is_one_error_line(tmp_path):
    path = str(tmp_path / "mute")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen(1)                   # accepts (in the kernel) and never answers
        r = run_stack("route", "--control", path)
    assert r.returncode == 1
    assert r.stderr == f"stack: error: the stack at {path} ({path}): no answer within 5 s\n"
