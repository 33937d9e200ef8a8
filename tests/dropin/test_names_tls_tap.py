"""The drop-in with names and TLS together, against kernel peers on a TAP in
the test's namespace: HTTPS by host name (dnsmasq answers, a kernel-side
TLS server with a test CA), asyncio by host name with 200 connections,
``stack run`` of a script that resolves and downloads (its trace: the DNS
query and answer over UDP, then the TCP handshake and teardown), and
``stack run`` of a TLS server answering curl and openssl s_client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import urllib.request

from tests.helpers.certs import SERVER_NAME, make_pki
from tests.helpers.cli import ENV, ROOT
from tests.helpers.dns import dnsmasq
from tests.helpers.dropin import KERNEL, STACK, start_peer
from tests.helpers.tap import kill, sh

TLS_PEER = ROOT / "tests" / "helpers" / "tls_peer.py"


def _tls_peer(pki, port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(TLS_PEER), "https", str(pki.cert), str(pki.key),
                          KERNEL, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline().startswith("ready"), p.stderr
    return p


def test_https_by_name_through_dnsmasq(tap_stack, tmp_path):
    pki = make_pki(tmp_path)
    net = tap_stack(dns=[KERNEL])
    peer = _tls_peer(pki, 8443)
    try:
        with dnsmasq(listen=KERNEL, records={SERVER_NAME: KERNEL}), net.patched():
            ctx = pki.client_context()
            with urllib.request.urlopen(f"https://{SERVER_NAME}:8443/50000", context=ctx,
                                        timeout=10) as r:
                body = r.read()
    finally:
        kill(peer)
    assert len(body) == 50000


def test_asyncio_by_name_with_200_connections(tap_stack):
    net = tap_stack(dns=[KERNEL])
    peer = start_peer("http", KERNEL, 8091)

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection(SERVER_NAME, 8091)
        writer.write(f"GET /bytes/{i} HTTP/1.0\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data.split(b"\r\n\r\n", 1)[1]

    async def main() -> list[bytes]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    try:
        with dnsmasq(listen=KERNEL, records={SERVER_NAME: KERNEL}), net.patched():
            bodies = asyncio.run(main())
    finally:
        kill(peer)
    assert [len(b) for b in bodies] == list(range(200))


FETCH = """
import socket, sys, urllib.request
print(socket.gethostbyname("www.example.test"))
with urllib.request.urlopen("http://www.example.test:8092/bytes/3000", timeout=10) as r:
    sys.exit(0 if len(r.read()) == 3000 else 4)
"""


def test_stack_run_resolves_and_downloads_and_the_trace_tells_it(netns, tmp_path):
    script, trace = tmp_path / "fetch.py", tmp_path / "t.jsonl"
    script.write_text(FETCH)
    subprocess.run(["ip", "link", "del", "trunname"], capture_output=True)
    sh("ip tuntap add mode tap name trunname && ip addr add 192.0.2.1/24 dev trunname "
       "&& ip link set trunname up")
    peer = start_peer("http", KERNEL, 8092)
    try:
        with dnsmasq(listen=KERNEL, records={SERVER_NAME: KERNEL}):
            r = subprocess.run([sys.executable, "-m", "stack", "run", "--tap", "trunname",
                                "--dns", KERNEL, "--trace", str(trace), "--", str(script)],
                               capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT)
    finally:
        kill(peer)
        sh("ip link del trunname", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == KERNEL
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    story = []
    for e in events:
        if e["layer"] == "dns" and e["event"] in ("query", "answer"):
            story.append(f"dns {e['event']}")
        elif (e["layer"] == "tcp" and e["event"] == "state"
              and e["conn"].endswith(f"{KERNEL}:8092")):
            story.append(e["to"])
    query = next(e for e in events if e["layer"] == "dns" and e["event"] == "query")
    assert (query["name"], query["via"], query["server"]) == (SERVER_NAME, "udp", KERNEL)
    first_tcp = story.index("SYN_SENT")
    assert "dns query" in story[:first_tcp] and "dns answer" in story[:first_tcp]
    assert story[first_tcp:first_tcp + 2] == ["SYN_SENT", "ESTABLISHED"]
    assert story[-1] in ("CLOSED", "TIME_WAIT")


TLS_SERVER = """
import http.server, ssl, sys
cert, key = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"over TLS through the stack\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
httpd = http.server.HTTPServer(("192.0.2.2", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("serving", flush=True)
httpd.handle_request()   # curl
httpd.handle_request()   # openssl s_client
"""


def test_stack_run_serves_tls_to_curl_and_openssl(netns, tmp_path):
    pki = make_pki(tmp_path)
    script = tmp_path / "tls_server.py"
    script.write_text(textwrap.dedent(TLS_SERVER))
    subprocess.run(["ip", "link", "del", "truntls"], capture_output=True)
    p = subprocess.Popen([sys.executable, "-m", "stack", "run", "--tap", "truntls",
                          "--host-address", "192.0.2.1/24", "--", str(script), str(pki.cert),
                          str(pki.key)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV, cwd=ROOT)
    try:
        assert p.stdout is not None and p.stdout.readline() == "serving\n"
        curl = sh(f"curl -sS --max-time 10 --cacert {pki.ca} https://{STACK}:8443/")
        assert curl.stdout == "over TLS through the stack\n"
        s_client = subprocess.run(
            ["openssl", "s_client", "-connect", f"{STACK}:8443", "-CAfile", str(pki.ca),
             "-verify_return_error", "-quiet"], input="GET / HTTP/1.0\r\n\r\n",
            capture_output=True, text=True, timeout=20)
        assert "over TLS through the stack" in s_client.stdout, s_client.stderr
        assert p.wait(timeout=20) == 0, p.stderr.read() if p.stderr else ""
    finally:
        kill(p)
