"""``stack ss``'s formatter against literal lines of iproute2's ``ss`` (6.1).

Each expected table below was printed by the kernel's own ``ss`` for kernel
sockets with the same addresses, ports, queues and states as the socket
dicts given to ``stack.ss.format_table`` (trailing spaces included: ss pads
the Process column)."""

from __future__ import annotations

import pytest

from stack import ss


def sock(state, local, remote=("0.0.0.0", 0), recv_q=0, send_q=0, proto="tcp", **kw):
    d = {"proto": proto, "state": state, "local": list(local), "remote": list(remote),
         "recv_q": recv_q, "send_q": send_q, "owner": None, "timer": None, "info": None}
    d.update(kw)
    return d


KERNEL = [
    sock("LISTEN", ("127.0.0.1", 8000), send_q=128),
    sock("LISTEN", ("0.0.0.0", 80), send_q=128),
    sock("ESTABLISHED", ("127.0.0.1", 37534), ("127.0.0.1", 8000)),
    sock("ESTABLISHED", ("127.0.0.1", 8000), ("127.0.0.1", 37534), recv_q=100),
    sock("TIME_WAIT", ("127.0.0.1", 8000), ("127.0.0.1", 37540)),
]


def test_ss_tan_matches_iproute2():
    assert ss.format_table(KERNEL, ss.Options(tcp=True, all=True, numeric=True)) == [
        "State     Recv-Q Send-Q Local Address:Port  Peer Address:Port Process",
        "LISTEN    0      128        127.0.0.1:8000       0.0.0.0:*           ",
        "LISTEN    0      128          0.0.0.0:80         0.0.0.0:*           ",
        "ESTAB     0      0          127.0.0.1:37534    127.0.0.1:8000        ",
        "ESTAB     100    0          127.0.0.1:8000     127.0.0.1:37534       ",
        "TIME-WAIT 0      0          127.0.0.1:8000     127.0.0.1:37540       ",
    ]


def test_default_listing_leaves_listeners_out_and_l_keeps_only_them():
    assert ss.format_table(KERNEL[:4], ss.Options(tcp=True, numeric=True)) == [
        "State Recv-Q Send-Q Local Address:Port  Peer Address:Port Process",
        "ESTAB 0      0          127.0.0.1:37534    127.0.0.1:8000        ",
        "ESTAB 100    0          127.0.0.1:8000     127.0.0.1:37534       ",
    ]
    assert ss.format_table(KERNEL, ss.Options(tcp=True, listening=True, numeric=True)) == [
        "State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess",
        "LISTEN 0      128        127.0.0.1:8000      0.0.0.0:*          ",
        "LISTEN 0      128          0.0.0.0:80        0.0.0.0:*          ",
    ]


def test_udp_and_the_netid_column():
    udp = sock("UNCONN", ("0.0.0.0", 5353), proto="udp")
    assert ss.format_table([udp], ss.Options(udp=True, all=True, numeric=True)) == [
        "State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess",
        "UNCONN 0      0            0.0.0.0:5353      0.0.0.0:*          ",
    ]
    socks = [KERNEL[0], KERNEL[2], udp,
             sock("ESTABLISHED", ("127.0.0.1", 8000), ("127.0.0.1", 53354))]
    socks[1] = sock("ESTABLISHED", ("127.0.0.1", 53354), ("127.0.0.1", 8000))
    assert ss.format_table(socks, ss.Options(tcp=True, udp=True, all=True, numeric=True)) == [
        "Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process",
        "udp   UNCONN 0      0            0.0.0.0:5353       0.0.0.0:*           ",
        "tcp   LISTEN 0      128        127.0.0.1:8000       0.0.0.0:*           ",
        "tcp   ESTAB  0      0          127.0.0.1:53354    127.0.0.1:8000        ",
        "tcp   ESTAB  0      0          127.0.0.1:8000     127.0.0.1:53354       ",
    ]


def test_one_state_drops_the_state_column_and_overrides_l():
    assert ss.format_table(KERNEL, ss.Options(tcp=True, numeric=True,
                                              states=["time-wait"])) == [
        "Recv-Q Send-Q Local Address:Port Peer Address:Port Process",
        "0      0          127.0.0.1:8000    127.0.0.1:37540       ",
    ]
    est = ss.format_table(KERNEL, ss.Options(tcp=True, listening=True, numeric=True,
                                             states=["established"]))
    assert est == [
        "Recv-Q Send-Q Local Address:Port  Peer Address:Port Process",
        "0      0          127.0.0.1:37534    127.0.0.1:8000        ",
        "100    0          127.0.0.1:8000     127.0.0.1:37534       ",
    ]
    # Two states: the State column is back.
    two = ss.format_table(KERNEL, ss.Options(tcp=True, numeric=True,
                                             states=["established", "listening"]))
    assert two[0].startswith("State ") and len(two) == 5


@pytest.mark.parametrize("name, states", [
    ("time-wait", {"TIME-WAIT"}), ("TIME_WAIT", {"TIME-WAIT"}), ("established", {"ESTAB"}),
    ("ESTABLISHED", {"ESTAB"}), ("syn-recv", {"SYN-RECV"}), ("SYN_RECEIVED", {"SYN-RECV"}),
    ("close-wait", {"CLOSE-WAIT"}), ("listening", {"LISTEN"}), ("bucket", {"SYN-RECV", "TIME-WAIT"}),
    ("fin-wait-2", {"FIN-WAIT-2"}), ("CLOSE-WAIT", {"CLOSE-WAIT"}),
])
def test_state_names(name, states):
    assert ss.state_filter(name) == states


def test_an_unknown_state_is_an_error():
    with pytest.raises(ValueError, match="unknown state 'waiting'"):
        ss.state_filter("waiting")


def test_port_names_without_n():
    rows = ss.format_table([sock("LISTEN", ("0.0.0.0", 80), send_q=128)],
                           ss.Options(tcp=True, listening=True))
    assert rows[1] == "LISTEN 0      128          0.0.0.0:http      0.0.0.0:*          "


@pytest.mark.parametrize("seconds, text", [
    (0.18, "180ms"), (59.2, "59sec"), (1.5, "1.500ms"), (9.97, "9.970ms"), (120.0, "2min"),
    (60.25, "1min"), (600.0, "10min"),
])
def test_timer_times_as_ss_prints_them(seconds, text):
    assert ss.ms_timer(seconds) == text


INFO = {"state": "ESTABLISHED", "timestamps": True, "sack": True, "congestion": "cubic",
        "snd_wscale": 10, "rcv_wscale": 7, "rto": 0.204, "srtt": 0.000234, "rttvar": 0.0001175,
        "mss": 1448, "cwnd": 14480, "ssthresh": 1 << 30, "bytes_sent": 100, "bytes_retrans": 0,
        "bytes_acked": 101, "bytes_received": 5, "segs_out": 3, "segs_in": 4,
        "retransmit_retries": 0, "retrans": 0, "sacked": 0, "rcv_wnd": 65535,
        "snd_wnd": 64512}


def test_info_line():
    assert ss.info_line(INFO) == (
        "\t ts sack cubic wscale:10,7 rto:204 rtt:0.234/0.118 mss:1448 cwnd:10 bytes_sent:100 "
        "bytes_acked:101 bytes_received:5 segs_out:3 segs_in:4 rcv_wnd:65535 snd_wnd:64512")
    lossy = dict(INFO, ssthresh=7240, cwnd=7240, retrans=3, retransmit_retries=1,
                 bytes_retrans=2896, srtt=0.0123456, timestamps=False, snd_wscale=None)
    assert ss.info_line(lossy) == (
        "\t sack cubic rto:204 rtt:12.346/0.118 mss:1448 cwnd:5 ssthresh:5 bytes_sent:100 "
        "bytes_retrans:2896 bytes_acked:101 bytes_received:5 segs_out:3 segs_in:4 "
        "retrans:1/3 rcv_wnd:65535 snd_wnd:64512")


def test_i_adds_the_second_line_and_the_timer_and_p_the_owner():
    est = sock("ESTABLISHED", ("192.0.2.2", 80), ("192.0.2.1", 41824), info=INFO,
               timer=["on", 0.18, 0], owner={"program": "stack", "pid": 42})
    lines = ss.format_table([est], ss.Options(tcp=True, numeric=True, info=True, process=True))
    assert lines == [
        "State Recv-Q Send-Q Local Address:Port Peer Address:Port "
        "Process                                     ",
        "ESTAB 0      0          192.0.2.2:80      192.0.2.1:41824 "
        'users:(("stack",pid=42)) timer:(on,180ms,0)',
        ss.info_line(INFO),
    ]
    tw = sock("TIME_WAIT", ("192.0.2.2", 80), ("192.0.2.1", 41824), timer=["timewait", 59.2, 0])
    assert ss.format_table([tw], ss.Options(tcp=True, numeric=True, timers=True)) == [
        "State Recv-Q Send-Q Local Address:Port Peer Address:PortProcess"]  # (ss: not without -a)
    assert ss.format_table([tw], ss.Options(tcp=True, all=True, numeric=True, timers=True))[1] == (
        "TIME-WAIT 0      0          192.0.2.2:80      192.0.2.1:41824 timer:(timewait,59sec,0)")
