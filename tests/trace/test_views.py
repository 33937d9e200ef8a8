"""``stack trace`` views on hand-built events: the layer views (ip, arp, icmp,
udp), time windows (timeline, ladder with every segment, plot data), µs
precision, time in each state, refused SYNs, the causes of failed connects,
ICMP errors in a timeline, and the live follower."""

from __future__ import annotations

import io
import json
import threading
import time

from stack import cli, tracetool
from stack.tcp import TcpConfig
from stack.tracetool.follow import Follower, follow
from stack.tracetool.layers import layer_view, summary
from tests.helpers.tcp import Conversation
from tests.trace.test_tracetool import ACTIVE, C1, ev, seg, st, write_jsonl

US = "192.0.2.2"


# --- precision and time in states ------------------------------------------------------


def test_durations_have_us_precision_below_a_millisecond():
    d = tracetool.duration
    assert [d(0.000087), d(0.0), d(0.0012345), d(0.25), d(2.5)] == [
        "87 µs", "0 µs", "1.234 ms", "250.000 ms", "2.500000 s"]


def test_summary_gives_sub_millisecond_rtts_and_time_in_each_state():
    evs = [st(1.0, "CLOSED", "SYN_SENT", "user connect"),
           st(1.000150, "SYN_SENT", "ESTABLISHED", "rcv SYN,ACK seq=1 ack=2"),
           ev(1.000150, "tcp", "rtt", conn=C1, sample=0.000150, srtt=0.000150),
           ev(1.2, "tcp", "rtt", conn=C1, sample=0.001, srtt=0.000256, source="ts"),
           st(1.5, "ESTABLISHED", "FIN_WAIT_1", "user close"),
           st(1.5004, "FIN_WAIT_1", "CLOSED", "rcv RST seq=3")]
    (c,) = tracetool.connections(evs)
    states = tracetool.time_in_states(c)
    assert list(states) == ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1"]
    assert abs(states["SYN_SENT"] - 0.000150) < 1e-9 and abs(states["FIN_WAIT_1"] - 0.0004) < 1e-9
    text = tracetool.timeline(c)
    assert ("rtt       min 150 µs, avg 150 µs, max 150 µs (1 sample; 1 more from timestamps, "
            "in whole ms, left out), final srtt 256 µs") in text
    assert "states    SYN_SENT 150 µs, ESTABLISHED 499.850 ms, FIN_WAIT_1 400 µs" in text
    assert "summary: 500.400 ms from 1.000000 to 1.500400, final state CLOSED" in text


# --- windows ----------------------------------------------------------------------------


LOSSY = [
    st(0.0, "CLOSED", "SYN_SENT", "user connect"),
    seg(0.0, "out", "S", 100, opts=["mss 1000", "sackOK"]),
    seg(0.01, "in", "S.", 500, 101, opts=["mss 1000", "sackOK"]),
    st(0.01, "SYN_SENT", "ESTABLISHED", "rcv SYN,ACK seq=500 ack=101"),
    seg(0.01, "out", ".", 101, 501),
    seg(1.00, "out", ".", 101, 501, n=1000),
    seg(1.00, "out", ".", 1101, 501, n=1000),      # lost
    seg(1.00, "out", ".", 2101, 501, n=1000),
    seg(1.00, "out", ".", 3101, 501, n=1000),
    seg(1.00, "out", ".", 4101, 501, n=1000),
    seg(1.02, "in", ".", 501, 1101),
    seg(1.03, "in", ".", 501, 1101, opts=["sack 2101:3101"]),
    seg(1.04, "in", ".", 501, 1101, opts=["sack 2101:4101"]),
    seg(1.05, "in", ".", 501, 1101, opts=["sack 2101:5101"]),
    seg(1.05, "out", ".", 1101, 501, n=1000),
    ev(1.05, "tcp", "retransmit", conn=C1, reason="fast", seq=1101, len=1000),
    ev(1.05, "tcp", "cwnd", conn=C1, cwnd=3500, ssthresh=3500),
    seg(1.07, "in", ".", 501, 5101),
    seg(3.0, "out", "F.", 5101, 501),
]


def test_window_ladder_draws_every_segment_with_dup_acks_and_sack_blocks():
    conns = tracetool.windowed(tracetool.connections(LOSSY), 0.5, 1.06)
    (c,) = conns
    chart = tracetool.ladder(c, every=True).splitlines()[2:]
    assert len(chart) == 10      # five data segments, four ACKs, one retransmission
    assert "dup ACK" not in chart[5] and "ack=1101" in chart[5]
    assert "dup ACK #1: ACK seq=501 ack=1101 win=65535 SACK 2101-3101" in chart[6]
    assert "dup ACK #2:" in chart[7] and "SACK 2101-4101" in chart[7]
    assert "dup ACK #3:" in chart[8] and "SACK 2101-5101" in chart[8]
    assert chart[9].rstrip().endswith(">") and "seq=1101" in chart[9]
    assert "(retransmission: fast)" in chart[9]
    assert all(float(r.split()[0]) <= 1.06 for r in chart)
    # Without a window the same data phase is summarized in rows of "=".
    whole = tracetool.ladder(tracetool.connections(LOSSY)[0])
    assert "dup ACK" not in whole and "=====" in whole


def test_window_timeline_says_the_state_at_its_start_and_counts_only_inside():
    (c,) = tracetool.windowed(tracetool.connections(LOSSY), 0.5, 1.06)
    text = tracetool.timeline(c)
    assert "window 0.500000 to 1.060000 s; in ESTABLISHED at its start" in text
    assert "sent            6000 bytes in 6 segments, 1 retransmission of 1000 bytes (fast 1)" in text
    assert "received           0 bytes in 4 segments" in text
    assert "states    ESTABLISHED 560.000 ms" in text


def test_plot_data_of_a_window_keeps_the_connection_origin():
    data = tracetool.plot_data(LOSSY, C1, t_from=1.0, t_to=1.06)
    assert data["isn"] == 100 and data["t0"] == 0.0
    assert [s for _, s, _ in data["segments"]] == [1, 1001, 2001, 3001, 4001, 1001]
    assert data["retransmissions"] == [(1.05, 1001, 1000)]
    assert [a for _, a in data["acks"]] == [1001, 1001, 1001, 1001]
    assert data["cwnd"] == [(1.05, 3500)]
    full = tracetool.plot_data(LOSSY, C1)
    assert len(full["acks"]) == 6 and full["acks"][-1][1] == 5001


def test_run_with_a_window_and_its_command_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "t.jsonl", LOSSY)
    assert cli.main(["trace", path, "--format", "ladder", "--from", "1.01", "--to", "1.06"]) == 0
    out = capsys.readouterr().out
    assert f"{C1} from 1.010000 to 1.060000" in out and out.count("dup ACK #") == 3
    assert "seq=3101" not in out          # sent at 1.00, before the window
    assert cli.main(["trace", path, "--from", "5", "--to", "6"]) == 1
    assert "no TCP connection from 5.000000 to 6.000000" in capsys.readouterr().err
    assert cli.main(["trace", path, "--from", "2", "--to", "1"]) == 2
    assert "--to 1.0 is before --from 2.0" in capsys.readouterr().err
    assert cli.main(["trace", path, "--format", "text", "--from", "1.07", "--to", "1.07"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[:3] == ["1.070000", "tcp", "seg"] and "ack 5101" in line


# --- refused SYNs and failed connects ------------------------------------------------------


REFUSED_C = "192.0.2.2:81-192.0.2.1:40100"
REFUSED = [
    seg(0.5, "in", "S", 7000, conn=REFUSED_C, opts=["mss 1460"]),
    ev(0.5, "tcp", "drop", conn=REFUSED_C, reason="no_conn", port=81),
    seg(0.5, "out", "R.", 0, 7001, win=0, conn=REFUSED_C),
]


def test_syn_to_a_closed_port_is_a_two_row_refused_ladder(tmp_path):
    (c,) = tracetool.connections(REFUSED)
    assert c.refused
    chart = tracetool.ladder(c).splitlines()
    assert chart[0].split()[2:4] == ["192.0.2.1:40100", "(peer)"]    # the peer opened: left
    rows = chart[2:]
    assert len(rows) == 2
    assert "(SYN_SENT)" in rows[0] and "SYN seq=7000" in rows[0] and rows[0].rstrip()[-1] == ">"
    assert "<" in rows[1] and "RST,ACK seq=0 ack=7001" in rows[1] and rows[1].endswith("CLOSED")
    out = io.StringIO()
    assert tracetool.run(write_jsonl(tmp_path / "r.jsonl", REFUSED), fmt="ladder", out=out,
                         err=io.StringIO()) == 0
    assert f"{REFUSED_C} (refused: nothing listening)" in out.getvalue()
    text = tracetool.timeline(c)
    assert "refused: nothing listening on 192.0.2.2:81" in text
    assert "rcv SYN seq=7000" in text and "sent RST,ACK seq=0 ack=7001" in text


def test_a_connect_that_gives_up_says_how_many_syns_it_sent():
    conv = Conversation(TcpConfig(syn_retries=2))
    conv.layer.connect(0xC6336401, (0xC6336402, 5555), 0.0, local_port=4000)
    conv.run_until(60.0)
    causes = [e["cause"] for e in conv.events if e["event"] == "state"]
    assert causes == ["user connect", "timer retransmit (connect timed out after 3 SYNs)"]
    assert len([s for s in conv.sent() if "Flags [S]" in s]) == 3


def test_arp_failure_is_the_cause_in_the_connects_timeline_and_in_the_arp_view():
    name = f"{US}:40000-192.0.2.99:80"
    evs = [st(0.0, "CLOSED", "SYN_SENT", "user connect", conn=name),
           ev(0.0, "arp", "request", target="192.0.2.99", attempt=1),
           ev(1.0, "arp", "request", target="192.0.2.99", attempt=2),
           ev(2.0, "arp", "request", target="192.0.2.99", attempt=3),
           ev(3.0, "arp", "failed", ip="192.0.2.99", tries=3, dropped=1,
              cause="no ARP reply for 192.0.2.99 after 3 requests"),
           st(7.0, "SYN_SENT", "CLOSED", "timer retransmit (connect timed out after 3 SYNs)",
              conn=name)]
    (c,) = tracetool.connections(evs)
    text = tracetool.timeline(c, [e for e in evs if e["layer"] == "arp"])
    assert "3.000000" in text and "arp: no ARP reply for 192.0.2.99 after 3 requests" in text
    assert "final state CLOSED (no ARP reply for 192.0.2.99 after 3 requests)" in text
    view = layer_view(evs, "arp")
    assert "failed: no ARP reply for 192.0.2.99 after 3 requests; 1 waiting packet dropped" in view
    assert view.splitlines()[-1] == "arp: 0 resolutions, 1 failure, 0 requests answered"


def test_icmp_errors_that_reach_a_connection_are_in_its_timeline():
    q = {"proto": "tcp", "id": 7, "total_length": 40, "src": "192.0.2.1:40000",
         "dst": "192.0.2.2:80", "seq": 201}
    evs = ACTIVE[:8] + [
        ev(1.25, "icmp", "in", src="192.0.2.7", type=3, code=1,
           name="destination unreachable: host unreachable", quote=q),
        ev(1.25, "tcp", "icmp", conn=C1, kind="host_unreachable", seq=201)] + ACTIVE[8:]
    (c,) = tracetool.connections(evs)
    text = tracetool.timeline(c, [e for e in evs if e["layer"] == "icmp"])
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if "icmp in:" in ln)
    assert ("icmp in: destination unreachable: host unreachable from 192.0.2.7, quoting tcp "
            "192.0.2.1:40000 > 192.0.2.2:80 seq=201 id=7 len=40") in lines[i]
    assert "icmp host_unreachable for seq=201: a soft error: kept for the socket" in lines[i + 1]
    assert lines[i].split()[0] == "1.250000"


def test_an_icmp_error_that_ends_a_connect_is_a_hard_error_in_its_timeline():
    name = f"{US}:40000-192.0.2.99:80"
    evs = [st(0.0, "CLOSED", "SYN_SENT", "user connect", conn=name),
           ev(3.000010, "tcp", "icmp", conn=name, kind="host_unreachable", seq=5),
           st(3.000030, "SYN_SENT", "CLOSED", "icmp host_unreachable", conn=name)]
    (c,) = tracetool.connections(evs)
    text = tracetool.timeline(c)
    assert "icmp host_unreachable for seq=5: a hard error: the connection attempt ends" in text


# --- the layer views ------------------------------------------------------------------------


LAYERS = [
    ev(1.0, "ip", "fragmented", dst="192.0.2.1", id=5, length=4008, fragments=3,
       offsets=[0, 1480, 2960], mtu=1500),
    ev(2.0, "ip", "fragment", src="192.0.2.1", id=9, offset=0, length=1480, more=True),
    ev(2.000030, "ip", "fragment", src="192.0.2.1", id=9, offset=1480, length=1480, more=True),
    ev(2.000062, "ip", "fragment", src="192.0.2.1", id=9, offset=2960, length=1048, more=False),
    ev(2.000062, "ip", "reassembled", src="192.0.2.1", id=9, length=4008),
    ev(3.0, "ip", "fragment", src="192.0.2.1", id=10, offset=1480, length=1480, more=True),
    ev(33.0, "ip", "drop", reason="reassembly_timeout", id=10, src="192.0.2.1"),
    ev(4.0, "arp", "request", target="192.0.2.1", attempt=1),
    ev(4.000210, "arp", "reply_in", sender="192.0.2.1", mac="aa:bb:cc:dd:ee:ff",
       target=US),
    ev(4.000210, "arp", "cache_add", ip="192.0.2.1", mac="aa:bb:cc:dd:ee:ff"),
    ev(5.0, "icmp", "out", dst="192.0.2.1", type=8, code=0, name="echo request", id=3,
       seq=1, length=56),
    ev(5.000090, "icmp", "in", src="192.0.2.1", type=0, code=0, name="echo reply", id=3,
       seq=1, length=56),
    ev(6.0, "udp", "in", src="192.0.2.1:5000", dst=f"{US}:9", length=12),
    ev(6.0, "udp", "drop", reason="port_closed", port=9, src="192.0.2.1"),
    ev(6.0, "icmp", "error_out", dst="192.0.2.1", type=3, code=3,
       name="destination unreachable: port unreachable",
       quote={"proto": "udp", "id": 77, "total_length": 40, "src": "192.0.2.1:5000",
              "dst": f"{US}:9"}),
    ev(7.0, "udp", "out", src=f"{US}:7", dst="192.0.2.1:6000", length=100),
    ev(7.1, "udp", "in", src="192.0.2.1:6000", dst=f"{US}:7", length=20),
    ev(8.0, "icmp", "in", src="192.0.2.1", type=3, code=4,
       name="destination unreachable: fragmentation needed", mtu=1400,
       quote={"proto": "tcp", "id": 1, "total_length": 1500, "src": f"{US}:80",
              "dst": "192.0.2.1:40000", "seq": 9}),
]


def test_ip_view_shows_fragments_offsets_reassembly_time_and_timeouts():
    lines = layer_view(sorted(LAYERS, key=lambda e: e["t"]), "ip").splitlines()
    assert lines[0] == "ip layer"
    assert lines[1] == ("    1.000000  out id=5 to 192.0.2.1: 4008 bytes in 3 fragments at "
                        "offsets 0,1480,2960 (MTU 1500)")
    assert lines[2] == ("    2.000062  in  id=9 from 192.0.2.1: 3 fragments at offsets "
                        "0,1480,2960, reassembled 4008 bytes in 62 µs")
    assert lines[3] == ("   33.000000  in  id=10 from 192.0.2.1: timed out after 30.000000 s "
                        "with 1 fragment (1480 bytes) at offsets 1480")
    assert lines[4] == ("ip: 1 datagrams fragmented out (3 fragments), 1 reassembled in "
                        "(3 fragments), 1 reassembly timeout")


def test_arp_view_shows_the_time_to_resolve_and_cache_changes():
    view = layer_view(LAYERS, "arp").splitlines()
    assert view[1:] == [
        "    4.000000  request who-has 192.0.2.1 (attempt 1)",
        "    4.000210  reply 192.0.2.1 is-at aa:bb:cc:dd:ee:ff: resolved in 210 µs",
        "    4.000210  cache add 192.0.2.1 at aa:bb:cc:dd:ee:ff",
        "arp: 1 resolution, average 210 µs, 0 failures, 0 requests answered"]


def test_icmp_view_names_messages_quotes_errors_and_times_echoes():
    view = layer_view(LAYERS, "icmp")
    assert "out to   192.0.2.1  echo request id=3 seq=1 length=56" in view
    assert "in  from 192.0.2.1  echo reply id=3 seq=1 length=56, 90 µs after the request" in view
    assert ("out to   192.0.2.1  destination unreachable: port unreachable\n"
            "                  quoting udp 192.0.2.1:5000 > 192.0.2.2:9 id=77 len=40") in view
    assert "destination unreachable: fragmentation needed, MTU 1400" in view
    assert "type 3" not in view
    assert summary(LAYERS, "icmp").startswith("icmp: ")
    assert "1 destination unreachable: port unreachable" in summary(LAYERS, "icmp")


def test_udp_view_lists_datagrams_per_socket_and_closed_ports():
    view = layer_view(LAYERS, "udp").splitlines()
    assert not any(ln.startswith("socket 192.0.2.2:9:") for ln in view)   # no socket there
    i = view.index("socket 192.0.2.2:7: 1 in (20 bytes), 1 out (100 bytes)")
    assert view[i + 1].split()[1:] == ["out", "->", "192.0.2.1:6000", "100", "bytes"]
    assert view[i + 2].split()[1:] == ["in", "<-", "192.0.2.1:6000", "20", "bytes"]
    assert any(ln.startswith("drops (closed ports, answered with ICMP port unreachable: port 9 x1")
               for ln in view)
    assert view[-1] == "udp: 1 socket, 1 datagrams in, 1 out, 1 to closed ports"


def test_default_view_keeps_tcp_first_then_the_other_layers(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", sorted(ACTIVE + LAYERS, key=lambda e: e["t"]))
    out = io.StringIO()
    assert tracetool.run(path, out=out, err=io.StringIO()) == 0
    text = out.getvalue()
    assert text.index(f"connection {C1}") < text.index("other layers") < text.index("ip: 1 data")
    for name in ("ip:", "arp:", "icmp:", "udp:"):
        assert f"\n  {name} " in text
    out = io.StringIO()
    assert tracetool.run(path, layer="ip", out=out, err=io.StringIO()) == 0
    assert out.getvalue().startswith("ip layer\n") and C1 not in out.getvalue()
    err = io.StringIO()
    assert tracetool.run(write_jsonl(tmp_path / "a.jsonl", ACTIVE), layer="udp",
                         out=io.StringIO(), err=err) == 1
    assert "no udp events" in err.getvalue()


# --- following a trace as it is written --------------------------------------------------------


def test_follower_prints_state_changes_and_the_summary_at_close():
    f = Follower("timeline")
    lines = [ln for e in ACTIVE for ln in f.event(e)]
    assert lines[0].split() == ["1.000000", C1, "CLOSED", "->", "SYN_SENT", "user", "connect"]
    assert sum(1 for ln in lines if "->" in ln) == 6
    assert any(ln.strip().startswith("summary:") and "final state CLOSED" in ln for ln in lines)
    ladder = Follower("ladder")
    rows = [ln for e in LOSSY for ln in ladder.event(e)]
    assert sum(1 for r in rows if "dup ACK #" in r) == 3
    assert any("retransmission: fast" in r for r in rows)
    text = Follower("text")
    assert text.line("not json\n") == ["not json"] and text.line("\n") == []


def test_follow_prints_events_as_they_are_appended(tmp_path):
    path = tmp_path / "live.jsonl"
    path.write_text(json.dumps(ACTIVE[0]) + "\n")
    out = io.StringIO()
    done = threading.Event()
    th = threading.Thread(target=follow, args=(str(path),),
                          kwargs={"out": out, "stop": done.is_set})
    th.start()
    try:
        deadline = time.monotonic() + 2
        while "SYN_SENT" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "CLOSED -> SYN_SENT" in out.getvalue()
        with open(path, "a") as f:
            line = json.dumps(ACTIVE[3])
            f.write(line[:20])        # half a line: not shown until its end is written
            f.flush()
            time.sleep(0.2)
            assert "ESTABLISHED" not in out.getvalue()
            f.write(line[20:] + "\n")
        deadline = time.monotonic() + 2
        while "ESTABLISHED" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "SYN_SENT -> ESTABLISHED" in out.getvalue()
    finally:
        done.set()
        th.join(5)
    assert not th.is_alive()
    err = io.StringIO()
    assert follow(str(tmp_path / "missing"), err=err) == 2 and "missing" in err.getvalue()


# --- the events the views read, from the layers themselves ---------------------------------------


def test_tcp_traces_each_icmp_error_that_reaches_a_connection():
    import struct

    from tests.helpers.tcp import ISS, PEER, PEER_PORT, US, US_PORT
    conv = Conversation()
    conv.open_active()
    conv.conn.send(b"x" * 100, conv.now)
    conv.sent()
    quoted = (struct.pack("!BBHHHBBHII", 0x45, 0, 140, 1, 0, 64, 6, 0, US, PEER)
              + struct.pack("!HHI", US_PORT, PEER_PORT, ISS + 1))
    conv.layer.icmp_error("host_unreachable", PEER, US, quoted, conv.now)
    conv.layer.icmp_error("frag_needed", PEER, US, quoted, conv.now, mtu=1400)
    icmp = [e for e in conv.events if e["event"] == "icmp"]
    assert [(e["kind"], e["seq"], e.get("mtu")) for e in icmp] == [
        ("host_unreachable", ISS + 1, None), ("frag_needed", ISS + 1, 1400)]
    assert conv.conn.state == "ESTABLISHED"      # soft: the connection goes on
    (c,) = tracetool.connections(conv.events)
    text = tracetool.timeline(c)
    assert "icmp host_unreachable for seq=1001: a soft error" in text
    assert "icmp frag_needed for seq=1001: path MTU 1400" in text


def test_icmp_names_and_quotes_as_the_layer_writes_them():
    import struct

    from stack.net.icmp import describe_quote
    from stack.wire.icmp import icmp_name
    assert icmp_name(3, 3) == "destination unreachable: port unreachable"
    assert icmp_name(3, 4) == "destination unreachable: fragmentation needed"
    assert icmp_name(11, 1) == "time exceeded: fragment reassembly time exceeded"
    assert icmp_name(8, 0) == "echo request" and icmp_name(0, 0) == "echo reply"
    assert icmp_name(3, 9) == "destination unreachable: code 9"
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40, 77, 0, 64, 17, 0, 0xC0000201, 0xC0000202)
    assert describe_quote(ip + struct.pack("!HHHH", 5000, 9, 20, 0)) == {
        "proto": "udp", "id": 77, "total_length": 40, "src": "192.0.2.1:5000",
        "dst": "192.0.2.2:9"}
    assert describe_quote(b"\x45" * 10) == {"length": 10}
