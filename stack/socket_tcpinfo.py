"""``getsockopt(IPPROTO_TCP, TCP_INFO, n)``: a connection's ``status()`` laid
out as Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h), so programs
that unpack the kernel's bytes read the stack's numbers the same way.

Fields the stack does not track (ato, lost, fackets, the last_* times,
pacing, delivery rate, busy times, ...) are 0. Sizes are in segments where
Linux counts segments (cwnd, ssthresh, unacked), times in microseconds.
"""

from __future__ import annotations

import struct
from typing import Any

from stack.tcp.seq import seq_offset

MSS_DEFAULT = 536  # Linux's TCP_MSS_DEFAULT: TCP_MAXSEG before a connection
INFO_LEN = 280     # sizeof(struct tcp_info) in Linux 6.x; what getsockopt returns at most
INFINITE_SSTHRESH = 0x7FFFFFFF

# Linux's TCP_* state numbers (include/net/tcp_states.h).
STATE_NUMBERS = {"ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECEIVED": 3, "FIN_WAIT_1": 4,
                 "FIN_WAIT_2": 5, "TIME_WAIT": 6, "CLOSED": 7, "CLOSE_WAIT": 8, "LAST_ACK": 9,
                 "LISTEN": 10, "CLOSING": 11}
OPT_TIMESTAMPS, OPT_SACK, OPT_WSCALE = 1, 2, 4
CA_OPEN, CA_RECOVERY = 0, 3

_HEAD = struct.Struct("=8B24I4Q6I4Q2I2Q4I")  # up to tcpi_snd_wnd (232 bytes)


def _us(seconds: float | None) -> int:
    return 0 if seconds is None else min(int(seconds * 1e6), 0xFFFFFFFF)


def pack_tcp_info(st: dict[str, Any]) -> bytes:
    """``struct tcp_info`` for ``st`` (a connection's or listener's status)."""
    state = STATE_NUMBERS.get(st.get("state", "CLOSED"), 7)
    if "snd_una" not in st:  # a listener or an unconnected socket
        return struct.pack("=B", state).ljust(INFO_LEN, b"\0")
    mss = max(1, st["mss"])
    options = ((OPT_TIMESTAMPS if st["timestamps"] else 0) | (OPT_SACK if st["sack"] else 0)
               | (OPT_WSCALE if st["snd_wscale"] is not None else 0))
    wscale = ((st["snd_wscale"] or 0) & 0xF) | (((st["rcv_wscale"] or 0) & 0xF) << 4)
    in_flight = seq_offset(st["snd_max"], st["snd_una"])
    ssthresh = st["ssthresh"]
    ssthresh = INFINITE_SSTHRESH if ssthresh >= INFINITE_SSTHRESH * mss else ssthresh // mss
    head = _HEAD.pack(
        state, CA_RECOVERY if st["in_recovery"] else CA_OPEN,
        min(st["retransmit_retries"], 255), min(st["window_probes"], 255), 0, options, wscale, 0,
        _us(st["rto"]), 0, mss, mss,                                  # rto ato snd_mss rcv_mss
        -(-in_flight // mss), 0, 0, 0, 0,                            # unacked sacked lost ...
        0, 0, 0, 0,                                                   # last_* (not tracked)
        0, st["rcv_wnd"], _us(st["srtt"]), _us(st["rttvar"]), min(ssthresh, 0xFFFFFFFF),
        st["cwnd"] // mss, mss, 3,                                    # ... advmss reordering
        0, st["rcv_wnd"], st["retrans"],                              # rcv_rtt rcv_space total
        0, 0, st["bytes_acked"], st["bytes_received"],
        st["segs_out"], st["segs_in"], st["send_buffered"], 0, 0, 0,
        0, 0, 0, 0,
        0, 0,
        st["bytes_sent"], st["bytes_retrans"],
        0, 0, 0, min(st["snd_wnd"], 0xFFFFFFFF))
    return head.ljust(INFO_LEN, b"\0")
