"""What a segment that fails PAWS earns, as Linux 6.14+ answers it
(``tcp_validate_incoming``): data or a FIN a duplicate ACK every time; a
pure ACK at RCV.NXT at most one per 500 ms, shared with the challenge ACKs
(``TCPACKSkippedPAWS`` counts the rest); an old pure ACK nothing
(``PAWSOldAck``); a SYN a challenge ACK; a duplicate ACK reordered within
the replay window is taken.

Manual clock, hand-built segments. The stack is 198.51.100.1:4000 (ISS
1000, TSval ``int(now * 1000)``), the test the peer (ISS 5000).
"""

from __future__ import annotations

from stack.tcp import TcpConfig

from tests.helpers.tcp import IRS, PEER, PEER_PORT, US, US_PORT, Conversation

ALL = dict(wscale=7, sack_perm=True, timestamps=(777, 0))
NXT = IRS + 4          # RCV.NXT once the peer's 3 bytes are in
UNA = 1101             # SND.UNA once the peer ACKed our 100 bytes
T = 100_000            # the peer's TSval on its first data


def paws_ready(cfg: TcpConfig | None = None) -> Conversation:
    """ESTABLISHED; the peer sent 3 bytes (TSval T) and ACKed our 100
    (TSval T + 10): TS.Recent is T + 10, nothing is in flight either way."""
    c = Conversation(cfg)
    c.conn = c.layer.connect(US, (PEER, PEER_PORT), 0.0, local_port=US_PORT)
    c.feed("S.", IRS, 1001, **ALL)
    assert c.conn.state == "ESTABLISHED"
    c.feed(".", IRS + 1, 1001, data=b"new", timestamps=(T, 0))
    c.run_until(0.04)
    assert c.conn.recv(100) == b"new"
    c.conn.send(b"a" * 100, c.now)
    c.run_until(0.05)
    c.feed(".", NXT, UNA, timestamps=(T + 10, 50))
    c.run_until(0.06)
    c.sent()
    return c


def acks_sent(c: Conversation) -> list[int]:
    """The ACK numbers of the segments sent since the last check, all of them
    pure ACKs."""
    segs = c.sent_segments()
    assert all(not s.payload and s.flags == 0x10 for s in segs), [str(s) for s in segs]
    return [s.ack for s in segs]


def counter(c: Conversation, name: str) -> int:
    return c.trace.counters.get(name, 0)


def test_pure_acks_failing_paws_earn_one_dupack_per_500_ms():
    c = paws_ready()
    # A reordered ACK from before the last: its TSval is behind TS.Recent.
    c.feed(".", NXT, 1001, timestamps=(T + 5, 0))
    assert acks_sent(c) == [NXT]
    for i in range(10):           # 10 more within the next 450 ms: no answer
        c.run_until(0.1 + i * 0.045)
        c.feed(".", NXT, 1001, timestamps=(T + 5, 0))
    assert acks_sent(c) == []
    assert counter(c, "tcp.paws_ack_skipped") == 10
    assert c.drops()["tcp.drop.paws"] == 11
    c.run_until(0.56)             # 500 ms after the first answer: one more
    c.feed(".", NXT, 1001, timestamps=(T + 5, 0))
    c.feed(".", NXT, 1001, timestamps=(T + 5, 0))
    assert acks_sent(c) == [NXT]
    assert counter(c, "tcp.paws_ack_skipped") == 11
    assert c.conn.status()["state"] == "ESTABLISHED"


def test_the_interval_is_the_challenge_ack_one_and_shared_with_it():
    c = paws_ready(TcpConfig(challenge_ack_interval=0.2))
    c.feed("S", NXT + 10, timestamps=(T + 1000, 0))   # a SYN in the window: challenged
    assert acks_sent(c) == [NXT] and counter(c, "tcp.challenge_acks") == 1
    c.run_until(0.1)              # within 200 ms of the challenge ACK: skipped
    c.feed(".", NXT, 1001, timestamps=(T + 5, 0))
    assert acks_sent(c) == [] and counter(c, "tcp.paws_ack_skipped") == 1
    c.run_until(0.27)             # 200 ms after it
    c.feed(".", NXT, 1001, timestamps=(T + 5, 0))
    assert acks_sent(c) == [NXT]
    c.run_until(0.3)              # and the PAWS answer holds back a challenge ACK
    c.feed("S", NXT + 10, timestamps=(T + 1000, 0))
    assert acks_sent(c) == [] and counter(c, "tcp.challenge_ack_limited") == 1


def test_data_failing_paws_earns_a_dupack_every_time():
    c = paws_ready()
    for i in range(5):
        c.run_until(0.07 + i * 0.01)
        c.feed(".", NXT + 100, UNA, data=b"old", timestamps=(T + 1, 0))
    assert acks_sent(c) == [NXT] * 5
    c.feed("F.", NXT, UNA, timestamps=(T + 1, 0))     # a FIN is data here
    assert acks_sent(c) == [NXT]
    # Bytes we hold already: the answer D-SACKs them (as Linux's tcp_send_dupack).
    c.feed(".", IRS + 1, UNA, data=b"new", timestamps=(T - 1, 0))
    (seg,) = c.sent_segments()
    assert seg.ack == NXT and seg.sack == ((IRS + 1, NXT),)
    assert c.drops()["tcp.drop.paws"] == 7 and counter(c, "tcp.paws_ack_skipped") == 0
    assert c.conn.recv(100) is None and c.conn.state == "ESTABLISHED"


def test_an_old_pure_ack_failing_paws_earns_nothing():
    c = paws_ready()
    c.feed(".", NXT - 3, 1001, timestamps=(T - 1, 0))  # from before the peer's 3 bytes
    c.feed(".", NXT - 3, 1001, timestamps=(T - 1, 0))
    assert acks_sent(c) == []
    assert counter(c, "tcp.paws_old_ack") == 2 and c.drops()["tcp.drop.paws"] == 2
    assert counter(c, "tcp.paws_ack_skipped") == 0
    # It took nothing from the budget: the next one at RCV.NXT is answered.
    c.feed(".", NXT, 1001, timestamps=(T + 5, 0))
    assert acks_sent(c) == [NXT]


def test_a_reordered_duplicate_ack_within_the_replay_window_is_taken():
    c = paws_ready()
    # SND.UNA, the same window, at RCV.NXT, 10 ticks behind: a duplicate ACK
    # the path reordered. Taken (no drop), and needing no answer.
    c.feed(".", NXT, UNA, timestamps=(T, 0))
    assert acks_sent(c) == []
    assert "tcp.drop.paws" not in c.drops() and counter(c, "tcp.paws_disordered_ack") == 1
    # Far behind (more than 1.2 RTO of a 1 ms clock): dropped, and answered.
    c.feed(".", NXT, UNA, timestamps=(T + 10 - 1300, 0))
    assert c.drops()["tcp.drop.paws"] == 1 and acks_sent(c) == [NXT]
    # A zero window could be an update: dropped (its answer skipped, within
    # 500 ms). So is a smaller one here (Linux takes it but would not apply
    # it; our sender would): the window the peer offered last stays.
    c.feed(".", NXT, UNA, win=0, timestamps=(T, 0))
    c.feed(".", NXT, UNA, win=65535 // 2, timestamps=(T, 0))
    assert c.drops()["tcp.drop.paws"] == 3 and counter(c, "tcp.paws_ack_skipped") == 2
    assert counter(c, "tcp.paws_disordered_ack") == 1 and acks_sent(c) == []
    assert c.conn.status()["snd_wnd"] == 65535 << 7


def test_a_syn_failing_paws_is_challenged():
    c = paws_ready()
    c.feed("S", NXT + 10, timestamps=(T + 1, 0))
    assert acks_sent(c) == [NXT]
    assert c.drops()["tcp.drop.paws"] == 1 and counter(c, "tcp.challenge_acks") == 1
    c.feed("S", NXT + 10, timestamps=(T + 1, 0))    # within 500 ms: limited
    assert acks_sent(c) == [] and counter(c, "tcp.challenge_ack_limited") == 1
    assert c.conn.state == "ESTABLISHED"


def test_in_syn_received_an_old_pure_ack_is_only_rate_limited():
    # Linux's request sock (tcp_check_req) has no old-ACK or disordered-ACK rule.
    c = Conversation()
    c.layer.listen((0, US_PORT), 5, 0.0)
    c.feed("S", IRS, mss=1460, timestamps=(T, 0))
    assert [s.flags for s in c.sent_segments()] == [0x12]          # SYN,ACK
    c.feed(".", IRS, 1001, timestamps=(T - 1, 0))                  # below RCV.NXT
    c.feed(".", IRS, 1001, timestamps=(T - 1, 0))
    assert acks_sent(c) == [IRS + 1]
    assert counter(c, "tcp.paws_ack_skipped") == 1 and counter(c, "tcp.paws_old_ack") == 0
    assert c.drops()["tcp.drop.paws"] == 2
