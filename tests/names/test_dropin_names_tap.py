"""Names and the drop-in together: an unmodified ``urllib.request`` fetches a
URL by host name under ``net.patched()``; dnsmasq on the kernel side of the
TAP answers the name, and the stack's trace shows the DNS query and answer
over UDP, then the TCP handshake to the address they gave."""

from __future__ import annotations

import socket
import urllib.request

from tests.helpers.dns import dnsmasq
from tests.helpers.dropin import KERNEL, start_peer
from tests.helpers.tap import kill


def test_urllib_by_name_through_dnsmasq(tap_stack):
    net = tap_stack(dns=[KERNEL])
    events: list[dict] = []
    net.trace.subscribe(events.append)
    peer = start_peer("http", KERNEL, 8090)
    try:
        with dnsmasq(listen=KERNEL, records={"www.example.test": KERNEL}):
            with net.patched():
                assert socket.gethostbyname("www.example.test") == KERNEL
                with urllib.request.urlopen("http://www.example.test:8090/bytes/1000",
                                            timeout=10) as r:
                    body = r.read()
    finally:
        kill(peer)
    assert body == bytes(i % 251 for i in range(1000))
    story = [(e["layer"], e["event"]) for e in events
             if (e["layer"] == "dns" and e["event"] in ("query", "answer"))
             or (e["layer"] == "tcp" and e["event"] == "state" and e.get("to") == "ESTABLISHED"
                 and e["conn"].endswith(f"{KERNEL}:8090"))]
    # dnsmasq gives its own records a TTL of 0: each lookup asks again
    assert story == [("dns", "query"), ("dns", "answer")] * 2 + [("tcp", "state")]
    query = next(e for e in events if e["layer"] == "dns" and e["event"] == "query")
    assert (query["name"], query["via"], query["server"]) == ("www.example.test", "udp", KERNEL)
