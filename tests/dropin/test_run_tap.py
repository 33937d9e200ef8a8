"""``stack run`` against the kernel on a TAP: Python's own HTTP server
answering curl, a script downloading from a kernel server, exit statuses and
signals passed through as python would, every byte the program sent
delivered before the FIN, and the trace of the program's connections."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys

import pytest

from tests.helpers.cli import ENV, ROOT
from tests.helpers.dropin import KERNEL, STACK, start_peer
from tests.helpers.tap import kill, sh


def _run(tap: str, *args: str, trace: str | None = None) -> subprocess.Popen:
    """``stack run --tap TAP --host-address 192.0.2.1/24 [--trace F] ARGS...``;
    stdout and stderr are text pipes."""
    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    flags = ["--trace", trace] if trace else []
    return subprocess.Popen([sys.executable, "-m", "stack", "run", "--tap", tap,
                             "--host-address", "192.0.2.1/24", *flags, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=ROOT)


def _up(p: subprocess.Popen) -> None:
    line = p.stderr.readline()
    assert line.startswith("stack: up tap="), line + p.stderr.read()


def _finish(p: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(p)
        raise AssertionError("stack run did not end") from None
    return p.returncode, out, err


def _states(trace: str, port: int) -> list[list[str]]:
    """Per connection with an end on ``port`` (listeners left out): its states
    in order, from the jsonl trace."""
    by_conn: dict[str, list[str]] = {}
    with open(trace) as f:
        for line in f:
            e = json.loads(line)
            if e.get("event") == "state" and not e["conn"].endswith("-0.0.0.0:0") and any(
                    end.endswith(f":{port}") for end in e["conn"].split("-")):
                by_conn.setdefault(e["conn"], [e["from"]]).append(e["to"])
    return list(by_conn.values())


def test_http_server_module_answers_curl(netns, tmp_path):
    (tmp_path / "index.html").write_text("<p>served by python over the stack</p>\n")
    trace = str(tmp_path / "trace.jsonl")
    p = _run("trun0", "--", "-m", "http.server", "8000", "--bind", STACK,
             "--directory", str(tmp_path), trace=trace)
    try:
        _up(p)
        assert p.stdout.readline().startswith(f"Serving HTTP on {STACK} port 8000")
        body = sh(f"curl -sS --max-time 10 http://{STACK}:8000/index.html").stdout
        p.send_signal(signal.SIGINT)  # http.server's own KeyboardInterrupt handling
        code, out, err = _finish(p)
    finally:
        kill(p)
    assert body == "<p>served by python over the stack</p>\n"
    assert code == 0, err
    assert "Keyboard interrupt received, exiting." in out
    assert err.splitlines()[-1] == "stack: down"
    [states] = _states(trace, 8000)  # curl's connection, as the server side saw it
    assert states[:3] == ["LISTEN", "SYN_RECEIVED", "ESTABLISHED"]
    assert states[-1] in ("CLOSED", "TIME_WAIT")  # the teardown: FINs one way or the other
    assert {"FIN_WAIT_1", "CLOSE_WAIT"} & set(states), states


def test_a_script_downloads_from_a_kernel_server(netns, tmp_path):
    server = start_peer("http", "0.0.0.0", 8090)  # before the TAP exists
    script = tmp_path / "fetch.py"
    script.write_text(
        "import hashlib, sys, urllib.request\n"
        "with urllib.request.urlopen(sys.argv[1], timeout=10) as r:\n"
        "    data = r.read()\n"
        "print(len(data), hashlib.sha256(data).hexdigest(), sys.argv[0])\n")
    trace = str(tmp_path / "trace.jsonl")
    try:
        p = _run("trun1", "--", str(script), f"http://{KERNEL}:8090/bytes/300000", trace=trace)
        code, out, err = _finish(p)
    finally:
        kill(server)
    expected = hashlib.sha256(bytes(i % 251 for i in range(300000))).hexdigest()
    assert code == 0, err
    assert out == f"300000 {expected} {script}\n"
    [states] = _states(trace, 8090)
    assert states[:3] == ["CLOSED", "SYN_SENT", "ESTABLISHED"]  # the handshake
    assert "FIN_WAIT_1" in states or "CLOSE_WAIT" in states, states  # and the teardown
    assert states[-1] in ("TIME_WAIT", "CLOSED"), states


@pytest.mark.parametrize("code, expected, stderr_has", [
    ("raise SystemExit(3)", 3, None),
    ("import sys; sys.exit('bye')", 1, "bye"),
    ("1/0", 1, 'File "<string>", line 1, in <module>'),
    ("import sys; print(sys.argv)", 0, None),
    ("import stack; stack.unpatch()", 0, None),  # a program that undoes the drop-in itself
    ("from stack import dropin; print(dropin.patched_to().address_str)", 0, None),
])
def test_the_programs_exit_status_is_the_commands(netns, code, expected, stderr_has):
    p = _run("trun2", "--", "-c", code, "an-arg")
    status, out, err = _finish(p)
    assert status == expected, err
    if stderr_has:
        assert stderr_has in err
    else:
        assert "Traceback" not in err, err
    assert "program.py" not in err and "runpy" not in err  # the traceback is the program's
    if "argv" in code:
        assert out == "['-c', 'an-arg']\n"
    if "patched_to" in code:  # the program finds the stack it runs over
        assert out == "192.0.2.2\n"


def test_every_byte_is_delivered_before_the_fin(netns):
    """The program queues 8 MB (its send buffer holds it all) for a kernel
    sink that starts reading 3 s later, and exits without closing: the stack
    delivers every byte (longer than the 1 s close grace), then closes."""
    sink = start_peer("sink", "0.0.0.0", 8091, 3)  # before the TAP exists
    program = ("import socket; s = socket.socket(); "
               "s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 23); "
               f"s.connect(('{KERNEL}', 8091)); s.sendall(bytes(range(256)) * 32768)")
    try:
        p = _run("trun3", "--", "-c", program)
        status, _, err = _finish(p)
        got = sink.communicate(timeout=30)[0]
    finally:
        kill(sink)
    assert status == 0, err
    data = bytes(range(256)) * 32768
    assert got == f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"


def test_a_server_that_sends_and_exits_delivers_everything(netns):
    program = ("import socket\n"
               f"srv = socket.create_server(('{STACK}', 8092))\n"
               "print('listening', flush=True)\n"
               "conn, _ = srv.accept()\n"
               "conn.sendall(b'x' * 3_000_000)\n"
               "conn.close()\n")
    p = _run("trun4", "--", "-c", program)
    try:
        _up(p)
        assert p.stdout.readline() == "listening\n"
        got = subprocess.run([sys.executable, "tests/dropin/peer.py", "count", STACK, "8092"],
                             capture_output=True, text=True, timeout=30, cwd=ROOT)
        status, _, err = _finish(p)
    finally:
        kill(p)
    assert status == 0, err
    assert got.stdout == f"3000000 {hashlib.sha256(b'x' * 3_000_000).hexdigest()}\n"


@pytest.mark.parametrize("sig, expected, seen", [
    (signal.SIGINT, 130, "KeyboardInterrupt"),
    (signal.SIGTERM, 143, None),
])
def test_a_signal_reaches_a_program_blocked_on_a_stack_socket(netns, sig, expected, seen):
    program = ("import socket\n"
               f"srv = socket.create_server(('{STACK}', 8093))\n"
               "try:\n"
               "    print('waiting', flush=True)\n"
               "    srv.accept()\n"
               "finally:\n"
               "    print('finally ran', flush=True)\n")
    p = _run("trun5", "--", "-c", program)
    try:
        _up(p)
        assert p.stdout.readline() == "waiting\n"
        p.send_signal(sig)
        status, out, err = _finish(p, timeout=15)
    finally:
        kill(p)
    assert status == expected, err
    assert out == "finally ran\n"
    if seen:
        assert seen in err
    assert err.splitlines()[-1] == "stack: down"
