"""TCP extensions in conversations on a manual clock: window scaling and
timestamps (RFC 7323: negotiation, scaled windows, RTT measurement, PAWS)
and SACK (RFC 2018: negotiation, the blocks we send).

The stack is 198.51.100.1:4000 with ISS 1000 and a timestamp clock that reads
``int(now * 1000)`` (the harness pins its random offset to 0); the test is
the peer 198.51.100.2:5555 with ISS 5000. Recovery and congestion control are in
``test_tcp_ext_recovery.py``.
"""

from __future__ import annotations

import errno

import pytest

from stack.tcp import TcpConfig

from tests.helpers.tcp import IRS, PEER, PEER_PORT, US, US_PORT, Conversation, syn_options

ALL = dict(wscale=7, sack_perm=True, timestamps=(777, 0))
WIN_4MB = 4 * 1024 * 1024 >> 7     # our window field once scaled by 7: 32768


def established(cfg: TcpConfig | None = None, peer_win: int = 65535, peer_mss: int = 1460,
                **peer_opts) -> Conversation:
    """Active open; the peer's SYN,ACK carries ``peer_opts`` (wscale,
    sack_perm, timestamps). The handshake's own segments are checked."""
    c = Conversation(cfg)
    c.conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.expect(f"Flags [S], seq 1000, win 65535, options [{syn_options(cfg)}], length 0")
    c.feed("S.", IRS, 1001, win=peer_win, mss=peer_mss, **peer_opts)
    assert c.conn.state == "ESTABLISHED"
    return c


# ---- negotiation ------------------------------------------------------------------


def test_active_open_uses_all_three_when_the_peer_offers_them():
    c = established(**ALL)
    # Our window is scaled from the first ACK on; TSecr echoes the peer's TSval.
    c.expect(f"Flags [.], seq 1001, ack 5001, win {WIN_4MB}, options [TS val 0 ecr 777], "
             "length 0")
    st = c.conn.status()
    assert (st["snd_wscale"], st["rcv_wscale"], st["timestamps"], st["sack"]) == (7, 7, True, True)
    assert c.conn.status()["mss"] == 1448  # 1460 less the 12 bytes of timestamps on every segment
    assert st["rcv_wnd"] == 4 * 1024 * 1024


@pytest.mark.parametrize("offer", [
    {}, {"wscale": 2}, {"sack_perm": True}, {"timestamps": (9, 0)},
    {"wscale": 14, "sack_perm": True, "timestamps": (9, 0)}])
def test_passive_open_answers_only_what_the_syn_offered(offer):
    c = Conversation()
    lst = c.layer.listen((0, US_PORT), 5, 0.0)
    c.feed("S", IRS, mss=1460, **offer)
    opts = ["mss 1460"]
    if offer.get("sack_perm"):
        opts.append("sackOK")
    if "timestamps" in offer:
        opts.append("TS val 0 ecr 9")
    if "wscale" in offer:
        opts.append("wscale 7")
    # The window of a SYN,ACK is never scaled.
    c.expect(f"Flags [S.], seq 1000, ack 5001, win 65535, options [{','.join(opts)}], length 0")
    ack_opts = {"timestamps": (10, 0)} if "timestamps" in offer else {}
    c.feed(".", IRS + 1, 1001, win=100, **ack_opts)
    conn = lst.accept()
    st = conn.status()
    assert st["timestamps"] == ("timestamps" in offer)
    assert st["sack"] == bool(offer.get("sack_perm"))
    assert st["snd_wscale"] == offer.get("wscale")
    # The ACK's window is scaled by the peer's shift.
    assert conn.status()["snd_wnd"] == 100 << offer.get("wscale", 0)


def test_config_can_refuse_everything():
    cfg = TcpConfig(window_scaling=False, timestamps=False, sack=False)
    c = Conversation(cfg)
    c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.expect("Flags [S], seq 1000, win 65535, options [mss 1460], length 0")
    c.feed("S.", IRS, 1001, mss=1460, **ALL)
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, length 0")
    lst = c.layer.listen((0, 80), 5, 0.0)
    c.feed("S", 9000, dst_port=80, mss=1460, **ALL)
    c.expect("Flags [S.], seq 1000, ack 9001, win 65535, options [mss 1460], length 0")
    assert lst is not None


def test_peer_without_window_scaling_gets_unscaled_windows():
    c = established(peer_win=3000, sack_perm=True, timestamps=(777, 0))
    # Without the peer's wscale neither side scales: our 4 MB buffer shows as 65535.
    c.expect("Flags [.], seq 1001, ack 5001, win 65535, options [TS val 0 ecr 777], length 0")
    assert c.conn.status()["rcv_wscale"] is None
    c.conn.set_nodelay(True)
    c.conn.send(b"x" * 5000, c.now)
    # The peer's 3000 is taken as it is, not shifted.
    c.expect("Flags [.], seq 1001:2449, ack 5001, win 65535, options [TS val 0 ecr 777], "
             "length 1448",
             "Flags [.], seq 2449:3897, ack 5001, win 65535, options [TS val 0 ecr 777], "
             "length 1448")
    c.feed(".", IRS + 1, 2449, win=600, timestamps=(778, 0))
    assert c.conn.status()["snd_wnd"] == 600
    assert c.conn.status()["rcv_wnd"] == 65535


def test_peer_without_timestamps_gets_none():
    c = established(wscale=7, sack_perm=True)
    c.expect(f"Flags [.], seq 1001, ack 5001, win {WIN_4MB}, length 0")
    assert c.conn.status()["mss"] == 1460
    c.conn.send(b"hello", c.now)
    c.expect(f"Flags [P.], seq 1001:1006, ack 5001, win {WIN_4MB}, length 5")
    c.now = 0.25
    c.feed(".", IRS + 1, 1006, win=1000)
    # Timed the classic way (one segment per RTT): the handshake's 0, then 0.25.
    assert c.conn.status()["srtt"] == pytest.approx(0.125 * 0.25)
    # Segments without timestamps are fine on such a connection.
    c.feed("P.", IRS + 1, 1006, data=b"abc", win=1000)
    assert c.conn.recv(10) == b"abc"


def test_peer_without_sack_permitted_gets_no_sack_blocks():
    c = established(wscale=7, timestamps=(777, 0))
    c.sent()
    c.feed(".", IRS + 1 + 1000, 1001, data=b"x" * 100, timestamps=(778, 0))
    c.expect(f"Flags [.], seq 1001, ack 5001, win {WIN_4MB}, options [TS val 0 ecr 777], "
             "length 0")


def test_peer_wscale_above_14_is_taken_as_14():
    c = established(wscale=15)
    assert c.conn.status()["snd_wscale"] == 14


def test_mss_leaves_room_for_timestamps_in_every_segment():
    c = established(**ALL)
    c.sent()
    c.conn.send(b"z" * 3000, c.now)
    segs = c.sent_segments()
    assert [len(s.payload) for s in segs] == [1448, 1448, 104]
    # 20 bytes of header, 12 of options, 1448 of data: 1480, as the MTU allows.
    assert all(s.timestamps == (0, 777) for s in segs)


# ---- scaled windows beyond 64 KB ------------------------------------------------------


def test_receives_more_than_64k_in_flight():
    c = established(TcpConfig(max_quickacks=0), **ALL)
    c.sent()
    data = bytes(range(256)) * 800  # 204800 bytes, far past 65535
    seq = IRS + 1
    for i in range(0, len(data), 1448):
        c.feed(".", seq + i, 1001, data=data[i:i + 1448], timestamps=(800, 0))
    c.run_until(0.04)  # the delayed ACK for the last, odd segment
    acks = c.sent_segments()
    assert acks[-1].ack == IRS + 1 + len(data)
    # The right edge was never passed: every byte was in the window, none dropped.
    assert "tcp.drop.out_of_window" not in c.drops()
    # Every window offered was far above 64 KB; at the end the buffer holds
    # the 204800 bytes and still offers the rest of its 4 MB.
    assert min(a.window for a in acks) << 7 >= 4 * 1024 * 1024 - len(data)
    assert len(acks) == len(data) // 1448 // 2 + 1  # every second segment, then the timer
    assert c.conn.recv(1 << 20) == data


def test_sends_up_to_a_scaled_peer_window_beyond_64k():
    cfg = TcpConfig(initial_cwnd=200)
    c = established(cfg, peer_win=1000, **ALL)  # the SYN,ACK's 1000 is not scaled
    c.sent()
    c.feed(".", IRS + 1, 1001, win=1000, timestamps=(778, 0))  # 1000 << 7 = 128000
    assert c.conn.status()["snd_wnd"] == 128000
    c.conn.send(b"y" * 300000, c.now)
    segs = c.sent_segments()
    assert sum(len(s.payload) for s in segs) == 128000 - 128000 % 1448
    c.feed(".", IRS + 1, 1001 + 20 * 1448, win=1000, timestamps=(779, 0))
    more = c.sent_segments()
    assert sum(len(s.payload) for s in more) == 20 * 1448


# ---- timestamps: RTT and TS.Recent --------------------------------------------------


def test_rtt_timed_on_the_real_clock_once_per_round_trip():
    """One segment at a time is timed, with the ``now`` of its send and of
    the ACK that covers it, timestamps or not (RFC 6298 section 3)."""
    c = established(**ALL)
    c.sent()
    c.conn.set_nodelay(True)
    c.now = 0.1
    c.conn.send(b"a" * 100, c.now)          # timed
    c.now = 0.2
    c.conn.send(b"b" * 100, c.now)          # in flight with the timed one: not timed
    c.sent()
    c.now = 0.35
    c.feed(".", IRS + 1, 1101, win=1000, timestamps=(800, 100))   # 250 ms
    c.now = 0.4
    c.feed(".", IRS + 1, 1201, win=1000, timestamps=(802, 200))   # no segment timed
    c.conn.send(b"c" * 100, c.now)          # timed
    c.now = 0.52
    c.feed(".", IRS + 1, 1301, win=1000, timestamps=(803, 400))   # 120 ms
    rtt = [e for e in c.events if e["event"] == "rtt"]
    # The handshake's sample (the SYN,ACK came at once) then one per timed segment.
    assert [e["sample"] for e in rtt] == [0.0, 0.25, 0.12]
    assert rtt[-1]["srtt"] == pytest.approx(c.conn.status()["srtt"], abs=1e-6)
    assert c.conn.status()["rto"] == pytest.approx(c.conn.status()["srtt"] + 4 * c.conn.status()["rttvar"])


def test_sub_millisecond_rtt_is_measured_with_timestamps_on():
    """Timestamps tick in ms, so a LAN's 300 us measured 0.0; the real
    clock gives 0.0003."""
    c = established(**ALL)
    c.sent()
    c.now = 1.0
    c.conn.send(b"a" * 100, c.now)
    c.sent()
    c.now = 1.0003
    c.feed(".", IRS + 1, 1101, win=1000, timestamps=(800, 1000))
    rtt = [e["sample"] for e in c.events if e["event"] == "rtt"]
    assert rtt[-1] == pytest.approx(0.0003)
    assert c.conn.status()["srtt"] > 0


def test_after_a_retransmission_the_sample_comes_from_timestamps():
    """Karn's rule: an ACK after a retransmission is ambiguous on the clock,
    but TSecr names the copy it acknowledges (RFC 7323 4.1)."""
    c = established(**ALL)
    c.sent()
    c.now = 0.1
    c.conn.send(b"a" * 100, c.now)          # TS val 100
    c.run_until(0.31)                        # RTO (0.2 after the handshake's 0 s sample)
    assert c.sent() == [f"Flags [P.], seq 1001:1101, ack 5001, win {WIN_4MB}, "
                        "options [TS val 100 ecr 777], length 100",
                        f"Flags [P.], seq 1001:1101, ack 5001, win {WIN_4MB}, "
                        "options [TS val 300 ecr 777], length 100"]
    c.now = 0.35
    c.feed(".", IRS + 1, 1101, win=1000, timestamps=(800, 300))   # acknowledges the copy
    assert [e["sample"] for e in c.events if e["event"] == "rtt"] == [0.0, 0.05]


def test_after_a_retransmission_an_ack_echoing_no_timestamp_gives_no_sample():
    c = established(**ALL)
    c.sent()
    c.now = 0.1
    c.conn.send(b"a" * 100, c.now)
    c.run_until(0.31)                        # RTO
    c.now = 0.5
    c.feed(".", IRS + 1, 1101, win=1000, timestamps=(800, 0))  # TSecr 0: nothing echoed
    assert c.conn.status()["snd_una"] == 1101
    assert [e["sample"] for e in c.events if e["event"] == "rtt"] == [0.0]  # the handshake's


def test_ts_recent_echo_follows_rfc7323_rules():
    c = established(TcpConfig(max_quickacks=0), **ALL)
    c.sent()
    # Two in-order segments under one delayed ACK: the ACK echoes the
    # earlier one's TSval (RFC 7323 4.3 case A).
    c.feed(".", IRS + 1, 1001, data=b"a" * 10, timestamps=(900, 0))
    c.feed(".", IRS + 11, 1001, data=b"b" * 10, timestamps=(901, 0))
    c.run_until(0.04)
    ack = c.sent_segments()[-1]
    assert ack.ack == IRS + 21 and ack.timestamps == (40, 900)
    # A segment past a hole does not move TS.Recent (case C)...
    c.feed(".", IRS + 31, 1001, data=b"d" * 10, timestamps=(905, 0))
    assert c.sent_segments()[-1].timestamps == (40, 900)
    # ...the one that fills the hole does.
    c.feed(".", IRS + 21, 1001, data=b"c" * 10, timestamps=(903, 0))
    assert c.sent_segments()[-1].timestamps == (40, 903)


# ---- PAWS ---------------------------------------------------------------------------


def paws_established() -> Conversation:
    c = established(**ALL)
    c.sent()
    c.feed(".", IRS + 1, 1001, data=b"new", timestamps=(1000, 0))
    c.run_until(0.04)
    c.sent()
    assert c.conn.recv(100) == b"new"
    return c


def test_paws_rejects_an_old_duplicate_and_acks_it():
    c = paws_established()
    # In the window, but its TSval is older than TS.Recent: an old duplicate
    # from an earlier wrap of the sequence space.
    c.feed(".", IRS + 4, 1001, data=b"old", timestamps=(999, 0))
    c.expect(f"Flags [.], seq 1001, ack 5004, win {WIN_4MB}, "
             "options [TS val 40 ecr 1000], length 0")
    assert c.drops()["tcp.drop.paws"] == 1
    # The same bytes with a current TSval are taken.
    c.feed(".", IRS + 4, 1001, data=b"now", timestamps=(1001, 0))
    assert c.conn.recv(100) == b"now"


def test_paws_tsval_compared_modulo_2_32():
    c = established(wscale=7, sack_perm=True, timestamps=(2**32 - 5, 0))
    c.sent()
    c.feed(".", IRS + 1, 1001, data=b"wrapped", timestamps=(3, 0))  # newer, across the wrap
    assert c.conn.recv(100) == b"wrapped"
    c.feed(".", IRS + 8, 1001, data=b"stale", timestamps=(2**32 - 2, 0))  # older
    assert c.conn.recv(100) is None and c.drops()["tcp.drop.paws"] == 1


def test_paws_does_not_apply_to_rst():
    c = paws_established()
    c.feed("R", IRS + 4, timestamps=(5, 0))
    assert c.conn.state == "CLOSED" and c.conn.error == errno.ECONNRESET


def test_paws_ignores_ts_recent_idle_for_24_days():
    c = paws_established()
    c.run_until(24 * 86400 + 1.0)
    c.sent()
    # The peer's clock may have wrapped its sign bit meanwhile: accepted.
    c.feed(".", IRS + 4, 1001, data=b"back", timestamps=(500, 0))
    assert c.conn.recv(100) == b"back"
    assert "tcp.drop.paws" not in c.drops()
    # And TS.Recent took the new value: older ones are rejected again.
    c.feed(".", IRS + 8, 1001, data=b"x", timestamps=(499, 0))
    assert c.drops()["tcp.drop.paws"] == 1


def test_segment_without_timestamps_taken_and_counted_once_negotiated():
    # RFC 7323 3.2 says SHOULD drop; Linux and FreeBSD accept it, as we do.
    c = paws_established()
    c.feed(".", IRS + 4, 1001, data=b"bare")
    assert c.conn.recv(100) == b"bare"
    assert c.trace.counters["tcp.no_timestamp"] == 1 and "tcp.drop.no_timestamp" not in c.drops()
    c.feed("R", IRS + 8)  # and a RST without them too
    assert c.conn.state == "CLOSED"


# ---- SACK blocks we send ----------------------------------------------------------------


def sack_established(**opts) -> Conversation:
    c = established(**(opts or ALL))
    c.sent()
    return c


def acks(c: Conversation) -> list[tuple[int, tuple]]:
    """(ack, SACK blocks) of each segment sent since the last check; all are pure ACKs."""
    segs = c.sent_segments()
    assert all(not s.payload and s.flags == 0x10 for s in segs)
    return [(s.ack, s.sack) for s in segs]


def test_sack_blocks_describe_the_holes_most_recent_first():
    c = sack_established()
    base = IRS + 1                     # 5001
    seg = lambda i: base + 100 * i     # noqa: E731  the i-th 100-byte segment
    blk = lambda i, j=None: (seg(i), seg((j or i) + 1))  # noqa: E731  segments i..j

    def feed(i):
        c.feed(".", seg(i), 1001, data=str(i).encode() * 100, timestamps=(777, 0))

    feed(1)
    c.expect(f"Flags [.], seq 1001, ack 5001, win {WIN_4MB}, "
             "options [TS val 0 ecr 777,sack 5101:5201], length 0")
    feed(3)
    assert acks(c) == [(base, (blk(3), blk(1)))]
    feed(5)
    assert acks(c) == [(base, (blk(5), blk(3), blk(1)))]
    # A fourth block: with timestamps only three fit; the oldest report drops out.
    feed(7)
    assert acks(c) == [(base, (blk(7), blk(5), blk(3)))]
    # Filling 2 joins blocks 1 and 3: the joined block is the most recent.
    feed(2)
    assert acks(c) == [(base, (blk(1, 3), blk(7), blk(5)))]
    # Filling 0 moves the cumulative ACK past the joined block.
    feed(0)
    assert acks(c) == [(seg(4), (blk(7), blk(5)))]
    feed(4)
    feed(6)
    assert acks(c) == [(seg(6), (blk(7),)), (seg(8), ())]
    assert c.conn.recv(1000) == b"".join(str(i).encode() * 100 for i in range(8))


def test_four_sack_blocks_without_timestamps():
    c = sack_established(wscale=7, sack_perm=True)
    base = IRS + 1
    for i in (1, 3, 5, 7, 9):
        c.feed(".", base + 100 * i, 1001, data=b"x" * 100)
    last = c.sent_segments()[-1]
    assert last.timestamps is None
    assert last.sack == tuple((base + 100 * i, base + 100 * i + 100) for i in (9, 7, 5, 3))


def test_sack_blocks_in_the_trace():
    c = sack_established()
    c.feed(".", IRS + 101, 1001, data=b"x" * 100, timestamps=(777, 0))
    segs = [e for e in c.events if e["event"] == "seg"]
    assert segs[-1]["dir"] == "out"
    assert segs[-1]["options"] == ["TS val 0 ecr 777", f"sack {IRS + 101}:{IRS + 201}"]
    c.feed(".", IRS + 1, 1001, sack=((1001, 1001 + 100),), timestamps=(777, 0))
    segs = [e for e in c.events if e["event"] == "seg" and e["dir"] == "in"]
    assert segs[-1]["options"] == ["TS val 777 ecr 0", "sack 1001:1101"]


# ---- the buffer picks the window scale ---------------------------------------------------


@pytest.mark.parametrize("rcvbuf,shift", [(4096, 0), (65535, 0), (65536, 1), (1 << 20, 5),
                                          (4 << 20, 7), (1 << 30, 14)])
def test_rcvbuf_given_at_connect_sizes_the_syn_window_and_scale(rcvbuf, shift):
    c = Conversation()
    c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT, rcvbuf=rcvbuf)
    c.expect(f"Flags [S], seq 1000, win {min(rcvbuf, 65535)}, "
             f"options [mss 1460,sackOK,TS val 0 ecr 0,wscale {shift}], length 0")
    c.feed("S.", IRS, 1001, mss=1460, **ALL)
    ack = c.sent_segments()[0]
    # All of the buffer, never more, whatever the shift.
    assert rcvbuf - (1 << shift) <= ack.window << shift <= rcvbuf


def test_listener_rcvbuf_sizes_the_syn_ack():
    c = Conversation()
    lst = c.layer.listen((0, US_PORT), 5, 0.0)
    lst.rcvbuf = 3000
    c.feed("S", IRS, mss=1460, **ALL)
    c.expect("Flags [S.], seq 1000, ack 5001, win 3000, "
             "options [mss 1460,sackOK,TS val 0 ecr 777,wscale 0], length 0")
    c.feed(".", IRS + 1, 1001, timestamps=(778, 0))
    conn = lst.accept()
    conn.send(b"x", c.now)
    assert c.sent_segments()[0].window == 3000


# ---- TSO: segments the link cuts ---------------------------------------------------------


def test_with_tso_the_sender_hands_over_whole_mss_multiples():
    c = established(TcpConfig(initial_cwnd=10), peer_win=65535, **ALL)
    c.feed(".", IRS + 1, 1001, win=4000, timestamps=(778, 0))  # 512000 bytes
    c.sent()
    c.layer.set_segmentation(65535 - 20, 1460)  # IP packets up to 64 KB, cut at MTU 1500
    before = c.trace.counters["tcp.out_segs"]
    c.conn.send(b"t" * 400_000, c.now)
    # cwnd (10 MSS) in one segment the link cuts into ten, counted as ten.
    assert [len(s.payload) for s in c.sent_segments()] == [10 * 1448]
    assert c.trace.counters["tcp.out_segs"] - before == 10
    c.feed(".", IRS + 1, 1001 + 10 * 1448, win=4000, timestamps=(779, 0))
    assert [len(s.payload) for s in c.sent_segments()] == [12 * 1448]  # + 2 MSS (ABC)
    c.conn.recovery.cc.cwnd = 100 * 1448 + 700
    c.feed(".", IRS + 1, 1001 + 22 * 1448, win=4000, timestamps=(780, 0))
    # At most 45 MSS (65160 bytes of data, 65212 with the headers) per segment;
    # the window's odd 700 bytes are not cut off as a short segment.
    assert [len(s.payload) for s in c.sent_segments()] == [45 * 1448, 45 * 1448, 10 * 1448]


def test_a_gro_merged_segment_with_timestamps_is_acked_at_once_and_teaches_no_larger_mss():
    """With timestamps a full segment carries 1448 bytes: a merged pair of
    them (what GRO hands TCP) is two full segments and is acked at once, and
    after it two single full segments still are (the estimate of the peer's
    full segment stays 1448, not our MSS option's 1460)."""
    c = established(TcpConfig(max_quickacks=0), **ALL)
    c.sent()
    c.feed(".", IRS + 1, 1001, data=b"a" * 2 * 1448, timestamps=(778, 0))
    assert [s.ack for s in c.sent_segments()] == [IRS + 1 + 2 * 1448]
    c.feed(".", IRS + 1 + 2 * 1448, 1001, data=b"b" * 1448, timestamps=(779, 0))
    assert c.sent_segments() == []
    c.feed(".", IRS + 1 + 3 * 1448, 1001, data=b"c" * 1448, timestamps=(779, 0))
    assert [s.ack for s in c.sent_segments()] == [IRS + 1 + 4 * 1448]


@pytest.mark.parametrize("peer_mss", [1000, 1459])
def test_with_tso_a_connection_whose_mss_the_link_does_not_cut_at_sends_one_mss(peer_mss):
    """The link cuts super-segments at its own MSS (MTU less 40): a peer (or
    a path) with a smaller one gets one MSS per segment, never more."""
    c = established(TcpConfig(initial_cwnd=10), peer_mss=peer_mss, **ALL)
    c.feed(".", IRS + 1, 1001, win=4000, timestamps=(778, 0))
    c.sent()
    c.layer.set_segmentation(65535 - 20, 1460)
    before = c.trace.counters["tcp.out_segs"]
    c.conn.send(b"t" * 400_000, c.now)
    assert [len(s.payload) for s in c.sent_segments()] == [peer_mss - 12] * 10
    assert c.trace.counters["tcp.out_segs"] - before == 10   # one each
