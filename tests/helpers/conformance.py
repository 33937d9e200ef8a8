"""A differential conformance harness: one scripted exchange, run against the
Linux kernel and against the stack, the answers normalized and compared.

A case is a script of one line per step, in packetdrill's spirit::

    s = socket(AF_INET, SOCK_STREAM)
    s.bind(("0.0.0.0", PORT)); s.listen(1)
    > S 0 win 65535 <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>
    > . 1 ack 1 win 1024 <nop,nop,TS val 101 ecr *>
    c, _ = s.accept()
    > P. 1:101(100) ack 1 <nop,nop,TS val 102 ecr *>
    wait 0.3
    c.recv(1000)

* ``> SEGMENT``: the tester sends a TCP segment: flags (``S``, ``.`` for ACK,
  ``P``, ``F``, ``R``, ``U``), ``SEQ`` or ``SEQ:END(LEN)`` relative to the
  tester's ISN, then any of ``ack N`` (relative to the device's ISN),
  ``win N``, ``urg N``, ``<options>`` (``mss N``, ``sackOK``, ``TS val V ecr
  E|*``, ``nop``, ``wscale N``, ``sack L:R ...`` relative to the device's
  ISN; ``ecr *`` echoes the device's last TSval), ``data "TEXT"``.
* ``wait SECONDS``: only listen to the device for that long.
* a line ending in ``&``: a socket call that may block (``accept``,
  ``connect``, ``recv``), run in the background; its outcome is recorded
  when it ends.
* anything else: Python run on the device under test (``socket`` makes the
  device's sockets; the ``socket`` module's constants, ``PORT``, ``TPORT``,
  ``DUT`` and ``TESTER`` are defined); an expression's value or exception is
  recorded.

The transcript has one line per thing the device did, in the order of the
script's steps: every segment it sent (flags, relative seq and ack, length,
the options present, SACK blocks relative to the tester's ISN, a zero window,
and when, bucketed), and every call's outcome (value, or exception class and
errno name). Two runs agree when their transcripts are equal.

Both devices sit on their own TAP in the test's network namespace. Linux:
the tester owns a TAP whose kernel side is ``DUT`` (192.0.2.1). The stack:
the stack owns a TAP at ``DUT`` whose kernel side has no address, and the
tester sends and listens there on an AF_PACKET socket. The tester is
``TESTER`` (192.0.2.2) and answers ARP for it.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import scapy.all as scapy  # type: ignore[import-untyped]
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, Raw  # type: ignore[import-untyped]

# What a ``> scapy EXPR`` line sees: IP(), ICMP(), UDP(), fragment(), IPOption_RR()...
SCAPY = {k: getattr(scapy, k) for k in ("IP", "ICMP", "UDP", "TCP", "Raw", "fragment",
                                        "IPOption_RR", "IPOption_Timestamp", "IPOption_NOP")}

DUT = "192.0.2.1"
TESTER = "192.0.2.2"
TESTER_MAC = "02:00:00:00:00:02"
TESTER_ISN = 1_000_000
SETTLE = 0.06          # seconds listened to after every step
TAIL = 0.3             # ... and after the last one
# The second run of every case is the kernel's again (tests/conformance/conftest.py).
LINUX_TWICE = os.environ.get("STACK_CONFORMANCE_LINUX_TWICE") == "1"
# When the device answered, as the gap since the event before (the tester's
# segment, the call, or the device's own previous segment): immediately, a
# delayed ACK (Linux: 40 ms and up), about an RTO floor (200 ms), and so on.
BUCKETS = ((0.02, "now"), (0.12, "<120ms"), (0.32, "~200ms"), (0.7, "~0.5s"), (1.5, "~1s"),
           (2.5, "~2s"), (3.5, "~3s"), (6.0, "~5s"), (1e9, "later"))


def bucket(seconds: float) -> str:
    return next(name for edge, name in BUCKETS if seconds < edge)


# -- wires: how the tester reaches a device ----------------------------------------------


class Wire:
    """Frames to and from the device under test."""

    def send(self, frame: bytes) -> None:
        raise NotImplementedError

    def recv(self, timeout: float) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TapWire(Wire):
    """The tester holds the TAP; the kernel, at ``DUT``, is on its other side."""

    def __init__(self, name: str) -> None:
        from stack.link.tap import TapLink

        self.link = TapLink(name, host_address=f"{DUT}/24")
        quiet(name)

    def send(self, frame: bytes) -> None:
        self.link.send(frame)

    def recv(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self.link.fileno()], [], [], max(timeout, 0))
        if not r:
            return None
        frames = self.link.recv_batch(1)
        return frames[0] if frames else None

    def close(self) -> None:
        self.link.close()


class PacketWire(Wire):
    """The tester on the kernel side of the stack's TAP (which has no address)."""

    def __init__(self, name: str) -> None:
        quiet(name)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((name, 0))

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def recv(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            r, _, _ = select.select([self.sock], [], [], max(deadline - time.monotonic(), 0))
            if not r:
                return None
            frame, addr = self.sock.recvfrom(65535)
            if addr[2] != socket.PACKET_OUTGOING:  # not our own frames
                return frame

    def close(self) -> None:
        self.sock.close()


def quiet(name: str) -> None:
    """No IPv6 chatter on the link, and the kernel answers no ARP there but its own."""
    for cmd in (f"sysctl -qw net.ipv6.conf.{name}.disable_ipv6=1",
                f"sysctl -qw net.ipv4.conf.{name}.arp_ignore=1",
                f"ip link set {name} up"):
        subprocess.run(cmd, shell=True, check=True, capture_output=True)


# -- devices under test ----------------------------------------------------------------------


@dataclass
class Device:
    """Where the socket calls run, and the wire to its link."""

    name: str
    socket: Callable[..., Any]
    wire: Wire
    mac: Callable[[], str | None]   # the device's MAC, once known
    close: Callable[[], None] = lambda: None


def linux_device(tap: str) -> Device:
    wire = TapWire(tap)
    import json

    shown = subprocess.run(["ip", "-j", "link", "show", tap], check=True, capture_output=True)
    mac = json.loads(shown.stdout)[0]["address"]
    return Device("linux", socket.socket, wire, lambda: mac, wire.close)


def stack_device(tap: str, **stack_args: Any) -> Device:
    import stack
    from stack.wire.eth import mac2str

    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    net = stack.Stack.tap(tap, address=f"{DUT}/24", **stack_args)
    wire = PacketWire(tap)

    def close() -> None:
        wire.close()
        net.close(grace=0)

    return Device("stack", net.socket, wire, lambda: mac2str(net.mac), close)


# -- the script ---------------------------------------------------------------------------------

_FLAGS = {"S": "S", ".": "A", "P": "P", "F": "F", "R": "R", "U": "U", "E": "E", "W": "C"}


@dataclass
class Conversation:
    """The state of one run: what the tester knows of the device, and the transcript."""

    port: int
    tport: int
    dut_isn: int | None = None
    dut_port: int | None = None
    last_tsval: int = 0
    tsvals_sent: set[int] = field(default_factory=set)
    lines: list[tuple[int, int, str]] = field(default_factory=list)  # (step, kind, text)
    step: int = 0
    last_event: float = 0.0   # the tester's last segment, call or device segment
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, text: str, order: int = 0) -> None:
        with self.lock:
            self.lines.append((self.step, order, text))

    def transcript(self) -> list[str]:
        """By step; within a step, the frames in the order they came, then the
        calls' outcomes sorted (a background call and a frame may race)."""
        with self.lock:
            lines = list(enumerate(self.lines))
        return [t for _, (_, _, t) in sorted(
            lines, key=lambda x: (x[1][0], x[1][1], x[0] if x[1][1] == 0 else x[1][2]))]


def parse_segment(line: str, conv: Conversation) -> Any:
    """``> FLAGS SEQ[:END(LEN)] [ack N] [win N] [urg N] [<opts>] [data "..."]`` → a scapy TCP."""
    m = re.match(r"(\S+)\s+(\d+)(?::(\d+)\((\d+)\))?(.*)$", line.strip())
    if not m:
        raise ValueError(f"not a segment: {line!r}")
    flags = "".join(_FLAGS[c] for c in m.group(1))
    seq = int(m.group(2))
    length = int(m.group(4)) if m.group(4) is not None else 0
    rest = m.group(5)
    opts: list[Any] = []
    om = re.search(r"<([^>]*)>", rest)
    if om:
        opts = parse_options(om.group(1), conv)
        rest = rest[:om.start()] + rest[om.end():]
    data = b"x" * length
    dm = re.search(r'data\s+"([^"]*)"', rest)
    if dm:
        data = dm.group(1).encode().decode("unicode_escape").encode("latin-1")
        rest = rest[:dm.start()] + rest[dm.end():]
    words = dict(re.findall(r"(ack|win|urg)\s+(\d+)", rest))
    ack = (conv.dut_isn or 0) + int(words["ack"]) if "ack" in words else 0
    return TCP(sport=conv.tport, dport=conv.dut_port or conv.port, flags=flags,
               seq=(TESTER_ISN + seq) & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
               window=int(words.get("win", 65535)), urgptr=int(words.get("urg", 0)),
               options=opts) / Raw(data)


def parse_options(text: str, conv: Conversation) -> list[Any]:
    out: list[Any] = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        words = item.split()
        kind = words[0]
        if kind == "mss":
            out.append(("MSS", int(words[1])))
        elif kind == "sackOK":
            out.append(("SAckOK", b""))
        elif kind == "nop":
            out.append(("NOP", None))
        elif kind == "wscale":
            out.append(("WScale", int(words[1])))
        elif kind == "TS":
            val = int(words[2])
            ecr = conv.last_tsval if words[4] == "*" else int(words[4])
            conv.tsvals_sent.add(val)
            out.append(("Timestamp", (val, ecr)))
        elif kind == "sack":
            edges: list[int] = []
            for block in words[1:]:
                left, right = block.split(":")
                edges += [((conv.dut_isn or 0) + int(left)) & 0xFFFFFFFF,
                          ((conv.dut_isn or 0) + int(right)) & 0xFFFFFFFF]
            out.append(("SAck", tuple(edges)))
        else:
            raise ValueError(f"unknown option {item!r}")
    return out


def describe(frame: bytes, conv: Conversation) -> str | None:
    """One line for a frame the device sent, or None for one of no interest."""
    pkt = Ether(frame)
    if IP not in pkt:
        return None
    ip = pkt[IP]
    if ip.src != DUT or ip.dst != TESTER:
        return None
    raw = bytes(ip)
    opts = describe_ip_options(raw[20:(raw[0] & 0x0F) * 4])
    if TCP in ip:
        text = describe_tcp(ip[TCP], conv)
        return None if text is None else text + opts
    if ICMP in ip or ip.proto == 1:
        body = bytes(ip.payload)
        frag = " frag" if ip.flags.MF or ip.frag else ""
        if ip.frag:
            return f"< icmp fragment len {len(body)}{opts}{frag}"
        out = f"< icmp {body[0]}/{body[1]} len {len(body)}{opts}{frag}"
        if body[0] == 12:
            out += f" ptr {body[4]}"
        if body[0] in (3, 4, 5, 11, 12) and len(body) >= 28:
            inner = body[8:]
            qopts = describe_ip_options(inner[20:(inner[0] & 0x0F) * 4])
            out += f" quote{qopts}" if qopts else ""
        return out
    if UDP in ip and conv.tport in (ip[UDP].sport, ip[UDP].dport):
        return f"< udp len {len(bytes(ip[UDP].payload))}"
    return None


def describe_ip_options(opts: bytes) -> str:
    """IP options as `` ipopts[...]``: a record route as its pointer and
    the addresses in it (``DUT``, ``TESTER``, ``0`` or the address), a
    timestamp as its pointer, flags, overflow count and entries (a time is
    ``t``: when it was taken differs from run to run); any other option as
    its type and length, no-operations as ``nop*N``. Empty without options."""
    names = {"192.0.2.1": "DUT", "192.0.2.2": "TESTER", "0.0.0.0": "0"}

    def addr(b: bytes) -> str:
        if len(b) != 4:
            return "?"  # (a malformed option that runs past the header)
        text = socket.inet_ntoa(b)
        return names.get(text, text)

    out: list[str] = []
    i = nops = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 1:
            nops += 1
            i += 1
            continue
        if nops:
            out.append(f"nop*{nops}")
            nops = 0
        if kind == 0:
            break
        length = opts[i + 1] if i + 1 < len(opts) else 0
        body = opts[i:i + length]
        if kind == 7 and length >= 3:
            slots = [addr(body[j:j + 4]) for j in range(3, length - 3, 4)]
            out.append(f"rr {body[2]} " + ",".join(slots))
        elif kind == 68 and length >= 4:
            flag = body[3] & 0x0F
            step = 4 if flag == 0 else 8
            items = []
            for j in range(4, length - step + 1, step):
                t = "t" if any(body[j + step - 4:j + step]) else "0"
                t = t if len(body) >= j + step else "?"
                items.append(t if flag == 0 else f"{addr(body[j:j + 4])}={t}")
            out.append(f"ts {body[2]} flag {flag} overflow {body[3] >> 4} " + ",".join(items))
        else:
            out.append(f"opt {kind} len {length}")
        i += max(length, 2)
    if nops:
        out.append(f"nop*{nops}")
    return f" ipopts[{'; '.join(out)}]" if opts else ""


def describe_tcp(tcp: Any, conv: Conversation) -> str | None:
    if conv.tport != tcp.dport:
        return None  # another case's leftovers
    flags = str(tcp.flags)
    if "S" in flags and conv.dut_isn is None:
        conv.dut_isn = tcp.seq
        conv.dut_port = tcp.sport
    if tcp.sport != (conv.dut_port or conv.port):
        return None
    isn = conv.dut_isn or 0  # before the device's SYN, as the tester wrote them
    # PSH is left out: where a sender sets it is its own choice (RFC 9293 3.9.1).
    text = "".join(c for c in "SFRU" if c in flags) + ("." if "A" in flags else "")
    length = len(bytes(tcp.payload))
    seq = (tcp.seq - isn) & 0xFFFFFFFF
    if "R" in flags and "A" in flags and tcp.seq == 0:
        seq_text = "abs0"  # the RST answering a segment without ACK: sequence number 0
    else:
        seq_text = str(seq) + (f":{seq + length}({length})" if length else "")
    out = f"< {text} {seq_text}"
    if "A" in flags:
        out += f" ack {(tcp.ack - TESTER_ISN) & 0xFFFFFFFF}"
    if tcp.window == 0:
        out += " win 0"
    if "U" in flags:
        out += f" urg {tcp.urgptr}"
    opts = []
    for name, value in tcp.options:
        if name == "MSS":
            opts.append(f"mss {value}")
        elif name == "SAckOK":
            opts.append("sackOK")
        elif name == "WScale":
            opts.append("wscale")
        elif name == "Timestamp":
            conv.last_tsval = value[0]
            ecr = value[1]
            opts.append(f"TS ecr {ecr}" if ecr in conv.tsvals_sent or ecr == 0 else "TS ecr ?")
        elif name == "SAck":
            blocks = [f"{(value[i] - TESTER_ISN) & 0xFFFFFFFF}:"
                      f"{(value[i + 1] - TESTER_ISN) & 0xFFFFFFFF}"
                      for i in range(0, len(value) - 1, 2)]
            opts.append("sack " + " ".join(blocks))
    if opts:
        out += " <" + ",".join(opts) + ">"
    return out


def outcome(value: Any) -> str:
    """A call's result with what differs between devices taken out (socket
    objects, ephemeral ports)."""
    if isinstance(value, BaseException):
        code = getattr(value, "errno", None)
        name = errno.errorcode.get(code, str(code)) if code else ""
        return f"{type(value).__name__}({name})" if name else type(value).__name__
    if hasattr(value, "recv") and hasattr(value, "fileno"):
        return "<socket>"
    if isinstance(value, tuple):
        return "(" + ", ".join(outcome(v) for v in value) + ")"
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value)) if len(value) <= 24 else f"<{len(value)} bytes>"
    return repr(value)


class Runner:
    """Runs one script against one device and returns its transcript."""

    def __init__(self, device: Device, port: int, tport: int) -> None:
        self.dev = device
        self.conv = Conversation(port=port, tport=tport)
        self.env: dict[str, Any] = {k: getattr(socket, k) for k in dir(socket) if k.isupper()}
        self.made: list[Any] = []

        def make_socket(*args: Any, **kwargs: Any) -> Any:
            sock = device.socket(*args, **kwargs)
            self.made.append(sock)
            return sock

        self.env.update(socket=make_socket, PORT=port, TPORT=tport, DUT=DUT, TESTER=TESTER,
                        time=time)
        self.threads: list[threading.Thread] = []

    def run(self, script: str) -> list[str]:
        default = socket.getdefaulttimeout()
        socket.setdefaulttimeout(3.0)  # no call blocks a run for ever (both devices read it)
        # No cyclic collection inside a run (it happens between runs): a full
        # one (scapy makes many objects) can hold the stack's thread past the
        # "now" bucket.
        gc.disable()
        try:
            for raw in script.strip().splitlines():
                line = raw.split("#", 1)[0].strip() if not raw.strip().startswith(">") else raw
                line = line.strip()
                if not line:
                    continue
                self.conv.step += 1
                self.do(line)
                self.listen(SETTLE)
            self.listen(TAIL)
            for t in self.threads:
                t.join(timeout=0.5)
        finally:
            gc.enable()
            self.cleanup()
            socket.setdefaulttimeout(default)
        return self.conv.transcript()

    def do(self, line: str) -> None:
        if line.startswith("> scapy "):
            self.send_ip(eval(line[len("> scapy "):], dict(SCAPY, DUT=DUT, TESTER=TESTER,
                                                          TPORT=self.conv.tport,
                                                          PORT=self.conv.port)))
        elif line.startswith(">"):
            self.send_tcp(parse_segment(line[1:], self.conv))
        elif line.startswith("wait "):
            self.listen(float(line.split()[1]))
        elif line.endswith("&"):
            self.conv.last_event = time.monotonic()
            self.background(line[:-1].strip())
        else:
            self.conv.last_event = time.monotonic()
            self.call(line)

    def send_tcp(self, tcp: Any) -> None:
        self.send_ip(IP(src=TESTER, dst=DUT, ttl=64) / tcp)

    def send_ip(self, packet: Any) -> None:
        """One IP packet, or a list of them (fragments), from the tester."""
        for p in packet if isinstance(packet, list) else [packet]:
            self.dev.wire.send(bytes(Ether(src=TESTER_MAC, dst=self.dev.mac()) / p))
        self.conv.last_event = time.monotonic()

    def listen(self, seconds: float) -> None:
        """Take frames for ``seconds``: describe the device's, answer ARP for the tester."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            frame = self.dev.wire.recv(left)
            if frame is None:
                return
            if self.answer_arp(frame):
                continue
            text = describe(frame, self.conv)
            if text is not None:
                now = time.monotonic()
                self.conv.record(f"{text} @{bucket(now - self.conv.last_event)}")
                self.conv.last_event = now

    def answer_arp(self, frame: bytes) -> bool:
        pkt = Ether(frame)
        if ARP not in pkt:
            return False
        arp = pkt[ARP]
        if arp.op == 1 and arp.pdst == TESTER:
            reply = Ether(src=TESTER_MAC, dst=arp.hwsrc) / ARP(
                op=2, hwsrc=TESTER_MAC, psrc=TESTER, hwdst=arp.hwsrc, pdst=arp.psrc)
            self.dev.wire.send(bytes(reply))
        return True

    def call(self, code: str) -> None:
        try:
            try:
                compiled = compile(code, "<case>", "eval")
            except SyntaxError:
                exec(compile(code, "<case>", "exec"), self.env)
                return
            value = eval(compiled, self.env)
            self.conv.record(f"= {code} -> {outcome(value)}", order=1)
        except Exception as e:
            self.conv.record(f"= {code} -> {outcome(e)}", order=1)

    def background(self, code: str) -> None:
        def work() -> None:
            try:
                exec(compile(code, "<case>", "exec"), self.env)
                text = "ok"
            except Exception as e:
                text = outcome(e)
            self.conv.record(f"& {code} -> {text}", order=1)  # in the step it ended in

        t = threading.Thread(target=work, daemon=True)
        t.start()
        self.threads.append(t)

    def cleanup(self) -> None:
        """Close every socket the script made with SO_LINGER 0, so its
        connection ends with a RST and the next case starts clean."""
        accepted = [v for v in self.env.values() if hasattr(v, "fileno") and hasattr(v, "recv")
                    and not isinstance(v, type)]
        for value in accepted + self.made:
            if True:
                try:
                    value.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
                try:
                    value.close()
                except OSError:
                    pass


def run_case(device: Device, script: str, port: int, tport: int) -> list[str]:
    return Runner(device, port, tport).run(expand(script))


# -- case files ---------------------------------------------------------------------------------

MACROS = {
    "@listen": """
        s = socket(AF_INET, SOCK_STREAM)
        s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", PORT)); s.listen(8)""",
    # A passive open with timestamps (tester TSval 100, 101), SACK and window scaling.
    "@established": """
        @listen
        > S 0 win 65535 <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>
        > . 1 ack 1 win 1024 <nop,nop,TS val 101 ecr *>
        c, _ = s.accept()""",
    # A passive open without any option but the MSS.
    "@plain": """
        @listen
        > S 0 win 65535 <mss 1460>
        > . 1 ack 1 win 65535
        c, _ = s.accept()""",
    # An active open with timestamps (tester TSval 700), SACK and window scaling.
    "@connected": """
        c = socket(AF_INET, SOCK_STREAM)
        c.connect((TESTER, TPORT)) &
        > S. 0 ack 1 win 65535 <mss 1460,sackOK,TS val 700 ecr *,nop,wscale 7>""",
}


def expand(script: str) -> str:
    """The script with every ``@macro`` line replaced by its lines."""
    out = []
    for line in script.splitlines():
        name = line.strip()
        if name in MACROS:
            out.append(expand(MACROS[name]))
        else:
            out.append(line)
    return "\n".join(x.strip() for x in "\n".join(out).splitlines())


@dataclass
class Case:
    """One exchange of a case file (``### NAME`` then its lines).
    ``differs``: the README row that explains why the stack answers otherwise."""

    name: str
    script: str
    differs: str | None = None


def load_cases(path: Any) -> list[Case]:
    cases: list[Case] = []
    for block in path.read_text().split("\n### ")[1:]:
        head, _, body = block.partition("\n")
        name, _, tag = head.partition("[differs:")
        cases.append(Case(name.strip(), body, tag.rstrip("] ").strip() or None))
    return cases
