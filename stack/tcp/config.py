"""Every TCP tunable in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TcpConfig:
    """Tunables for a :class:`~stack.tcp.layer.TcpLayer` and its connections.

    Times are seconds. Defaults follow Linux where RFCs leave a choice:

    * ``rto_min`` 0.2 s (Linux; RFC 6298 says 1 s) — with 1 s a single lost
      segment on a LAN costs a second. ``rto_initial`` 1 s (RFC 6298),
      ``rto_max`` 120 s (Linux).
    * ``msl`` 30 s, so TIME_WAIT lasts ``2 * msl`` = 60 s like Linux.
    * ``delayed_ack`` 0.04 s (Linux's minimum; RFC 1122 allows up to 0.5 s,
      the issue asks for at most 0.2 s).
    * ``initial_cwnd`` 10 segments (RFC 6928, Linux).
    * ``rcvbuf`` 4 MB, ``sndbuf`` 1 MB (growing to twice cwnd, at most
      ``sndbuf_max`` 4 MB, until SO_SNDBUF fixes it): bytearrays that grow only as data
      waits in them. With window scaling (shift 7 for 4 MB, as Linux) the
      whole receive buffer is offered, enough to fill a fast path; a peer
      that refuses scaling sees at most 65535 bytes.
    * ``window_scaling``, ``timestamps`` (RFC 7323) and ``sack`` (RFC 2018)
      on, ``congestion`` CUBIC (RFC 9438), as Linux.
    * ``max_retries`` 15 (Linux ``tcp_retries2``), ``syn_retries`` 6,
      ``synack_retries`` 5. ``orphan_retries`` 8 (Linux
      ``tcp_orphan_retries``): a connection the application has closed,
      whose peer answers window probes but keeps its window shut, is reset
      after this many probe backoffs (with ``rto_max`` 120 s, within 17
      minutes).
    * ``syncookies`` on (Linux ``tcp_syncookies=1``): a listener whose
      ``syn_backlog`` half-open connections are all taken answers further SYNs
      with a cookie and keeps no state (``stack/tcp/syncookies.py``).
    * ``min_pmtu`` 552 (Linux ``min_pmtu``): an ICMP "fragmentation needed"
      never takes a connection's segments below 512 bytes (plus headers),
      however small the MTU it claims; smaller MTUs are clamped, not ignored.
    * ``max_connections`` bounds the connection table (every state but
      LISTEN); at the bound the oldest TIME_WAIT connection gives way, and
      with none SYNs are dropped and ``connect`` fails with ENOBUFS.
      See README.md, "Limits and defences", for every bound a peer can push against.
    """

    mss: int = 1460                 # our MSS option: link MTU 1500 - 40
    default_peer_mss: int = 536     # when the peer's SYN has no MSS option (RFC 9293 3.7.1)
    min_pmtu: int = 552             # ICMP frag-needed MTUs below this count as this (Linux)
    sndbuf: int = 1024 * 1024
    # Until SO_SNDBUF is set, the send buffer grows to twice cwnd, up to this
    # (Linux's send-buffer autotuning, tcp_sndbuf_expand, to tcp_wmem[2]).
    sndbuf_max: int = 4 * 1024 * 1024
    rcvbuf: int = 4 * 1024 * 1024   # grows as used; with window scaling all of it is offered

    # RFC 7323 and RFC 2018, offered in our SYN and used when the peer's SYN
    # (or SYN,ACK) offers them too.
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    sack_max_ranges: int = 256      # SACKed ranges the sender keeps (a hostile peer's bound)
    ooo_max_holes: int = 64         # out-of-order ranges kept per connection

    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 120.0
    clock_granularity: float = 0.001
    max_retries: int = 15
    orphan_retries: int = 8         # zero-window probe backoffs before a closed connection aborts
    syn_retries: int = 6
    # The first SYN retransmissions of a connect wait one initial RTO each,
    # not twice the last (Linux 6.5+ ``tcp_syn_linear_timeouts``, default 4).
    syn_linear_timeouts: int = 4
    # Tail loss probes (RFC 8985 7, as Linux's default): with SACK, the first
    # timeout of a flight resends its last segment instead of backing off.
    tlp: bool = True
    # RACK (RFC 8985 6, Linux's default): with SACK, a segment is lost when
    # one sent after it arrived and its RTT plus a reordering window passed;
    # off, losses are found by counting duplicate ACKs (RFC 6675).
    rack: bool = True
    synack_retries: int = 5

    header_prediction: bool = True  # the fast path for in-order bulk segments (RFC 7323 D)

    delayed_ack: float = 0.04
    # Quickack mode: up to this many segments are ACKed at once at the start
    # of a connection and after duplicates, before ACKs are delayed
    # (Linux TCP_MAX_QUICKACKS). 0: delay from the first segment.
    max_quickacks: int = 16
    msl: float = 30.0
    fin_wait2_timeout: float = 60.0  # after close(), like Linux tcp_fin_timeout

    nodelay: bool = False
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_count: int = 9

    congestion: str = "cubic"       # "cubic" (RFC 9438), "bbr" (v1), "newreno" (RFC 6582), "reno"
    # Pace the loss-based algorithms too, at Linux's rate (2 or 1.2 cwnd per
    # SRTT), as Linux does under the fq qdisc; BBR always paces.
    pacing: bool = False
    pacing_slack: float = 0.001     # how early a paced segment may leave (the timers' precision)
    # The window a loss starts from: "cwnd" (RFC 9438 4.6, and Linux for
    # every algorithm) or "flight", the bytes outstanding, SACKed ones
    # included (RFC 5681 (4) and RFC 6675's FlightSize).
    loss_window: str = "cwnd"
    prr: bool = True                # SACK recovery sends at PRR's rate (RFC 6937, as Linux)
    hystart: bool = True            # HyStart++ (RFC 9406) ends CUBIC's first slow start
    undo: bool = True               # D-SACK and Eifel undo of a spurious window cut (undo.py)
    initial_cwnd: int = 10
    dupack_threshold: int = 3

    syn_backlog: int = 256          # half-open connections per listener
    syncookies: bool = True         # SYN cookies when a listener's half-open queue is full
    max_connections: int = 16384    # connections of every state (TIME_WAIT too) in one layer
    challenge_ack_limit: int = 1000  # challenge ACKs per second per connection (RFC 5961 7)
    # ... and at most one in this many seconds (Linux's tcp_invalid_ratelimit, 500 ms).
    challenge_ack_interval: float = 0.5
    ephemeral_low: int = 32768      # Linux ip_local_port_range
    ephemeral_high: int = 60999

    @property
    def time_wait(self) -> float:
        return 2 * self.msl
