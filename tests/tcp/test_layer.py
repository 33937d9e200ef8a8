"""The TCP layer: closed ports, listeners and backlogs, ports and ISNs,
ICMP errors, bad input and the timer heap."""

from __future__ import annotations

import errno
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack.tcp import TcpConfig, TcpLayer
from stack.trace import Trace
from stack.wire.tcp import ACK, SYN, build_tcp

from tests.helpers.tcp import IRS, PEER, PEER_PORT, US, US_PORT, Conversation, to_state

# ---- closed port (RFC 9293 3.10.7.1) ----------------------------------------------


def test_syn_to_closed_port_gets_rst_ack():
    c = Conversation()
    c.feed("S", 7000, mss=1460)
    c.expect("Flags [R.], seq 0, ack 7001, win 0, length 0")
    assert c.drops()["tcp.drop.no_conn"] == 1
    assert c.trace.counters["tcp.out_rsts"] == 1


def test_ack_to_closed_port_gets_rst_from_its_ack():
    c = Conversation()
    c.feed("P.", 7000, 123456, data=b"hello")
    c.expect("Flags [R], seq 123456, win 0, length 0")


def test_fin_and_data_without_ack_count_in_the_rst_ack():
    c = Conversation()
    c.feed("FP", 7000, data=b"abc")
    c.expect("Flags [R.], seq 0, ack 7004, win 0, length 0")


@pytest.mark.parametrize("flags", ["R", "R."])
def test_never_rst_a_rst(flags):
    c = Conversation()
    c.feed(flags, 7000, 1)
    c.expect_nothing()
    assert c.drops()["tcp.drop.rst_no_conn"] == 1


def test_two_layers_do_not_answer_each_others_rst():
    """Two stacks with no connections: a stray ACK yields one RST, then silence."""
    wire = []
    ta, tb = Trace(), Trace()
    a = TcpLayer(lambda s, d, p, b: wire.append(("b", s, d, b)), ta, rng=random.Random(1))
    b = TcpLayer(lambda s, d, p, b: wire.append(("a", s, d, b)), tb, rng=random.Random(2))
    a.receive(2, 1, build_tcp(2, 1, 10, 20, 5, 6, ACK, 100), 0.0)
    hops = 0
    while wire and hops < 10:
        to, s, d, data = wire.pop(0)
        (a if to == "a" else b).receive(s, d, data, 0.0)
        hops += 1
    assert hops == 1


def test_no_rst_to_broadcast_source():
    c = Conversation()
    c.feed_raw(build_tcp(0xFFFFFFFF, US, 1, US_PORT, 1, 0, SYN, 100), src=0xFFFFFFFF)
    c.expect_nothing()


# ---- listeners ------------------------------------------------------------------------


def test_listener_answers_ack_with_rst_and_ignores_rst():
    c = Conversation()
    c.layer.listen((0, US_PORT), 5, 0.0)
    c.feed(".", 7000, 999)
    c.expect("Flags [R], seq 999, win 0, length 0")
    c.feed("R", 7000)
    c.expect_nothing()
    c.feed("P", 7000, data=b"x")  # neither SYN, RST nor ACK
    c.expect_nothing()


def test_listener_on_one_address_only():
    c = Conversation()
    c.layer.listen((0xC6336409, US_PORT), 5, 0.0)
    c.feed("S", 7000)
    c.expect("Flags [R.], seq 0, ack 7001, win 0, length 0")


def test_full_accept_queue_drops_syns_counted():
    c = Conversation()
    lst = c.layer.listen((0, US_PORT), 1, 0.0)
    c.feed("S", IRS)
    c.feed(".", IRS + 1, 1001)
    c.sent()
    c.feed("S", 9000, src_port=6000)  # the queue holds one unaccepted connection
    c.expect_nothing()
    assert c.trace.counters["tcp.listen_drops"] == 1
    assert c.drops()["tcp.drop.backlog_full"] == 1
    assert lst.accept() is not None
    c.feed("S", 9000, src_port=6000)  # room again
    c.expect("Flags [S.], seq 1000, ack 9001, win 65535, options [mss 1460], length 0")


def test_half_open_limit_drops_syns():
    c = Conversation(TcpConfig(syn_backlog=2, syncookies=False))
    c.layer.listen((0, US_PORT), 128, 0.0)
    for port in (6001, 6002, 6003):
        c.feed("S", 9000, src_port=port)
    assert len(c.sent()) == 2
    assert c.trace.counters["tcp.listen_drops"] == 1


def test_handshake_ack_dropped_while_accept_queue_full():
    c = Conversation()
    lst = c.layer.listen((0, US_PORT), 1, 0.0)
    c.feed("S", IRS)
    c.feed("S", 9000, src_port=6000)  # both half-open: the queue is still empty
    c.feed(".", IRS + 1, 1001)
    c.feed(".", 9001, 1001, src_port=6000)  # queue full: this ACK is dropped
    c.sent()
    assert c.drops()["tcp.drop.accept_queue_full"] == 1
    first = lst.accept()
    assert first.remote[1] == PEER_PORT and lst.accept() is None
    c.feed(".", 9001, 1001, src_port=6000)  # its retransmitted ACK gets in
    assert lst.accept().remote[1] == 6000


def test_listener_on_change_and_close_resets_queued():
    c = Conversation()
    lst = c.layer.listen((0, US_PORT), 5, 0.0)
    calls = []
    lst.on_change = lambda: calls.append(1)
    c.feed("S", IRS)
    c.feed(".", IRS + 1, 1001)
    assert calls and lst.readable
    c.sent()
    lst.close(c.now)
    c.expect("Flags [R.], seq 1001, ack 5001, win 65535, length 0")
    c.feed("S", 9000, src_port=6000)
    c.expect("Flags [R.], seq 0, ack 9001, win 0, length 0")


def test_new_syn_takes_over_time_wait():
    c = Conversation()
    lst = c.layer.listen((0, US_PORT), 5, 0.0)
    c.feed("S", IRS)
    c.feed(".", IRS + 1, 1001)
    conn = lst.accept()
    c.feed("F.", IRS + 1, 1001)
    conn.close(c.now)
    c.feed(".", IRS + 2, 1002)
    assert conn.state == "CLOSED"  # passive close: LAST_ACK -> CLOSED
    c.sent()
    # Now the stack closes first, so it holds TIME_WAIT.
    c.feed("S", 20000, src_port=7000)
    c.feed(".", 20001, 1001, src_port=7000)
    conn = lst.accept()
    conn.close(c.now)
    c.feed("F.", 20001, 1002, src_port=7000)
    assert conn.state == "TIME_WAIT"
    c.sent()
    c.feed("S", 30000, src_port=7000)  # a newer incarnation
    c.expect("Flags [S.], seq 1000, ack 30001, win 65535, options [mss 1460], length 0")
    assert conn.state == "CLOSED"


def test_old_syn_in_time_wait_gets_ack():
    c = Conversation()
    c.open_active()
    c.conn.close(c.now)
    c.feed("F.", IRS + 1, 1002)
    c.sent()
    c.feed("S", IRS - 100)
    c.expect("Flags [.], seq 1002, ack 5002, win 65534, length 0")


# ---- ports -----------------------------------------------------------------------------


def test_ephemeral_ports_in_range_and_distinct():
    c = Conversation()
    ports = {c.layer.connect(US, (PEER, 80), 0.0).local[1] for _ in range(50)}
    assert len(ports) == 50
    assert all(32768 <= p <= 60999 for p in ports)


def test_ephemeral_port_exhaustion():
    c = Conversation(TcpConfig(ephemeral_low=40000, ephemeral_high=40002))
    for _ in range(3):
        c.layer.connect(US, (PEER, 80), 0.0)
    with pytest.raises(OSError) as e:
        c.layer.connect(US, (PEER, 80), 0.0)
    assert e.value.errno == errno.EADDRNOTAVAIL
    c.layer.connect(US, (PEER, 81), 0.0)  # another remote: the same ports are free


def test_explicit_port_tuple_in_use():
    c = Conversation()
    c.layer.connect(US, (PEER, 80), 0.0, local_port=1234)
    with pytest.raises(OSError) as e:
        c.layer.connect(US, (PEER, 80), 0.0, local_port=1234)
    assert e.value.errno == errno.EADDRINUSE


def test_connect_needs_addresses():
    c = Conversation()
    with pytest.raises(OSError) as e:
        c.layer.connect(0, (PEER, 80), 0.0)
    assert e.value.errno == errno.EADDRNOTAVAIL


def test_listen_conflicts():
    c = Conversation()
    c.layer.listen((0, 80), 5, 0.0)
    with pytest.raises(OSError) as e:
        c.layer.listen((US, 80), 5, 0.0)
    assert e.value.errno == errno.EADDRINUSE
    c.layer.listen((US, 81), 5, 0.0)


def test_bind_check_and_reuse():
    c = Conversation()
    c.open_active()  # uses local port 4000
    with pytest.raises(OSError):
        c.layer.bind_check(US, US_PORT)
    c.layer.bind_check(US, US_PORT, reuse=True)  # SO_REUSEADDR: connections don't block
    port = c.layer.bind(US, 0)
    assert 32768 <= port <= 60999
    with pytest.raises(OSError):
        c.layer.bind(US, port)
    c.layer.unbind(US, port)
    assert c.layer.bind(US, port) == port
    p2 = c.layer.connect(US, (PEER, 80), 0.0).local[1]
    assert p2 != port


def test_isn_keyed_hash_plus_4us_clock():
    layer = TcpLayer(lambda *a: None, Trace(), rng=random.Random(5))
    a = layer.isn(US, 1, PEER, 2, 0.0)
    assert layer.isn(US, 1, PEER, 2, 0.0) == a
    assert layer.isn(US, 1, PEER, 3, 0.0) != a
    assert layer.isn(US, 1, PEER, 2, 1.0) == (a + 250_000) % 2**32
    other = TcpLayer(lambda *a: None, Trace(), rng=random.Random(6))
    assert other.isn(US, 1, PEER, 2, 0.0) != a  # another secret


# ---- ICMP -------------------------------------------------------------------------------


def quote(src: int, dst: int, sport: int, dport: int, seq: int) -> bytes:
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst)
    return ip + struct.pack("!HHI", sport, dport, seq)


def test_port_unreachable_refuses_connection_attempt():
    c = Conversation()
    conn = c.syn_sent()
    c.layer.icmp_error("port_unreachable", PEER, US, quote(US, PEER, US_PORT, PEER_PORT, 1000),
                       0.1)
    assert conn.state == "CLOSED" and conn.error == errno.ECONNREFUSED


def test_icmp_with_wrong_sequence_ignored():
    c = Conversation()
    conn = c.syn_sent()
    c.layer.icmp_error("port_unreachable", PEER, US, quote(US, PEER, US_PORT, PEER_PORT, 77),
                       0.1)
    assert conn.state == "SYN_SENT"


def test_host_unreachable_is_soft_when_established():
    c = Conversation(TcpConfig(max_retries=2))
    conn = c.open_active()
    conn.send(b"x", c.now)
    c.layer.icmp_error("host_unreachable", PEER, US, quote(US, PEER, US_PORT, PEER_PORT, 1001),
                       c.now)
    assert conn.state == "ESTABLISHED" and conn.error is None
    c.run_until(100.0)
    assert conn.state == "CLOSED" and conn.error == errno.EHOSTUNREACH


def test_frag_needed_shrinks_segments():
    c = Conversation()
    conn = c.open_active()
    conn.send(b"x" * 1460, c.now)
    c.sent()
    c.layer.icmp_error("frag_needed", PEER, US, quote(US, PEER, US_PORT, PEER_PORT, 1001),
                       c.now, mtu=1000)
    c.expect("Flags [.], seq 1001:1961, ack 5001, win 65535, length 960",
             "Flags [P.], seq 1961:2461, ack 5001, win 65535, length 500")
    assert conn.status()["mss"] == 960


def test_short_icmp_quote_dropped():
    c = Conversation()
    c.layer.icmp_error("port_unreachable", PEER, US, b"\x45\x00", 0.0)
    assert c.drops()["icmp.drop.tcp_quote_short"] == 1


# ---- bad input ---------------------------------------------------------------------------


def test_bad_checksum_dropped_and_counted():
    c = Conversation()
    c.open_active()
    raw = bytearray(build_tcp(PEER, US, PEER_PORT, US_PORT, IRS + 1, 1001, ACK, 100, b"abc"))
    raw[-1] ^= 0x40
    c.feed_raw(bytes(raw))
    c.expect_nothing()
    assert c.drops()["tcp.drop.bad_checksum"] == 1
    assert c.conn.recv(10) is None


def test_syn_fin_and_port_zero_dropped():
    c = Conversation()
    c.layer.listen((0, US_PORT), 5, 0.0)
    c.feed("SF", 1)
    c.feed("S", 1, src_port=0)
    c.expect_nothing()
    assert c.drops()["tcp.drop.bad_flags"] == 1 and c.drops()["tcp.drop.port_zero"] == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=80), fix_checksum=st.booleans())
def test_garbage_never_raises(data, fix_checksum):
    c = Conversation()
    c.open_active()
    c.layer.listen((0, 80), 5, 0.0)
    raw = bytearray(data)
    if fix_checksum and len(raw) >= 20:
        raw[2:4] = US_PORT.to_bytes(2, "big") if data[0] & 1 else (80).to_bytes(2, "big")
        raw[0:2] = PEER_PORT.to_bytes(2, "big")
        raw[16:18] = b"\0\0"
        from stack.wire.tcp import pseudo_sum
        from stack.native import checksum
        raw[16:18] = checksum(bytes(raw), pseudo_sum(PEER, US, len(raw))).to_bytes(2, "big")
    c.feed_raw(bytes(raw))
    c.advance(1.0)


# ---- timers and resources ------------------------------------------------------------------


def test_closed_connections_release_timers_and_table():
    c = Conversation(TcpConfig(msl=1.0))
    lst = c.layer.listen((0, US_PORT), 1000, 0.0)
    for i in range(200):
        port = 10000 + i
        c.feed("S", 100, src_port=port)
        c.feed(".", 101, 1001, src_port=port)
        conn = lst.accept()
        conn.send(b"hi", c.now)
        c.feed(".", 101, 1003, src_port=port)
        conn.close(c.now)
        c.feed("F.", 101, 1004, src_port=port)
    assert len(c.layer.connections()) == 200  # all in TIME_WAIT
    c.run_until(10.0)
    assert c.layer.connections() == []
    assert c.layer.next_deadline() is None
    assert c.layer.status()["timers"] == 0


def test_timer_heap_does_not_grow_with_acks():
    c = Conversation()
    conn = c.open_active()
    for i in range(1000):
        conn.send(b"x", c.now)
        c.feed(".", IRS + 1, 1002 + i)
        c.advance(0.001)
    assert c.layer.status()["timers"] <= 3


def test_state_trace_event_shape():
    c = Conversation()
    c.open_active()
    ev = [e for e in c.events if e["event"] == "state"][-1]
    assert ev == {"t": 0.0, "layer": "tcp", "event": "state", "conn": "198.51.100.1:4000-198.51.100.2:5555",
                  "from": "SYN_SENT", "to": "ESTABLISHED",
                  "cause": "rcv SYN,ACK seq=5000 ack=1001"}
    segs = [e for e in c.events if e["event"] == "seg"]
    assert segs[0]["dir"] == "out" and segs[0]["flags"] == "S"
    assert segs[0]["options"] == ["mss 1460", "sackOK", "TS val 0 ecr 0", "wscale 7"]
    assert segs[1]["dir"] == "in" and segs[1]["flags"] == "S."


def test_on_change_called_for_data_and_state():
    c = Conversation()
    conn = c.open_active()
    calls = []
    conn.on_change = lambda: calls.append(conn.state)
    c.feed("P.", IRS + 1, 1001, data=b"x")
    assert calls == ["ESTABLISHED"] and conn.readable
    c.feed("F.", IRS + 2, 1001)
    assert calls[-1] == "CLOSE_WAIT"


# ---- random conversations: nothing raises, invariants hold ----------------------------

STATES = ["SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
          "CLOSING", "LAST_ACK", "TIME_WAIT"]

segment = st.tuples(
    st.sampled_from(["S", "S.", ".", "P.", "F.", "FP.", "R", "R.", ""]),
    st.integers(-70000, 70000),          # seq offset from rcv_nxt
    st.integers(-3000, 3000),            # ack offset from snd_una
    st.sampled_from([0, 1, 100, 1460, 65535]),
    st.integers(0, 3000),                # payload length
)
action = st.one_of(
    st.tuples(st.just("seg"), segment),
    st.tuples(st.just("time"), st.floats(0.0, 5.0)),
    st.tuples(st.just("send"), st.integers(0, 5000)),
    st.tuples(st.just("recv"), st.integers(1, 5000)),
    st.tuples(st.just("close"), st.none()),
    st.tuples(st.just("shutdown"), st.none()),
)


@settings(max_examples=int(__import__("os").environ.get("TCP_FUZZ_EXAMPLES", "300")),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.sampled_from(STATES), actions=st.lists(action, max_size=25))
def test_random_conversations_keep_invariants(start, actions):
    from stack.tcp.seq import seq_add, seq_le

    c = to_state(start)
    conn = c.conn
    for kind, arg in actions:
        if kind == "seg":
            flags, dseq, dack, win, n = arg
            seq = seq_add(conn.status()["rcv_nxt"] if conn.status()["rcv_nxt"] else IRS, dseq)
            c.feed(flags, seq, seq_add(conn.status()["snd_una"], dack), win=win, data=b"z" * n)
        elif kind == "time":
            c.advance(arg)
        elif conn.state != "CLOSED":
            try:
                if kind == "send":
                    conn.send(b"y" * arg, c.now)
                elif kind == "recv":
                    conn.recv(arg)
                elif kind == "close":
                    conn.close(c.now)
                else:
                    conn.shutdown_write(c.now)
            except OSError:
                pass
        assert seq_le(conn.status()["snd_una"], conn.status()["snd_nxt"]) and seq_le(conn.status()["snd_nxt"], conn.status()["snd_max"])
        assert conn.status()["recv_buffered"] <= conn.rcvbuf_size
        assert conn.status()["send_buffered"] <= conn.sndbuf_size
        if conn.state == "CLOSED":
            assert conn not in c.layer.connections()
        else:
            assert conn.deadline() is None or c.layer.next_deadline() is not None
    c.run_until(c.now + 10000.0)
    assert c.layer.connections() == [] or all(
        x.state in ("ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_2") for x in c.layer.connections())


def test_close_all_resets_connections_and_listeners():
    c = Conversation()
    c.open_active()
    c.layer.listen((0, 80), 5, 0.0)
    c.layer.close_all(c.now)
    c.expect("Flags [R.], seq 1001, ack 5001, win 65535, length 0")
    assert c.layer.connections() == [] and c.layer.next_deadline() is None
    c.feed("S", 1, dst_port=80)
    c.expect("Flags [R.], seq 0, ack 2, win 0, length 0")


def test_seg_event_fields_are_not_built_when_the_trace_level_drops_them(monkeypatch):
    """At trace level "state" the ``seg`` events are filtered out, so their
    fields (flags text, option lists) must not be built either: the guard
    is ``trace.wants("tcp", "seg")``, not ``trace.on``."""
    import stack.tcp.emit
    import stack.tcp.layer
    from stack.wire.tcp import TcpSegment
    c = Conversation(TcpConfig(syn_backlog=1), trace_level="state")
    built = []
    for mod in (stack.tcp.emit, stack.tcp.layer):
        monkeypatch.setattr(mod, "flags_str", lambda flags: built.append(flags) or "?")
    options_list = TcpSegment.options_list
    c.open_passive()
    monkeypatch.setattr(TcpSegment, "options_list",
                        lambda seg: built.append("options") or options_list(seg))
    c.feed("S", IRS + 7, src_port=6000)              # half-open: the queue is full
    c.feed("S", IRS + 9, src_port=6002)              # so a cookie
    c.feed("S", IRS, src_port=6001, dst_port=99)     # RST from a closed port
    c.conn.send(b"x" * 10, c.now)
    monkeypatch.undo()
    c.sent()
    assert built == []
    assert "seg" not in {e["event"] for e in c.events}
    assert c.trace.counters["tcp.syncookies_sent"] == 1 and c.trace.counters["tcp.out_rsts"] == 1
