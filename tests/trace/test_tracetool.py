"""``stack trace``: timelines, summaries, the ladder chart, the plot and its data.
Synthetic traces pin exact output; real traces come from two stacks on an
in-memory link (no TAP, no privileges).
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter

import pytest

from stack import cli, tracetool
from stack.link.impair import ImpairLink
from stack.link.memory import MemoryLink
from stack.runtime import Stack
from stack.services import parse_service, start_service
from stack.trace import Trace, render_text

# --- a synthetic trace --------------------------------------------------------


C1 = "192.0.2.1:40000-192.0.2.2:80"
C2 = "192.0.2.2:80-192.0.2.9:5555"
LST = "0.0.0.0:80-0.0.0.0:0"


def st(t, frm, to, cause, conn=C1):
    return {"t": t, "layer": "tcp", "event": "state", "conn": conn, "from": frm, "to": to,
            "cause": cause}


def seg(t, d, flags, seq, ack=0, n=0, win=65535, opts=(), conn=C1):
    return {"t": t, "layer": "tcp", "event": "seg", "conn": conn, "dir": d, "flags": flags,
            "seq": seq, "ack": ack, "win": win, "len": n, "options": list(opts)}


def ev(t, layer, event, **fields):
    return {"t": t, "layer": layer, "event": event, **fields}


ACTIVE = [
    st(1.0, "CLOSED", "SYN_SENT", "user connect"),
    seg(1.0, "out", "S", 100, opts=["mss 1460"]),
    seg(1.1, "in", "S.", 300, 101, opts=["mss 1460"]),
    st(1.1, "SYN_SENT", "ESTABLISHED", "rcv SYN,ACK seq=300 ack=101"),
    ev(1.1, "tcp", "rtt", conn=C1, sample=0.1, srtt=0.1, rttvar=0.05, rto=0.3),
    seg(1.1, "out", ".", 101, 301),
    seg(1.2, "out", "P.", 101, 301, n=100),
    seg(1.3, "in", ".", 301, 201),
    ev(1.3, "tcp", "rtt", conn=C1, sample=0.3, srtt=0.125, rttvar=0.08, rto=0.45),
    seg(1.4, "in", "P.", 301, 201, n=1000),
    seg(1.5, "out", ".", 201, 1301),
    seg(1.6, "out", "P.", 201, 1301, n=50),
    ev(1.9, "tcp", "timer", conn=C1, timer="rto", retries=1, rto=0.9),
    seg(1.9, "out", "P.", 201, 1301, n=50),
    ev(1.9, "tcp", "retransmit", conn=C1, reason="rto", seq=201, len=50, rto=0.9),
    seg(1.95, "in", ".", 1301, 251),
    ev(1.95, "tcp", "rtt", conn=C1, sample=0.2, srtt=0.134, rttvar=0.07, rto=0.41),
    st(2.0, "ESTABLISHED", "FIN_WAIT_1", "user close"),
    seg(2.0, "out", "F.", 251, 1301),
    seg(2.1, "in", ".", 1301, 252),
    st(2.1, "FIN_WAIT_1", "FIN_WAIT_2", "rcv ACK seq=1301 ack=252"),
    seg(2.2, "in", "F.", 1301, 252),
    st(2.2, "FIN_WAIT_2", "TIME_WAIT", "rcv FIN,ACK seq=1301 ack=252"),
    seg(2.2, "out", ".", 252, 1302),
    st(62.2, "TIME_WAIT", "CLOSED", "timer 2MSL"),
]


PASSIVE = [
    st(0.5, "CLOSED", "LISTEN", "user listen", conn=LST),
    seg(3.0, "in", "S", 7000, conn=C2),
    st(3.0, "LISTEN", "SYN_RECEIVED", "rcv SYN seq=7000", conn=C2),
    seg(3.0, "out", "S.", 9000, 7001, conn=C2),
    seg(3.1, "in", "R", 7001, conn=C2),
    st(3.1, "SYN_RECEIVED", "CLOSED", "rcv RST seq=7001", conn=C2),
    ev(3.1, "tcp", "drop", conn=C2, reason="out_of_window"),
]


SYNTHETIC = [ev(0.0, "link", "up", address="192.0.2.2/24", mtu=1500)] + sorted(
    ACTIVE + PASSIVE, key=lambda e: e["t"])


def write_jsonl(path, events) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


def by_name(conns, name):
    (c,) = [c for c in conns if c.name == name]
    return c


def test_connections_are_grouped_by_conn_field_in_order_of_appearance():
    conns = tracetool.connections(SYNTHETIC)
    assert [c.name for c in conns] == [LST, C1, C2]
    assert conns[0].is_listener and not conns[1].is_listener
    assert by_name(conns, C1).opened == "active"
    assert by_name(conns, C2).opened == "passive"
    assert by_name(conns, C2).local == "192.0.2.2:80"
    assert by_name(conns, C2).remote == "192.0.2.9:5555"


def test_timeline_lists_every_transition_with_time_and_cause():
    c = by_name(tracetool.connections(SYNTHETIC), C1)
    text = tracetool.timeline(c)
    lines = text.splitlines()
    assert lines[0] == f"connection {C1} (active open to 192.0.2.2:80)"
    rows = [ln.split(None, 4) for ln in lines[2:8]]
    assert rows == [
        ["1.000000", "CLOSED", "->", "SYN_SENT", "user connect"],
        ["1.100000", "SYN_SENT", "->", "ESTABLISHED", "rcv SYN,ACK seq=300 ack=101"],
        ["2.000000", "ESTABLISHED", "->", "FIN_WAIT_1", "user close"],
        ["2.100000", "FIN_WAIT_1", "->", "FIN_WAIT_2", "rcv ACK seq=1301 ack=252"],
        ["2.200000", "FIN_WAIT_2", "->", "TIME_WAIT", "rcv FIN,ACK seq=1301 ack=252"],
        ["62.200000", "TIME_WAIT", "->", "CLOSED", "timer 2MSL"],
    ]


def test_summary_numbers():
    c = by_name(tracetool.connections(SYNTHETIC), C1)
    s = tracetool.summarize(c)
    assert (s.start, s.end) == (1.0, 62.2)
    assert s.duration == pytest.approx(61.2)
    assert (s.bytes_out, s.segs_out) == (200, 8)   # 100 + 50 + 50 (the retransmission)
    assert (s.bytes_in, s.segs_in) == (1000, 6)
    assert (s.retransmits, s.retransmit_bytes) == (1, 50)
    assert s.retransmit_reasons == Counter(rto=1)
    assert s.rtt_stats() == pytest.approx((0.1, 0.2, 0.3))
    assert s.srtt == 0.134
    assert s.timers == Counter(rto=1)
    assert s.final_state == "CLOSED"
    text = tracetool.timeline(c)
    assert "summary: 61.200000 s from 1.000000 to 62.200000, final state CLOSED" in text
    assert "sent             200 bytes in 8 segments, 1 retransmission of 50 bytes (rto 1)" in text
    assert "received        1000 bytes in 6 segments" in text
    assert ("rtt       min 100.000 ms, avg 200.000 ms, max 300.000 ms (3 samples), "
            "final srtt 134.000 ms") in text
    c2 = by_name(tracetool.connections(SYNTHETIC), C2)
    assert "drops     out_of_window 1" in tracetool.timeline(c2)
    assert tracetool.summarize(c2).final_state == "CLOSED"


def test_reused_four_tuple_is_a_new_incarnation():
    again = [seg(70.0, "in", "S", 5000, conn=C2),
             st(70.0, "LISTEN", "SYN_RECEIVED", "rcv SYN seq=5000", conn=C2),
             seg(70.0, "out", "S.", 8000, 5001, conn=C2)]
    conns = tracetool.connections(PASSIVE + again)
    firsts = [c for c in conns if c.name == C2]
    assert [c.incarnation for c in firsts] == [1, 2]
    assert firsts[1].events[0]["seq"] == 5000 and firsts[1].state == "SYN_RECEIVED"
    assert firsts[1].label == f"{C2} #2"


@pytest.mark.parametrize("endpoint, expected", [
    ("192.0.2.1:40000", [C1]),
    ("192.0.2.9:5555", [C2]),
    ("192.0.2.2:80", [LST, C1, C2]),   # either side; a 0.0.0.0 listener matches its port
    (":80", [LST, C1, C2]),
    ("40000", [C1]),
    ("192.0.2.2:81", []),
    ("198.51.100.1:80", [LST]),         # (the wildcard listener takes any address)
])
def test_conn_filter_keeps_connections_with_that_endpoint_on_either_side(endpoint, expected):
    kept = tracetool.select(tracetool.connections(SYNTHETIC), endpoint)
    assert [c.name for c in kept] == expected


def test_run_prints_the_overview_and_filtered_timelines(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", SYNTHETIC)
    out, err = io.StringIO(), io.StringIO()
    assert tracetool.run(path, conn="192.0.2.9:5555", out=out, err=err) == 0
    text = out.getvalue()
    assert text.startswith(f"trace {path}: {len(SYNTHETIC)} events from 0.000000 to 62.200000 s, "
                           "2 TCP connections, 1 listener\n")
    assert "link up: address=192.0.2.2/24 mtu=1500" in text
    assert "drops: tcp.out_of_window 1" in text
    assert f"connection {C2} (passive open from 192.0.2.9:5555)" in text
    assert "LISTEN       -> SYN_RECEIVED  rcv SYN seq=7000" in text
    assert C1 not in text and "listener" not in text.split("\n", 1)[1]
    assert err.getvalue() == ""


def test_run_reports_no_match_bad_endpoint_missing_and_text_files(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", SYNTHETIC)
    err = io.StringIO()
    assert tracetool.run(path, conn="1.2.3.4:9", out=io.StringIO(), err=err) == 1
    assert "no TCP connection with endpoint 1.2.3.4:9" in err.getvalue()
    err = io.StringIO()
    assert tracetool.run(path, conn="1.2.3.4:http", out=io.StringIO(), err=err) == 2
    assert "--conn wants ADDR:PORT" in err.getvalue()
    err = io.StringIO()
    assert tracetool.run(str(tmp_path / "nope"), out=io.StringIO(), err=err) == 2
    assert "cannot read" in err.getvalue()
    text = tmp_path / "t.txt"
    text.write_text("".join(render_text(e) + "\n" for e in SYNTHETIC))
    err = io.StringIO()
    assert tracetool.run(str(text), out=io.StringIO(), err=err) == 2
    assert "is not a jsonl trace" in err.getvalue()


def test_cut_off_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"t": "soon", "layer": "tcp", "event": "x"}\n[1, 2]\n'
                    + "".join(json.dumps(e) + "\n" for e in SYNTHETIC) + '{"t": 63.0, "lay')
    out, err = io.StringIO(), io.StringIO()
    assert tracetool.run(str(path), out=out, err=err) == 0
    assert "skipped 3 lines that did not parse as trace events" in err.getvalue()
    assert f"connection {C1}" in out.getvalue()


def test_cli_trace_subcommand(tmp_path, capsys):
    path = write_jsonl(tmp_path / "t.jsonl", SYNTHETIC)
    assert cli.main(["trace", path, "--conn", "192.0.2.1:40000", "--format", "ladder"]) == 0
    out = capsys.readouterr().out
    assert "SYN seq=100" in out and "(SYN_RECEIVED)" in out


LADDER = """\
  time (s)  192.0.2.1:40000 (this stack)                                                  192.0.2.2:80 (peer)
            --------------------------------------------------------------------------------------------
  1.000000  SYN_SENT       ------------- SYN seq=100 win=65535 <mss 1460> -------------->
  1.100000  ESTABLISHED    <------- SYN,ACK seq=300 ack=101 win=65535 <mss 1460> -------- (SYN_RECEIVED)
  1.100000                 -------------------- ACK seq=101 ack=301 -------------------->
  1.200000                 ================= 1 data segment, 100 bytes =================>
  1.300000                 <-------------------- ACK seq=301 ack=201 -------------------- (ESTABLISHED)
  1.400000                 <============= 1 data segment, 1000 bytes; 1 ACK =============
  1.500000                 ==== 2 data segments, 100 bytes; 1 ACK; 1 retransmitted =====>
  2.000000  FIN_WAIT_1     ----------------- FIN,ACK seq=251 ack=1301 ------------------>
  2.100000  FIN_WAIT_2     <------------------- ACK seq=1301 ack=252 -------------------- (CLOSE_WAIT)
  2.200000  TIME_WAIT      <----------------- FIN,ACK seq=1301 ack=252 ------------------ (LAST_ACK)
  2.200000                 ------------------- ACK seq=252 ack=1302 -------------------->
 62.200000  CLOSED"""


def test_ladder_of_an_active_open_and_close():
    c = by_name(tracetool.connections(SYNTHETIC), C1)
    assert tracetool.ladder(c) == LADDER


def test_ladder_of_a_passive_open_puts_the_peer_on_the_left():
    c = by_name(tracetool.connections(SYNTHETIC), C2)
    lines = tracetool.ladder(c).splitlines()
    assert lines[0].split() == ["time", "(s)", "192.0.2.9:5555", "(peer)", "192.0.2.2:80",
                                "(this", "stack)"]
    assert lines[2].startswith("  3.000000  (SYN_SENT)     ---") and lines[2].endswith(
        "> SYN_RECEIVED")
    assert "<---" in lines[3] and "SYN,ACK seq=9000 ack=7001" in lines[3]
    assert lines[4].startswith("  3.100000  (CLOSED)       ---") and lines[4].endswith("> CLOSED")


# --- plot data and the PNG, on synthetic data ---------------------------------


def test_plot_data_is_relative_to_isn_and_connection_start():
    d = tracetool.plot_data(SYNTHETIC, C1)
    assert d["direction"] == "in"   # 1000 bytes in, 200 out
    d = tracetool.plot_data(SYNTHETIC, C1, direction="out")
    assert d["isn"] == 100 and d["t0"] == 1.0
    assert d["segments"] == [(pytest.approx(0.2), 1, 100), (pytest.approx(0.6), 101, 50),
                             (pytest.approx(0.9), 101, 50)]
    assert d["retransmissions"] == [(pytest.approx(0.9), 101, 50)]
    assert [a for _, a in d["acks"]] == [1, 101, 101, 151, 152, 152]
    assert [w for _, w in d["window"]] == [a + 65535 for a in [1, 101, 101, 151, 152, 152]]
    inbound = tracetool.plot_data(SYNTHETIC, C1, direction="in")
    assert inbound["isn"] == 300 and inbound["segments"] == [(pytest.approx(0.4), 1, 1000)]
    assert inbound["retransmissions"] == []
    assert [s for _, s in inbound["srtt"]] == [0.1, 0.125, 0.134]


def test_plot_data_scales_windows_only_when_both_syns_offer_it():
    events = [seg(0.0, "out", "S", 0, opts=["mss 1460", "wscale 7"]),
              seg(0.1, "in", "S.", 0, 1, win=1000, opts=["mss 1460", "wscale 3"]),
              seg(0.2, "out", "P.", 1, 1, n=10),
              seg(0.3, "in", ".", 1, 11, win=1000)]
    d = tracetool.plot_data(events, C1, direction="out")
    assert d["window"] == [(pytest.approx(0.1), 1 + 1000), (pytest.approx(0.3), 11 + 8000)]
    events[0] = seg(0.0, "out", "S", 0, opts=["mss 1460"])
    d = tracetool.plot_data(events, C1, direction="out")
    assert d["window"][-1] == (pytest.approx(0.3), 11 + 1000)


def test_inbound_retransmissions_are_inferred_from_repeated_sequence_numbers():
    events = [seg(0.0, "in", "S", 0), seg(0.1, "in", ".", 1, n=100),
              seg(0.2, "in", ".", 101, n=100), seg(0.3, "in", ".", 1, n=100),
              seg(0.4, "in", ".", 201, n=100)]
    d = tracetool.plot_data(events, C1)
    assert d["direction"] == "in"
    assert d["retransmissions"] == [(pytest.approx(0.3), 1, 100)]
    assert d["retransmissions_from"] == "repeated sequence numbers"


def test_plot_writes_a_png_of_the_busiest_connection(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", SYNTHETIC)
    png = tmp_path / "out.png"
    out = io.StringIO()
    assert tracetool.run(path, plot_out=str(png), out=out, err=io.StringIO()) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert f"plot: {png} ({C1}, 1 data segments received, 0 retransmissions)" in out.getvalue()
    err = io.StringIO()
    assert tracetool.run(path, conn="192.0.2.9:5555", plot_out=str(tmp_path / "x.png"),
                         out=io.StringIO(), err=err) == 1
    assert "no connection carried data" in err.getvalue()


# --- a real trace: HTTP over an in-memory link with loss ----------------------


BODY = 1_000_000


@pytest.fixture(scope="module")
def real_trace():
    """Server b (http:80) and client a; a's link loses 3% of frames each way.

    Returns (server events, client events, server stats, the response size)."""
    la, lb = MemoryLink.pair()
    la = ImpairLink(la, "loss=0.03,seed=11")
    sink_a, sink_b = io.StringIO(), io.StringIO()
    a = Stack(la, address="192.0.2.1/24", trace=Trace(sink_a))
    b = Stack(lb, address="192.0.2.2/24", trace=Trace(sink_b))
    svc = start_service(b, parse_service("http:80"))
    try:
        with a.create_connection(("192.0.2.2", 80), timeout=20) as s:
            s.sendall(f"GET /bytes/{BODY} HTTP/1.0\r\n\r\n".encode())
            got = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                c.state == "TIME_WAIT" for c in b.tcp.connections()):
            time.sleep(0.01)
    finally:
        svc.close()
        a.close()
        b.close()
    head, _, body = bytes(got).partition(b"\r\n\r\n")
    assert len(body) == BODY and head.startswith(b"HTTP/1.")
    assert la.counts["tx.loss"] + la.counts["rx.loss"] > 0
    server, bad = tracetool.parse_lines(sink_b.getvalue().splitlines())
    client, bad_c = tracetool.parse_lines(sink_a.getvalue().splitlines())
    assert bad == bad_c == 0
    return server, client, b.stats(), len(got)


def test_real_server_timeline_shows_passive_open_and_active_close(real_trace):
    server, _, _, _ = real_trace
    conns = [c for c in tracetool.connections(server) if not c.is_listener]
    assert len(conns) == 1
    (c,) = conns
    steps = [(t.frm, t.to) for t in c.transitions]
    assert steps[:2] == [("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED")]
    assert ("FIN_WAIT_2", "TIME_WAIT") in steps and steps[-1][1] == "CLOSED"
    assert c.transitions[0].cause.startswith("rcv SYN seq=")
    assert c.transitions[1].cause.startswith("rcv ACK seq=")
    text = tracetool.timeline(c)
    assert "(passive open from 192.0.2.1:" in text
    assert "LISTEN       -> SYN_RECEIVED  rcv SYN seq=" in text


def test_real_summary_matches_the_transfer_and_the_counters(real_trace):
    server, client, stats, response = real_trace
    (c,) = [c for c in tracetool.connections(server) if not c.is_listener]
    s = tracetool.summarize(c)
    # Every byte of the response went out at least once; the extra bytes are
    # retransmissions (one may straddle new data, so allow that slack).
    assert s.bytes_out - s.retransmit_bytes <= response <= s.bytes_out
    assert s.retransmits > 0
    assert s.retransmits <= stats["tcp.retrans_segs"]
    assert s.segs_out == stats["tcp.out_segs"]
    assert s.bytes_in == len(f"GET /bytes/{BODY} HTTP/1.0\r\n\r\n")
    lo, avg, hi = s.rtt_stats()
    assert 0 <= lo <= avg <= hi < 1.0
    (cc,) = [c for c in tracetool.connections(client)]
    # What the client received is what the server sent, less what the link lost.
    assert tracetool.summarize(cc).bytes_in <= s.bytes_out


def test_real_plot_data_marks_every_retransmit_event(real_trace, tmp_path):
    server, _, _, _ = real_trace
    c = tracetool.busiest(tracetool.connections(server))
    d = tracetool.plot_data(c.events, c.name)
    assert d["direction"] == "out"
    rex = [e for e in server if e["event"] == "retransmit" and e.get("conn") == c.name]
    assert len(d["retransmissions"]) == len(rex) > 0
    sent = {(s, n) for _, s, n in d["segments"]}
    assert all((s, n) in sent for _, s, n in d["retransmissions"] if n)
    assert d["acks"] and d["cwnd"] and d["srtt"]
    assert max(s + n for _, s, n in d["segments"]) >= BODY
    path = write_jsonl(tmp_path / "real.jsonl", server)
    png = tmp_path / "real.png"
    out = io.StringIO()
    assert tracetool.run(path, plot_out=str(png), out=out, err=io.StringIO()) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{len(rex)} retransmissions)" in out.getvalue()


def test_real_ladder_has_handshake_data_and_teardown(real_trace):
    server, client, _, _ = real_trace
    (c,) = [c for c in tracetool.connections(server) if not c.is_listener]
    text = tracetool.ladder(c)
    lines = text.splitlines()
    assert "(peer)" in lines[0] and lines[0].rstrip().endswith("(this stack)")
    assert "(SYN_SENT)" in lines[2] and "SYN seq=" in lines[2] and lines[2].endswith(
        "SYN_RECEIVED")
    assert "SYN,ACK" in lines[3]
    assert any("data segments" in ln and "retransmitted" in ln for ln in lines)
    assert lines[-1].split()[-1] == "CLOSED"
    (cc,) = tracetool.connections(client)
    first = tracetool.ladder(cc).splitlines()[2]
    assert first.split()[1] == "SYN_SENT" and first.endswith(">")
