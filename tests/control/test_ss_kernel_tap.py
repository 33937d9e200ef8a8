"""``stack ss``'s formatter against the kernel's ``ss`` binary, live: kernel
sockets in the test's private namespace, described as the socket dicts
``net.connections()`` gives, must come out exactly as ``ss`` prints them."""

from __future__ import annotations

import socket

from stack import ss
from tests.helpers.tap import sh, wait_for


def entry(state, local, remote=("0.0.0.0", 0), recv_q=0, send_q=0, proto="tcp"):
    return {"proto": proto, "state": state, "local": list(local), "remote": list(remote),
            "recv_q": recv_q, "send_q": send_q, "owner": None, "timer": None, "info": None}


# Only this test's sockets (earlier tests may have left TIME-WAIT ones in the namespace).
OURS = "'( sport = :8123 or sport = :8124 or dport = :8123 or sport = :5353 )'"


def test_the_same_sockets_print_the_same_lines(netns):
    opened = []

    def keep(s):
        opened.append(s)
        return s

    try:
        keep(socket.create_server(("127.0.0.1", 8123), backlog=17))
        keep(socket.create_server(("0.0.0.0", 8124), backlog=128))
        c = keep(socket.create_connection(("127.0.0.1", 8123)))
        srv_side = keep(opened[0].accept()[0])
        c.sendall(b"x" * 100)
        closer = socket.create_connection(("127.0.0.1", 8123))
        closed, _ = opened[0].accept()
        tw_port = closer.getsockname()[1]
        closed.close()                        # the server end closes first: TIME-WAIT
        wait_for(lambda: "CLOSE-WAIT" in sh(f"ss -tan {OURS}").stdout)
        closer.close()
        u = keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        u.bind(("0.0.0.0", 5353))
        cport = c.getsockname()[1]
        wait_for(lambda: "TIME-WAIT" in sh(f"ss -tan {OURS}").stdout)
        socks = [
            entry("LISTEN", ("127.0.0.1", 8123), send_q=17),
            entry("LISTEN", ("0.0.0.0", 8124), send_q=128),
            entry("ESTABLISHED", ("127.0.0.1", cport), ("127.0.0.1", 8123)),
            entry("ESTABLISHED", ("127.0.0.1", 8123), ("127.0.0.1", cport), recv_q=100),
            entry("TIME_WAIT", ("127.0.0.1", 8123), ("127.0.0.1", tw_port)),
            entry("UNCONN", ("0.0.0.0", 5353), proto="udp"),
        ]
        kernel = sh(f"ss -tan {OURS}").stdout.splitlines()
        ours = ss.format_table(socks, ss.Options(tcp=True, all=True, numeric=True))
        assert ours[0] == kernel[0]
        assert sorted(ours[1:]) == sorted(kernel[1:])
        for args, opt in [
            ("-tn", ss.Options(tcp=True, numeric=True)),
            ("-tln", ss.Options(tcp=True, listening=True, numeric=True)),
            ("-uan", ss.Options(udp=True, all=True, numeric=True)),
            ("-tuan", ss.Options(tcp=True, udp=True, all=True, numeric=True)),
            ("-tan state time-wait", ss.Options(tcp=True, numeric=True, states=["time-wait"])),
            ("-tan state established state listening",
             ss.Options(tcp=True, numeric=True, states=["established", "listening"])),
        ]:
            kernel = sh(f"ss {args} {OURS}").stdout.splitlines()
            ours = ss.format_table(socks, opt)
            assert ours[0] == kernel[0], args
            assert sorted(ours[1:]) == sorted(kernel[1:]), args
        assert srv_side.recv(100) == b"x" * 100
    finally:
        for s in opened:
            s.close()
