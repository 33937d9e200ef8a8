"""Stream sockets: what the trace records about a socket's connection (stack only).

A case taking ``world`` runs against the kernel and against the stack
(tests/helpers/sockets.py) and passes only if both behave the same.
"""

from __future__ import annotations

import struct
import time

import pytest

import stack
from tests.helpers.sockets import recv_exactly


def _states(events, conn_name):
    return [(e["from"], e["to"], e["cause"]) for e in events
            if e["event"] == "state" and e["conn"] == conn_name]


def _wait_state(events, conn_name, to, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s[1] == to for s in _states(events, conn_name)):
            return
        time.sleep(0.01)
    raise AssertionError(f"{conn_name} never reached {to}: {_states(events, conn_name)}")


def traced_pair(**kw):
    """Two stacks joined by a memory link, and the trace events each one writes."""
    a, b = stack.Stack.pair(**kw)
    ev_a, ev_b = [], []
    a.trace.subscribe(ev_a.append)
    b.trace.subscribe(ev_b.append)
    return a, b, ev_a, ev_b


def test_trace_shows_active_and_passive_close():
    from stack.tcp.config import TcpConfig

    cfg = TcpConfig(msl=0.2)  # TIME_WAIT lasts 0.4 s
    a, b, ev_a, ev_b = traced_pair(tcp_config=cfg)
    with a, b:
        srv = a.create_server(("192.0.2.1", 0))
        port = srv.getsockname()[1]
        cli = b.create_connection(("192.0.2.1", port), timeout=5)
        conn, (chost, cport) = srv.accept()
        cli.sendall(b"x" * 10_000)
        assert len(recv_exactly(conn, 10_000)) == 10_000
        cli.close()  # b closes first: active close
        assert conn.recv(10) == b""
        conn.close()
        client_name = f"192.0.2.2:{cport}-192.0.2.1:{port}"
        server_name = f"192.0.2.1:{port}-192.0.2.2:{cport}"
        _wait_state(ev_b, client_name, "CLOSED")
        _wait_state(ev_a, server_name, "CLOSED")
        active = _states(ev_b, client_name)
        passive = _states(ev_a, server_name)
    assert [(f, t) for f, t, _ in active] == [
        ("CLOSED", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "FIN_WAIT_1"),
        ("FIN_WAIT_1", "FIN_WAIT_2"), ("FIN_WAIT_2", "TIME_WAIT"), ("TIME_WAIT", "CLOSED")]
    assert [(f, t) for f, t, _ in passive] == [
        ("LISTEN", "SYN_RECEIVED"), ("SYN_RECEIVED", "ESTABLISHED"),
        ("ESTABLISHED", "CLOSE_WAIT"), ("CLOSE_WAIT", "LAST_ACK"), ("LAST_ACK", "CLOSED")]
    causes_active = [c for _, _, c in active]
    assert causes_active[0] == "user connect"
    assert causes_active[1].startswith("rcv SYN,ACK seq=") and " ack=" in causes_active[1]
    assert causes_active[2] == "user close"
    # The ACK of our FIN is delayed (as Linux) and the server closes at
    # once: its FIN may carry it.
    assert causes_active[3].startswith(("rcv ACK seq=", "rcv FIN,ACK seq="))
    assert causes_active[4].startswith("rcv FIN,ACK seq=")
    assert causes_active[5] == "timer 2MSL"
    causes_passive = [c for _, _, c in passive]
    assert causes_passive[0].startswith("rcv SYN seq=")
    assert causes_passive[1].startswith("rcv ACK seq=")
    assert causes_passive[2].startswith("rcv FIN,ACK seq=")
    assert causes_passive[3] == "user close"
    assert causes_passive[4].startswith("rcv ACK seq=")
    # The listener's own life is traced too.
    lst = [(e["from"], e["to"], e["cause"]) for e in ev_a
           if e["event"] == "state" and e["conn"] == f"192.0.2.1:{port}-0.0.0.0:0"]
    assert lst == [("CLOSED", "LISTEN", "user listen"), ("LISTEN", "CLOSED", "user close")]


def test_trace_shows_reset_by_linger():
    a, b, ev_a, ev_b = traced_pair()
    with a, b:
        srv = a.create_server(("192.0.2.1", 0))
        port = srv.getsockname()[1]
        cli = b.create_connection(("192.0.2.1", port), timeout=5)
        conn, (_, cport) = srv.accept()
        conn.setsockopt(stack.SOL_SOCKET, stack.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        with pytest.raises(ConnectionResetError):
            cli.recv(10)
        cli.close()
        srv.close()
        server = _states(ev_a, f"192.0.2.1:{port}-192.0.2.2:{cport}")
        client = _states(ev_b, f"192.0.2.2:{cport}-192.0.2.1:{port}")
    assert server[-1] == ("ESTABLISHED", "CLOSED", "user abort")
    assert client[-1][:2] == ("ESTABLISHED", "CLOSED")
    assert client[-1][2].startswith("rcv RST")
