"""Lessons on one connection's life: the handshake and teardown, refused
against timed out, CLOSE_WAIT from a program that never closes, and
TIME_WAIT from connection churn."""

from __future__ import annotations

import json
import sys

from stack.lab import evidence as ev
from stack.lab.lab import Lab
from stack.lab.lessons import Report, lesson

PY = sys.executable

PAIR = """
[hosts.client]
kind = "stack"
address = "198.51.100.2/24"
link = "lan"

[hosts.server]
address = "198.51.100.1/24"
link = "lan"
"""

ROUTED = """
[hosts.client]
kind = "stack"
address = "198.51.100.2/24"
gateway = "198.51.100.1"
link = "lan"

[hosts.linux]
address = "198.51.100.3/24"       # a kernel host beside the stack, for comparison
gateway = "198.51.100.1"
link = "lan"

[hosts.server]
address = "203.0.113.2/24"
gateway = "203.0.113.1"
link = "wan"

[routers.r1]
interfaces = { lan = "198.51.100.1/24", wan = "203.0.113.1/24" }
rules = ["tcp dport 81 drop",
         "tcp dport 82 reject with icmp type host-unreachable"]
"""

ECHO_ONCE = """
import socket
s = socket.create_server(("198.51.100.1", 7000))
c, _ = s.accept()
c.sendall(c.recv(100).upper())
while c.recv(100):
    pass
c.close()
"""


def _conn_states(trace: list[dict], port: int) -> list[tuple[float, str, str, str, str]]:
    return [s for s in ev.states(trace) if f":{port}" in s[1]]


@lesson("handshake", "Handshake and teardown: who sends what, who waits in TIME_WAIT",
        PAIR, ("--msl", "1"))
def handshake(lab: Lab) -> Report:
    lab.start("server", [PY, "-c", ECHO_ONCE], "handshake-server.out")
    lab.wait(0.3)
    lab.stack_run("client", "handshake", """
import socket, time
s = socket.create_connection(("198.51.100.1", 7000), timeout=5)
s.sendall(b"hello")
print(s.recv(100))
s.close()
time.sleep(2.6)   # TIME_WAIT (2 MSL = 2 s here) runs out while we watch
""")
    r = Report(
        "The stack (198.51.100.2) opened a connection to a kernel server: SYN, SYN,ACK, "
        "ACK, the three-way handshake. It sent 'hello', got 'HELLO' back and closed first: "
        "its FIN took it to FIN_WAIT_1, the server's ACK to FIN_WAIT_2 and the server's own "
        "FIN to TIME_WAIT. The side that closes first waits there for 2 MSL (--msl 1: 2 s; "
        "Linux's is fixed at 60 s) so that a lost last ACK can still be repeated and old "
        "segments die out. The server, closing second, went CLOSE_WAIT, LAST_ACK, CLOSED "
        "and never waited.",
        ["handshake-timeline.txt: the client's state changes, each with its cause",
         "handshake-ladder.txt: every segment between the two, in order",
         "handshake.pcap: the same on the wire (tcpdump -nr handshake.pcap)"])
    trace = ev.trace(f"{lab.out}/handshake.jsonl")
    tcp = [p for p in ev.pcap(f"{lab.out}/handshake.pcap") if p.proto == 6]
    first = [(p.src, p.flags) for p in tcp[:3]]
    r.check("SYN from the client, SYN,ACK from the server, ACK from the client",
            first == [("198.51.100.2", "S"), ("198.51.100.1", "S."), ("198.51.100.2", ".")],
            first)
    path = [to for _, _, _, to, _ in _conn_states(trace, 7000)]
    r.check("the client went FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT, CLOSED",
            path[-4:] == ["FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSED"], path)
    at = {to: t for t, _, _, to, _ in _conn_states(trace, 7000)}
    waited = at.get("CLOSED", 0) - at.get("TIME_WAIT", 0)
    r.check("TIME_WAIT lasted 2 MSL (2 s)", 1.9 <= waited <= 2.5, f"{waited:.2f} s")
    fins = [p.src for p in tcp if "F" in p.flags]
    r.check("the client's FIN came first, the server's second",
            fins[:1] == ["198.51.100.2"] and "198.51.100.1" in fins, fins)
    return r


CONNECTS = """
import errno, json, socket, time
out = {}
for name, addr, timeout in (("refused", ("203.0.113.2", 80), 10),
                            ("dropped", ("203.0.113.2", 81), 3),
                            ("rejected", ("203.0.113.2", 82), 10),
                            ("nobody", ("198.51.100.77", 80), 10)):
    s = socket.socket()
    s.settimeout(timeout)
    t = time.monotonic()
    try:
        s.connect(addr)
        what = "connected"
    except OSError as e:
        what = type(e).__name__ + (" " + errno.errorcode[e.errno] if e.errno else "")
    out[name] = [what, round(time.monotonic() - t, 3)]
    s.close()
print(json.dumps(out))
"""


def _results(text: str) -> dict[str, list]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                break
    return {}


@lesson("refused", "Connection refused against timed out, rejected and no route to host",
        ROUTED)
def refused(lab: Lab) -> Report:
    stack = _results(lab.stack_run("client", "refused", CONNECTS, timeout=40).stdout)
    linux = _results(lab.run("linux", [PY, "-c", CONNECTS], timeout=40).stdout)
    lab.finish()
    r = Report(
        "Four connects from the stack, and the same four from a kernel host beside it. Port "
        "80 on the server is closed: the server's kernel answers the SYN with RST,ACK and "
        "connect() fails at once with ECONNREFUSED. Port 81 is dropped by the router: no "
        "answer at all, so the SYN is sent again (after 1 s, then 1 s later) until the "
        "3 s timeout gives up (TimeoutError; without one, after 6 retries, about two "
        "minutes). Port 82 is rejected by the router with ICMP host unreachable: connect() "
        "fails at once with EHOSTUNREACH. 198.51.100.77 is on the stack's own link, but "
        "nobody has it: ARP asks three times, and after 3 s connect() fails with "
        "EHOSTUNREACH (\"No route to host\").",
        ["refused.log: the stack's results; the kernel's are the same",
         "refused-timeline.txt: each connection's states and why it closed",
         "r1-wan.pcap: the RST from the server; r1-lan.pcap: the ICMP error from the router",
         "refused.jsonl: the arp events for 198.51.100.77"])
    r.check("the stack and Linux got the same errors",
            bool(stack) and {k: v[0] for k, v in stack.items()} == {k: v[0] for k, v in linux.items()},
            f"stack {stack}, linux {linux}")
    got = stack.get("refused", ["", 99])
    r.check("refused: ECONNREFUSED in under 100 ms",
            got[0] == "ConnectionRefusedError ECONNREFUSED" and got[1] < 0.1, got)
    got = stack.get("dropped", ["", 0])
    r.check("dropped: a timeout after the connect timeout (3 s)",
            got[0] == "TimeoutError" and 2.9 <= got[1] < 4, got)
    trace = ev.trace(f"{lab.out}/refused.jsonl")
    syns = [e for e in ev.events(trace, "tcp", "seg", dir="out", flags="S")
            if ":81" in e.get("conn", "")]
    r.check("dropped: the SYN was sent three times", len(syns) == 3, len(syns))
    got = stack.get("rejected", ["", 99])
    r.check("rejected: EHOSTUNREACH at once", got[0].endswith("EHOSTUNREACH") and got[1] < 0.1,
            got)
    icmp = [p for p in ev.pcap(f"{lab.out}/r1-lan.pcap") if p.icmp == (3, 1)]
    r.check("rejected: the router sent ICMP host unreachable", bool(icmp), len(icmp))
    got = stack.get("nobody", ["", 0])
    r.check("nobody: EHOSTUNREACH after ARP gave up (about 3 s)",
            got[0].endswith("EHOSTUNREACH") and 2.5 <= got[1] < 4.5, got)
    return r


SERVED = """
[hosts.server]
kind = "stack"
address = "198.51.100.2/24"
link = "lan"

[hosts.client]
address = "198.51.100.1/24"
link = "lan"
"""

SNAPSHOT = """
import json
from stack import control
print(json.dumps(control.request(control.abstract_name("tap0"), "ss")["sockets"]))
"""


def snapshot(lab: Lab, host: str, step: str) -> list[dict]:
    """The stack's sockets in ``host`` now, from its control socket (what
    ``stack ss`` shows), saved to ``out/STEP-ss.json``."""
    text = lab.run(host, [PY, "-c", SNAPSHOT]).stdout
    with open(f"{lab.out}/{step}-ss.json", "w") as f:
        f.write(text)
    try:
        return list(json.loads(text.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return []


NEVER_CLOSES = """
import socket
s = socket.create_server(("0.0.0.0", 8080))
held = []
while True:
    c, _ = s.accept()
    c.recv(100)
    held.append(c)   # never closed: each stays in CLOSE_WAIT once the client is done
"""

CLIENTS = """
import socket, time
for i in range(5):
    c = socket.create_connection(("198.51.100.2", 8080), timeout=5)
    c.sendall(b"hello")
    c.close()
time.sleep(0.5)
"""


@lesson("closewait", "CLOSE_WAIT from a program that never closes", SERVED)
def closewait(lab: Lab) -> Report:
    lab.stack_up("server", "closewait", code=NEVER_CLOSES)
    lab.run("client", [PY, "-c", CLIENTS])
    ours = snapshot(lab, "server", "closewait")
    theirs = lab.sh("client", "ss -tanH state fin-wait-2 '( dport = :8080 )'").stdout
    with open(f"{lab.out}/closewait-kernel-ss.txt", "w") as f:
        f.write(theirs)
    lab.stack_down("server")
    r = Report(
        "Five kernel clients connected to a program over the stack, sent a line and closed. "
        "The program read the line but never called close(). Each client's FIN moved the "
        "stack's side to CLOSE_WAIT, where TCP waits for the application: nothing times "
        "it out, so the connections pile up for as long as the program lives, each "
        "holding its buffers. The clients sit in FIN_WAIT_2, waiting for a FIN that never "
        "comes (Linux gives up on an orphan after 60 s, tcp_fin_timeout).",
        ["closewait-ss.json: the stack's sockets while the program ran (stack ss -tan)",
         "closewait-kernel-ss.txt: the clients' side (ss -tan state fin-wait-2)",
         "closewait-timeline.txt: each connection: ESTABLISHED, then CLOSE_WAIT on the FIN"])
    waiting = [s for s in ours if s.get("state") == "CLOSE_WAIT" and s["local"][1] == 8080]
    r.check("five connections in CLOSE_WAIT on the stack while the program ran",
            len(waiting) == 5, len(waiting))
    r.check("five in FIN_WAIT_2 on the kernel clients", len(theirs.splitlines()) == 5,
            len(theirs.splitlines()))
    trace = ev.trace(f"{lab.out}/closewait.jsonl")
    moved = [s for s in _conn_states(trace, 8080) if s[3] == "CLOSE_WAIT"]
    r.check("each went to CLOSE_WAIT on the peer's FIN",
            len(moved) == 5 and all("FIN" in s[4] for s in moved), [s[4] for s in moved])
    return r


HTTP_SERVER = """
import http.server, sys, threading
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive unless the client says close
    def do_GET(self):
        body = b"x" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
for port in (8000, 8001):
    server = http.server.ThreadingHTTPServer(("198.51.100.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
"""

CHURN = """
import http.client, time
for i in range(20):                        # a new connection per request
    c = http.client.HTTPConnection("198.51.100.1", 8000, timeout=5)
    c.request("GET", "/")
    c.getresponse().read()
    c.close()
c = http.client.HTTPConnection("198.51.100.1", 8001, timeout=5)
for i in range(20):                        # one connection, kept alive
    c.request("GET", "/")
    c.getresponse().read()
c.close()
print("done", flush=True)
time.sleep(30)
"""


@lesson("timewait", "TIME_WAIT from connection churn, against keep-alive", PAIR)
def timewait(lab: Lab) -> Report:
    lab.start("server", [PY, "-c", HTTP_SERVER], "timewait-server.out")
    lab.wait(0.5)
    lab.stack_up("client", "timewait", code=CHURN)
    lab.wait_for(f"{lab.out}/timewait.log", "done", 30)
    ours = snapshot(lab, "client", "timewait")
    lab.stack_down("client")
    r = Report(
        "The stack made 20 HTTP requests on a new connection each (to port 8000), then 20 "
        "on one kept-alive connection (port 8001). The client closed every connection "
        "first, so every one of them waits in TIME_WAIT for 2 MSL (60 s, as Linux) on the "
        "client: 20 of them for the churn, one for keep-alive. Each TIME_WAIT entry holds "
        "a port pair; a client that opens connections faster than they expire runs out "
        "of ephemeral ports. Keep-alive, or letting the server close, avoids that.",
        ["timewait-ss.json: the stack's sockets after the requests (stack ss -tan)",
         "timewait-timeline.txt: 21 connections, each ending in TIME_WAIT"])
    waits = [s for s in ours if s.get("state") == "TIME_WAIT"]
    churn = [s for s in waits if s["remote"][1] == 8000]
    kept = [s for s in waits if s["remote"][1] == 8001]
    r.check("20 connections in TIME_WAIT from the churn", len(churn) == 20, len(churn))
    r.check("one from the 20 kept-alive requests", len(kept) == 1, len(kept))
    trace = ev.trace(f"{lab.out}/timewait.jsonl")
    closers = {s[1] for s in ev.states(trace) if s[3] == "FIN_WAIT_1"}
    r.check("the stack closed first on all 21", len(closers) == 21, len(closers))
    return r
