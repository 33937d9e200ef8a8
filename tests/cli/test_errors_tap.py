"""``stack up`` against a real TAP (root, in the test's private network namespace).

* A TAP another ``stack up`` holds: exit 1, one ``stack: error:`` line naming
  ``--tap`` and saying it is busy; the first stack keeps answering.
* Without CAP_NET_ADMIN: exit 1, "permission denied", and no TAP is left.
* A service port taken on the stack before the service binds, or another
  stack's --control path: exit 1, one line.
* No ``--host-address`` and the kernel side down: a ``stack: warning:`` line
  after ``stack: up``; none when the TAP is up or ``--host-address`` is given.
* ``--msl 1``: TIME_WAIT lasts 2 s (from the trace of a real connection).
* Every flag at a good value at once still starts the stack.
* A stderr whose reader went away: SIGTERM still ends the stack cleanly.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from stack import tracetool
from stack.link.tap import interface_exists
from tests.helpers.cli import ENV, ROOT, assert_one_error, run_stack
from tests.helpers.tap import kill, sh, stack_up

HOST = "192.0.2.1/24"
FAULTS = {**ENV, "PYTHONFAULTHANDLER": "1"}  # SIGABRT prints every thread's stack


def _up(tap: str, *args: str) -> subprocess.Popen:
    """``stack up --tap TAP ARGS...`` (no --host-address unless given), stderr a text pipe."""
    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    return subprocess.Popen([sys.executable, "-m", "stack", "up", "--tap", tap, *args],
                            stderr=subprocess.PIPE, text=True, env=FAULTS, cwd=ROOT)


def _first_line(p: subprocess.Popen) -> str:
    line = p.stderr.readline()
    assert line.startswith("stack: up"), line
    return line


def _stop(p: subprocess.Popen) -> str:
    """SIGTERM; asserts a clean exit (0) within 15 s and returns the rest of stderr.
    A stack still running then is aborted, and its threads' stacks (faulthandler)
    are the failure's message."""
    p.send_signal(signal.SIGTERM)
    try:
        rest = p.communicate(timeout=15)[1]
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGABRT)
        raise AssertionError("no exit 15 s after SIGTERM:\n" + p.communicate(timeout=15)[1]) from None
    assert p.returncode == 0, rest
    return rest


def test_a_busy_tap_is_one_error_line(netns):
    first = stack_up("tclibusy")
    try:
        _first_line(first)
        r = run_stack("up", "--tap", "tclibusy", "--host-address", HOST)
        assert_one_error(r, 1, "--tap tclibusy", "busy")
        sh("ping -c 1 -W 2 192.0.2.2")  # the first stack still has it, and answers
        rest = _stop(first)
        assert "warning" not in rest and "error" not in rest, rest
    finally:
        kill(first)


def test_permission_denied_is_one_error_line(netns):
    subprocess.run(["ip", "link", "del", "tcliperm"], capture_output=True)
    r = subprocess.run(["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
                        sys.executable, "-m", "stack", "up", "--tap", "tcliperm",
                        "--host-address", HOST], capture_output=True, text=True, timeout=30,
                       env=ENV, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert_one_error(r, 1, "--tap tcliperm", "permission denied")
    assert not interface_exists("tcliperm")


def test_a_warning_when_the_kernel_side_is_down(netns):
    p = _up("tcliwarn")
    try:
        _first_line(p)
        warning = p.stderr.readline()
        assert warning.startswith("stack: warning: "), warning
        assert "--host-address" in warning and "tcliwarn" in warning and "down" in warning
        _stop(p)
    finally:
        kill(p)


def test_no_warning_when_the_kernel_side_is_up(netns):
    sh("ip tuntap add mode tap name tcliup && ip link set tcliup up")
    p = None
    try:
        p = subprocess.Popen([sys.executable, "-m", "stack", "up", "--tap", "tcliup"],
                             stderr=subprocess.PIPE, text=True, env=FAULTS, cwd=ROOT)
        _first_line(p)
        rest = _stop(p)
        assert rest.startswith("stack: down") and "warning" not in rest, rest
        assert interface_exists("tcliup")  # not ours: left as it was
    finally:
        kill(p)
        sh("ip link del tcliup", check=False)


def test_msl_sets_time_wait_to_twice_it(netns, tmp_path):
    trace = tmp_path / "t.jsonl"
    p = stack_up("tclimsl", "--msl", "1", "--serve", "http:80", "--trace", str(trace))
    try:
        _first_line(p)
        # HTTP/1.0 without keep-alive: the server closes first (the client reads
        # until the stack's FIN), so the stack's side waits in TIME_WAIT.
        with socket.create_connection(("192.0.2.2", 80), timeout=10) as s:
            s.sendall(b"GET /bytes/1000 HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.") and answer.endswith(bytes(i % 251 for i in range(1000)))
        sh("sleep 3")
        _stop(p)
    finally:
        kill(p)
    events, bad = tracetool.load(str(trace))
    assert bad == 0
    states = [e for e in events if e["layer"] == "tcp" and e["event"] == "state"
              and e["conn"].startswith("192.0.2.2:80-")]
    entered = [e for e in states if e["to"] == "TIME_WAIT"]
    assert len(entered) == 1, states
    left = [e for e in states if e["from"] == "TIME_WAIT" and e["conn"] == entered[0]["conn"]]
    assert len(left) == 1 and left[0]["to"] == "CLOSED", states
    assert "timer" in left[0]["cause"], left[0]
    assert 1.95 <= left[0]["t"] - entered[0]["t"] <= 2.5, (entered, left)


def test_every_flag_at_a_good_value_starts(netns, tmp_path):
    p = stack_up("tcligood", "--mtu", "9000", "--mac", "02-00-5E-10-00-01",
                 "--gateway", "192.0.2.1", "--impair", "seed=3", "--congestion", "reno",
                 "--msl", "1", "--busy-poll", "50", "--serve", "echo:7", "--serve", "udp-echo:7",
                 "--pcap", str(tmp_path / "cap.pcap"), "--trace", str(tmp_path / "t.txt"),
                 "--trace-format", "text", "--trace-level", "state", "--trace-layers", "tcp,ip")
    try:
        line = _first_line(p)
        assert "mac=02:00:5e:10:00:01" in line and "mtu=9000" in line, line
        sh("ping -c 1 -W 2 192.0.2.2")
        assert sh("echo hello | nc -q 1 -w 5 192.0.2.2 7").stdout == "hello\n"
        rest = _stop(p)
        assert "error" not in rest and "warning" not in rest, rest
    finally:
        kill(p)
    assert (tmp_path / "cap.pcap").stat().st_size > 24  # more than the pcap file header


def test_a_closed_stderr_does_not_stop_a_clean_exit(netns):
    """``stack up 2>&1 | head -1``: after head is gone, SIGTERM still closes
    everything and removes the TAP (the exit messages meet a closed pipe)."""
    p = stack_up("tclipipe")
    try:
        _first_line(p)
        p.stderr.close()
        p.send_signal(signal.SIGUSR1)  # counters to a closed pipe: no reason to stop
        sh("ping -c 1 -W 2 192.0.2.2")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0
        assert not interface_exists("tclipipe")
    finally:
        kill(p)


def test_sigterm_right_after_up_always_ends_it(netns):
    """SIGTERM the moment ``stack up`` is up, ten times: it ends cleanly each time.
    (A handler that set a threading.Event hung for good when the signal landed
    while the main thread held the Event's lock inside ``wait``; this loop hits
    that window only now and then, under load. The pipe leaves no such window.)"""
    for _ in range(10):
        p = stack_up("tcliterm")
        try:
            _first_line(p)
            _stop(p)
        finally:
            kill(p)
        assert not interface_exists("tcliterm")


PORT_TAKEN = """
import sys
import stack.services as services
real = services.start_service
taken = []  # (a socket dropped is closed, as CPython's)
def start(net, spec, *args, **kwargs):
    if spec.transport == "tcp":  # another program on the stack took the port first
        taken.append(net.create_server(("0.0.0.0", spec.port)))
    return real(net, spec, *args, **kwargs)
services.start_service = start
from stack.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_port_in_use_is_one_error_line(netns):
    """The real ``stack up`` on a real TAP, with the TCP port taken on the stack
    just before its service binds: exit 1, one line (udp-echo:7, started
    first, is closed again), and the TAP is removed."""
    subprocess.run(["ip", "link", "del", "tcliport"], capture_output=True)
    r = subprocess.run([sys.executable, "-c", PORT_TAKEN, "up", "--tap", "tcliport",
                        "--host-address", HOST, "--serve", "udp-echo:7", "--serve", "echo:7"],
                       capture_output=True, text=True, timeout=30, env=ENV, cwd=ROOT,
                       stdin=subprocess.DEVNULL)
    assert_one_error(r, 1, "--serve echo:7", "TCP port 7", "in use")
    assert not interface_exists("tcliport")


def test_a_control_socket_in_use_is_one_error_line(netns, tmp_path):
    """A second stack on another TAP but the first one's --control path: exit 1,
    one line naming --control, and its own TAP is removed again."""
    path = str(tmp_path / "ctl.sock")
    first = stack_up("tclictl1", "--control", path)
    try:
        _first_line(first)
        subprocess.run(["ip", "link", "del", "tclictl2"], capture_output=True)
        r = run_stack("up", "--tap", "tclictl2", "--address", "198.51.100.2/24",
                      "--host-address", "198.51.100.1/24", "--control", path)
        assert_one_error(r, 1, "--control", path)
        assert not interface_exists("tclictl2")
        _stop(first)
    finally:
        kill(first)
