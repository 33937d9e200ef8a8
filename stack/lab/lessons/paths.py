"""Lessons on the path between hosts: MTU and MSS with path MTU discovery,
its black hole and the MSS clamp, fragmentation, NAT, and loss."""

from __future__ import annotations

import sys

from stack.lab import evidence as ev
from stack.lab.build import must
from stack.lab.lab import Lab
from stack.lab.lessons import Report, lesson
from stack.tracetool.bbr import rate

PY = sys.executable

# The stack serves; a kernel client two routers away; the link between the
# routers has an MTU of 1400, the others 1500.
NARROW = """
[hosts.server]
kind = "stack"
address = "198.51.100.2/24"
gateway = "198.51.100.1"
link = "lan"

[hosts.client]
address = "203.0.113.2/24"
gateway = "203.0.113.1"
link = "wan"

[routers.r1]
interfaces = { lan = "198.51.100.1/24", mid = "192.0.2.1/24" }
routes = { "203.0.113.0/24" = "192.0.2.2" }

[routers.r2]
interfaces = { mid = "192.0.2.2/24", wan = "203.0.113.1/24" }
routes = { "198.51.100.0/24" = "192.0.2.1" }

[links.mid]
mtu = 1400
"""

SIZE = 400_000
CURL = f"curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}' --max-time 6 " \
       f"http://198.51.100.2/bytes/{SIZE}"
NO_FRAG_NEEDED = "output icmp type destination-unreachable icmp code frag-needed drop"
CLAMP = "forward tcp flags syn tcp option maxseg size set rt mtu"


def _download(lab: Lab, step: str) -> tuple[str, list[ev.Packet], list[dict]]:
    lab.stack_up("server", step, ["--serve", "http:80"])
    got = lab.sh("client", CURL, timeout=15).stdout.strip()
    lab.stack_down("server")
    return got, ev.pcap(f"{lab.out}/{step}.pcap"), ev.trace(f"{lab.out}/{step}.jsonl")


def segments_after_icmp(trace: list[dict]) -> list[int]:
    """Payload lengths of the data segments TCP sent after it took in the
    first "fragmentation needed" (in the trace's order: a capture's times
    cannot tell, since a batch of frames is captured as it is read, before
    TCP gets to the ICMP among them)."""
    first = next((i for i, e in enumerate(trace)
                  if e.get("layer") == "tcp" and e.get("event") == "icmp"), None)
    if first is None:
        return []
    return [e["len"] for e in trace[first:] if e.get("layer") == "tcp"
            and e.get("event") == "seg" and e.get("dir") == "out" and e.get("len")]


def _data_from_stack(packets: list[ev.Packet]) -> list[ev.Packet]:
    return [p for p in packets if p.proto == 6 and p.src == "198.51.100.2" and p.payload]


@lesson("mtu", "MTU and MSS: path MTU discovery, the black hole, the MSS clamp", NARROW)
def mtu(lab: Lab) -> Report:
    found, pkts, pmtud_trace = _download(lab, "pmtud")
    lab.nft("r1", NO_FRAG_NEEDED)
    hole, hole_pkts, hole_trace = _download(lab, "blackhole")
    lab.sh("r1", "nft flush chain ip lab output")
    for router in ("r1", "r2"):
        lab.nft(router, CLAMP)
    clamped, clamp_pkts, _ = _download(lab, "clamped")
    lab.finish()
    r = Report(
        "A kernel client downloads 400 kB from the stack across a 1400-byte link between "
        "two routers; both ends sit on 1500-byte links, so both announce an MSS of 1460. "
        "First (pmtud): the stack sends full 1500-byte packets with DF set; r1 cannot "
        "forward them and answers ICMP fragmentation needed, next-hop MTU 1400; the stack "
        "lowers its segments to fit (1400 - 40 bytes of headers) and resends. Then "
        "(blackhole) r1 is told to drop those ICMP messages, as misconfigured firewalls "
        "do: the handshake and the request are small and pass, but every full-size "
        "segment vanishes, the stack retransmits it again and again after RTOs, and the "
        "download stalls. Last (clamped) both routers rewrite the MSS option of the SYNs "
        "they forward to fit their outgoing link (MSS clamping): the stack learns 1360 "
        "from the client's SYN and never sends a packet too big.",
        ["pmtud.pcap: the ICMP 'fragmentation needed' (mtu 1400) and the smaller "
         "segments after it; pmtud-timeline.txt: the icmp event in the connection",
         "blackhole-timeline.txt: retransmissions of 1448-byte segments, no ICMP; "
         "r1-mid.pcap: none of them crossed",
         "clamped.pcap: the client's SYN arrives with mss 1360"])
    icmp = [p for p in pkts if p.icmp == (3, 4)]
    r.check("pmtud: an ICMP fragmentation needed with MTU 1400 reached the stack",
            bool(icmp) and icmp[0].mtu == 1400, [p.mtu for p in icmp])
    after = segments_after_icmp(pmtud_trace)
    r.check("pmtud: every segment sent once TCP had it fits 1400 bytes",
            bool(after) and max(after) <= 1400 - 52,
            max(after) if after else None)
    r.check("pmtud: the download completed", found == f"200 {SIZE}", found)
    r.check("blackhole: no ICMP reached the stack",
            not [p for p in hole_pkts if p.icmp == (3, 4)], "")
    full = [e for e in ev.events(hole_trace, "tcp", "retransmit") if e.get("len") == 1448]
    r.check("blackhole: full-size segments retransmitted", len(full) >= 2, len(full))
    r.check("blackhole: the download stalled", not hole.endswith(f" {SIZE}"), hole)
    syn = [p for p in clamp_pkts if p.proto == 6 and p.flags == "S"]
    r.check("clamped: the client's SYN arrived with MSS 1360",
            bool(syn) and syn[0].mss == 1360, syn[0].mss if syn else None)
    big = [p.length for p in _data_from_stack(clamp_pkts)]
    r.check("clamped: no packet over 1400 bytes, and the download completed",
            bool(big) and max(big) <= 1400 and clamped == f"200 {SIZE}",
            f"{max(big) if big else None} bytes, {clamped}")
    return r


UDP_SINK = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("203.0.113.2", 9000))
data, peer = s.recvfrom(65535)
print("got", len(data), "bytes from", peer[0], flush=True)
"""

SEND_BIG = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(bytes(2000), ("203.0.113.2", 9000))
"""


@lesson("fragments", "Fragmentation: a big UDP datagram, and a DF ping that is too big", NARROW)
def fragments(lab: Lab) -> Report:
    lab.start("client", [PY, "-c", UDP_SINK], "fragments-sink.out")
    lab.wait(0.3)
    lab.stack_run("server", "fragments", SEND_BIG)
    lab.wait(0.3)
    lab.stack_up("server", "fragments-ping")
    df = lab.sh("client", "ping -c 2 -i 0.3 -W 1 -M do -s 1472 198.51.100.2")
    big = lab.sh("client", "ping -c 1 -W 2 -M dont -s 3000 198.51.100.2")
    lab.stack_down("server")
    lab.finish()
    with open(f"{lab.out}/fragments-ping.txt", "w") as f:
        f.write(df.stdout + "\n" + big.stdout)
    r = Report(
        "The stack sends one 2000-byte UDP datagram: too big for its 1500-byte link, so it "
        "leaves in two IP fragments (same id, offsets 0 and 1480, more-fragments on the "
        "first). r1 forwards them onto the 1400-byte link, cutting the first again: the "
        "client receives three fragments and its kernel reassembles 2000 bytes. Then the "
        "client pings the stack with DF set and 1500-byte packets: r2 cannot forward them "
        "and answers 'fragmentation needed' (mtu 1400); the client's kernel remembers the "
        "path MTU, so its next try fails locally with 'message too long'. Without DF, a "
        "3000-byte ping crosses in fragments both ways.",
        ["fragments.pcap: the stack's two fragments", "r2-wan.pcap: three fragments reach "
         "the client; the ICMP fragmentation needed to the client",
         "fragments-ping.pcap: the big ping's fragments, reassembled and answered in fragments",
         "fragments-ping.txt: ping's own words"])
    out = [p for p in ev.pcap(f"{lab.out}/fragments.pcap")
           if p.proto == 17 and p.src == "198.51.100.2" or p.fragment and p.src == "198.51.100.2"]
    frags = [p for p in out if p.fragment]
    r.check("the stack sent the datagram in two fragments",
            len(frags) == 2 and sorted(p.frag_offset for p in frags) == [0, 1480],
            [(p.frag_offset, p.length) for p in frags])
    wan = ev.pcap(f"{lab.out}/r2-wan.pcap")
    crossed = [p for p in wan if p.fragment and p.src == "198.51.100.2" and p.proto == 17]
    r.check("three fragments, none over 1400 bytes, reached the client",
            len(crossed) == 3 and max(p.length for p in crossed) <= 1400,
            [(p.frag_offset, p.length) for p in crossed])
    with open(f"{lab.out}/fragments-sink.out") as f:
        sink = f.read()
    r.check("the client's kernel reassembled 2000 bytes", "got 2000 bytes" in sink, sink.strip())
    needed = [p for p in wan if p.icmp == (3, 4) and p.dst == "203.0.113.2"]
    r.check("the DF ping got 'fragmentation needed', mtu 1400",
            bool(needed) and needed[0].mtu == 1400 and df.returncode != 0,
            [p.mtu for p in needed])
    r.check("the 3000-byte ping without DF was answered", big.returncode == 0, big.returncode)
    return r


BEHIND_NAT = """
[hosts.client]
kind = "stack"
address = "198.51.100.2/24"
gateway = "198.51.100.1"
link = "lan"

[hosts.server]
address = "203.0.113.2/24"
link = "wan"                      # no route back to 198.51.100.0/24: only NAT works

[routers.r1]
interfaces = { lan = "198.51.100.1/24", wan = "203.0.113.1/24" }
nat = "wan"
"""

HOLD_OPEN = """
import socket, time
s = socket.create_connection(("203.0.113.2", 8000), timeout=5)
s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
print("open", s.getsockname()[1], flush=True)
time.sleep(1.5)
print("answer", len(s.recv(65536)), flush=True)
s.close()
print("done", flush=True)
time.sleep(0.5)
"""


@lesson("nat", "NAT: the stack behind a masquerading router", BEHIND_NAT)
def nat(lab: Lab) -> Report:
    lab.start("server", [PY, "-m", "http.server", "-b", "203.0.113.2", "8000"], "nat-server.out")
    lab.wait(0.5)
    lab.stack_up("client", "nat", code=HOLD_OPEN)
    lab.wait_for(f"{lab.out}/nat.log", "open", 10)
    conntrack = lab.sh("r1", "cat /proc/net/nf_conntrack 2>/dev/null | grep dport=8000 "
                             "|| conntrack -L -p tcp --dport 8000 2>/dev/null").stdout
    with open(f"{lab.out}/nat-conntrack.txt", "w") as f:
        f.write(conntrack)
    lab.wait_for(f"{lab.out}/nat.log", "done", 10)
    lab.stack_down("client")
    lab.finish()
    r = Report(
        "The stack (198.51.100.2) fetches a page from a server that has no route back to "
        "it. The router masquerades: it rewrites the source address of what leaves by "
        "its wan link to its own, 203.0.113.1 (and the port, if needed), remembers the "
        "mapping in its connection tracking table, and rewrites the answers back. The "
        "server never sees the stack's address.",
        ["r1-lan.pcap: 198.51.100.2 talking to 203.0.113.2",
         "r1-wan.pcap: the same segments from 203.0.113.1",
         "nat-conntrack.txt: the router's entry, both directions of the mapping",
         "nat-server.out: the server logged the router's address"])
    lan = [p for p in ev.pcap(f"{lab.out}/r1-lan.pcap") if p.proto == 6 and p.dport == 8000]
    wan = [p for p in ev.pcap(f"{lab.out}/r1-wan.pcap") if p.proto == 6 and p.dport == 8000]
    r.check("inside, the segments come from the stack's address",
            bool(lan) and {p.src for p in lan} == {"198.51.100.2"}, {p.src for p in lan})
    r.check("outside, the same segments come from the router's address",
            bool(wan) and {p.src for p in wan} == {"203.0.113.1"}, {p.src for p in wan})
    r.check("the same number of segments on both sides", len(lan) == len(wan),
            f"{len(lan)} inside, {len(wan)} outside")
    r.check("the router tracked the connection with both addresses",
            "198.51.100.2" in conntrack and "203.0.113.1" in conntrack, conntrack.strip()[:160])
    with open(f"{lab.out}/nat.log") as f:
        log = f.read()
    r.check("the page came back through the mapping", "answer 0" not in log and "answer" in log,
            [line for line in log.splitlines() if line.startswith("answer")])
    return r


LOSSY = """
[hosts.server]
kind = "stack"
address = "198.51.100.2/24"
gateway = "198.51.100.1"
link = "lan"
# The stack's fault injector: 2 % of frames lost and every frame held 10 ms, both ways.
impair = "loss=0.02,delay=10,seed=7"

[hosts.client]
address = "203.0.113.2/24"
gateway = "203.0.113.1"
link = "wan"

[routers.r1]
interfaces = { lan = "198.51.100.1/24", wan = "203.0.113.1/24" }
"""

# r1 forwards to the client at most 40 Mbit/s, queueing up to 200 kB (a token bucket).
BOTTLENECK = "tc qdisc replace dev r1-wan root tbf rate 40mbit burst 16kb limit 200kb"
LOSS_SIZE = 6_000_000
# What curl downloaded, and the seconds from its connection's handshake to the last byte.
TIMED_CURL = ("curl -s -o /dev/null -w '%{{size_download}} %{{time_connect}} %{{time_total}}' "
              "--max-time 60 http://198.51.100.2/bytes/{size}")


def _timed_download(lab: Lab, step: str, flags: list[str]) -> tuple[str, float | None]:
    """A download of LOSS_SIZE bytes from the stack, its ``--trace`` named
    ``step``: ``(bytes received, seconds after the handshake)``."""
    lab.stack_up("server", step, ["--serve", "http:80", *flags])
    words = lab.sh("client", TIMED_CURL.format(size=LOSS_SIZE), timeout=70).stdout.split()
    lab.stack_down("server")
    if len(words) != 3:
        return " ".join(words), None
    try:
        return words[0], float(words[2]) - float(words[1])
    except ValueError:
        return " ".join(words), None


def _mbit(seconds: float | None) -> str:
    return f"{LOSS_SIZE * 8 / seconds / 1e6:.1f} Mbit/s in {seconds:.2f} s" if seconds else "?"


def paced_at_gain(models: list[dict]) -> list[dict]:
    """The ``bbr`` events whose pacing rate is not its pacing gain times its
    bandwidth estimate (Linux paces 1 % below that; 5 % is allowed here). In
    STARTUP the rate may be higher: there it only ever rises (it starts from
    the first window over the handshake's round trip)."""
    wrong = []
    for e in models:
        want = float(e.get("bbr_pacing_gain", 0)) * float(e.get("bbr_bw", 0))
        got = float(e.get("pacing_rate", 0))
        high = e.get("bbr_mode") == "STARTUP" or got <= 1.01 * want
        if not want or got < 0.95 * want or not high:
            wrong.append(e)
    return wrong


# BBR's moves (DRAIN can end within the ACK that began it, and then the
# trace, one event per ACK at most, goes from STARTUP straight to PROBE_BW).
MOVES = {("STARTUP", "DRAIN"), ("STARTUP", "PROBE_BW"), ("DRAIN", "PROBE_BW"),
         ("STARTUP", "PROBE_RTT"), ("DRAIN", "PROBE_RTT"), ("PROBE_BW", "PROBE_RTT"),
         ("PROBE_RTT", "PROBE_BW"), ("PROBE_RTT", "STARTUP")}


def bbr_modes(models: list[dict]) -> list[str]:
    """The modes a BBR connection's trace went through, in order."""
    modes = [str(e.get("bbr_mode")) for e in models]
    return [m for i, m in enumerate(modes) if i == 0 or m != modes[i - 1]]


def drained_into_probe_bw(order: list[str]) -> bool:
    """STARTUP, then DRAIN, then PROBE_BW (or STARTUP then PROBE_BW, DRAIN having
    ended on the ACK that began it), and after that only BBR's moves."""
    start = order[:3] == ["STARTUP", "DRAIN", "PROBE_BW"] or order[:2] == ["STARTUP", "PROBE_BW"]
    return start and moves_ok(order)


def moves_ok(order: list[str]) -> bool:
    """Whether ``order`` begins in STARTUP and moves only as BBR moves."""
    return bool(order) and order[0] == "STARTUP" and all(
        (a, b) in MOVES for a, b in zip(order, order[1:]))


@lesson("loss", "Loss and recovery: fast retransmit, SACK, RTO, the cwnd sawtooth; CUBIC "
                "against BBR", LOSSY)
@lesson("loss-and-recovery", "The loss lesson, by the name its issue gave it", LOSSY)
def loss(lab: Lab) -> Report:
    must(lab.node("r1"), BOTTLENECK)
    got, cubic_s = _timed_download(lab, "loss", [])
    got_bbr, bbr_s = _timed_download(lab, "loss-bbr", ["--congestion", "bbr"])
    # A worse link, where whole flights and retransmissions are lost too.
    lab.stack_up("server", "heavy-loss", ["--serve", "http:80", "--impair", "loss=0.25,seed=3"])
    heavy = lab.sh("client", "curl -s -o /dev/null -w '%{size_download}' --max-time 60 "
                             "http://198.51.100.2/bytes/100000", timeout=70).stdout.strip()
    lab.stack_down("server")
    trace = ev.trace(f"{lab.out}/loss.jsonl")
    bbr_trace = ev.trace(f"{lab.out}/loss-bbr.jsonl")
    heavy_trace = ev.trace(f"{lab.out}/heavy-loss.jsonl")
    r = Report(
        "A 6 MB download from the stack across a link that loses 2 % of frames and holds "
        "each 10 ms (a round trip of 20 ms), through a router that forwards to the client "
        "at most 40 Mbit/s and queues what comes faster (a token bucket). Each loss leaves "
        "a hole: the client's ACKs stop at it and carry SACK blocks for what came after. "
        "The stack marks the hole lost (RACK: something sent after it arrived, and a "
        "little more than a round trip passed) and resends just that segment (fast "
        "retransmit), cutting its window to 0.7 of what it was (CUBIC; Proportional Rate "
        "Reduction spreads the cut over that round trip), then grows it again: the "
        "sawtooth. CUBIC reads every "
        "loss as a full queue, so on a link that loses frames at random it keeps cutting "
        "and never fills the 40 Mbit/s pipe. "
        "Then (loss-bbr) the same download on the same link with BBR (--congestion bbr). "
        "BBR does not take a loss for congestion: it measures the delivery rate and the "
        "smallest round trip, and sends at the bandwidth it has seen, pacing its segments "
        "out at that rate rather than in bursts. Its plot (loss-bbr.png, the bottom panel) "
        "shows its phases: STARTUP doubles the rate each round trip until the bandwidth "
        "stops growing (at the router's 40 Mbit/s), DRAIN empties the queue STARTUP built "
        "in the router (if a loss emptied it already, DRAIN ends on the ACK that began it "
        "and the trace goes from STARTUP to PROBE_BW), and PROBE_BW cruises at the estimate, probing one round trip in "
        "eight at 5/4 of it and draining at 3/4. (Without the router's limit the bottleneck "
        "would be the stack itself, one Python process; the sender would run short of "
        "data, its rate samples would be app-limited and show no plateau, and BBR could "
        "stay in STARTUP.) Every "
        "ten seconds or so (longer than this download) PROBE_RTT would cut the window to "
        "four segments to measure the round trip afresh. The random losses are repaired "
        "without slowing down. "
        "Last (heavy-loss) a link losing 25 % of frames: there, whole flights and "
        "retransmissions vanish, nothing comes back to show a hole, and only a timer helps: "
        "a tail loss probe resends the last segment, the RTO resends from the first "
        "unacknowledged byte and doubles for the next time, and the window falls to one "
        "segment.",
        ["loss.png: sequence numbers over time (retransmissions marked), cwnd and RTT",
         "loss-timeline.txt: the summary counts retransmissions by kind",
         "loss.jsonl: retransmit events (reason fast, rack, tlp, rto) and cwnd events",
         "loss-bbr.png: the same with BBR; beneath cwnd its phases shaded, its bandwidth "
         "estimate and pacing rate; its min-RTT beside the smoothed RTT",
         "r1-wan.pcap: what crossed the router's 40 Mbit/s limit",
         "loss-bbr-timeline.txt: the summary's bbr lines (modes in order, the last model); "
         "loss-bbr.jsonl: the bbr events",
         "heavy-loss-timeline.txt and heavy-loss.png: the timeouts and their backoff"])
    r.check("the download completed", got == str(LOSS_SIZE), got)
    reasons = [e.get("reason") for e in ev.events(trace, "tcp", "retransmit")]
    r.check("holes were repaired by fast retransmit / RACK",
            reasons.count("fast") + reasons.count("rack") >= 3, reasons[:12])
    sacked = [e for e in ev.events(trace, "tcp", "seg", dir="in")
              if any(o.startswith("sack ") for o in e.get("options", []))]
    r.check("the client's ACKs carried SACK blocks", len(sacked) >= 3, len(sacked))
    cuts = [e for e in ev.events(trace, "tcp", "cwnd") if e.get("why") == "fast_retransmit"]
    r.check("the window was cut at several losses (the sawtooth)", len(cuts) >= 2, len(cuts))
    r.check("bbr: the download completed", got_bbr == str(LOSS_SIZE), got_bbr)
    models = list(ev.events(bbr_trace, "tcp", "bbr"))
    order = bbr_modes(models)
    r.check("bbr: the trace shows STARTUP, then DRAIN (unless it ended on the ACK that began "
            "it), then PROBE_BW, and only BBR's moves",
            drained_into_probe_bw(order), " → ".join(order[:6]) or "no bbr events")
    wrong = paced_at_gain(models)
    r.check("bbr: it paced at its gain times its bandwidth estimate, at every change",
            bool(models) and not wrong,
            f"{len(models)} bbr events, {len(wrong)} not"
            + (f", last {rate(float(models[-1].get('pacing_rate', 0)))}" if models else ""))
    lost = sum(1 for e in ev.events(bbr_trace, "tcp", "retransmit") if e.get("reason") != "syn")
    r.check("bbr: it lost segments on this link too", lost >= 3, f"{lost} retransmissions")
    cruising = [float(e.get("bbr_bw", 0)) * 8 / 1e6 for e in models
                if e.get("bbr_mode") == "PROBE_BW"]
    r.check("bbr: the losses did not cut its rate: in PROBE_BW its bandwidth estimate stayed "
            "above half the router's 40 Mbit/s",
            bool(cruising) and min(cruising) > 20,
            f"lowest {min(cruising):.1f} Mbit/s; CUBIC cut its window {len(cuts)} times"
            if cruising else "no PROBE_BW")
    r.check("bbr: its download was faster than CUBIC's on the same lossy link",
            cubic_s is not None and bbr_s is not None and bbr_s < cubic_s,
            f"CUBIC {_mbit(cubic_s)}, BBR {_mbit(bbr_s)}")
    r.check("heavy loss: the download completed all the same", heavy == "100000", heavy)
    timers = [e.get("timer") for e in ev.events(heavy_trace, "tcp", "timer")
              if e.get("timer") in ("rto", "tlp")]
    r.check("heavy loss: a timer had to act (a tail loss probe or the RTO)", len(timers) >= 1,
            timers[:8])
    return r
