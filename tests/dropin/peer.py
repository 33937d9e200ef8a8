"""Kernel-side peers for the drop-in tests: run as a separate process (its
sockets are the kernel's), ``python peer.py MODE ARGS...``. A server prints
``ready`` on stdout once it listens; a client prints its result.

Modes:
  http HOST PORT         HTTP/1.1 server: GET /bytes/N (byte i is i % 251),
                         POST echoes {"bytes": N, "sha256": hex}; keep-alive
  silent HOST PORT       accepts connections and never answers
  echo HOST PORT         asyncio line echo server
  xmlrpc HOST PORT       SimpleXMLRPCServer with add(a, b)
  clients HOST PORT N    N concurrent asyncio connections, each sends a line
                         and expects it back; prints "ok N"
  xmlrpc-call URL        calls add(2, 3) and prints the result
  udp HOST PORT DATA     one datagram, prints the answer
  tcp HOST PORT DATA     connect, send DATA, shut down, print the answer
  count HOST PORT        connect, read to EOF, print "N SHA256"
  sink HOST PORT [WAIT]  accept one connection (64 KB receive buffer), WAIT
                         seconds, read to EOF, print "N SHA256"
"""

import asyncio
import hashlib
import http.server
import json
import socket
import sys
import time
import xmlrpc.client
import xmlrpc.server


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/bytes/") else 0
        body = bytes(i % 251 for i in range(n))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def ready():
    print("ready", flush=True)


def serve_http(host, port):
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    ready()
    server.serve_forever()


def serve_silent(host, port):
    srv = socket.create_server((host, int(port)))
    ready()
    held = []
    while True:
        held.append(srv.accept()[0])


async def serve_echo(host, port):
    async def one(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(one, host, int(port), backlog=512)
    ready()
    await server.serve_forever()


async def clients(host, port, n):
    async def one(i):
        reader, writer = await asyncio.open_connection(host, int(port))
        line = f"hello {i}\n".encode()
        writer.write(line)
        await writer.drain()
        got = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return got == line

    results = await asyncio.gather(*(one(i) for i in range(int(n))))
    print("ok", sum(results), flush=True)


def serve_xmlrpc(host, port):
    server = xmlrpc.server.SimpleXMLRPCServer((host, int(port)), logRequests=False)
    server.register_function(lambda a, b: a + b, "add")
    ready()
    server.serve_forever()


def udp(host, port, data):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(data.encode(), (host, int(port)))
        print(s.recv(65536).decode(), flush=True)


def tcp(host, port, data):
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data.encode())
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        print(b"".join(chunks).decode(), flush=True)


def read_all(conn):
    digest, n = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 16):
        digest.update(chunk)
        n += len(chunk)
    print(n, digest.hexdigest(), flush=True)


def count(host, port):
    with socket.create_connection((host, int(port)), timeout=30) as s:
        read_all(s)


def sink(host, port, wait="0"):
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # the kernel holds little
        srv.bind((host, int(port)))
        srv.listen()
        ready()
        conn, _ = srv.accept()
        time.sleep(float(wait))
        with conn:
            conn.settimeout(30)
            read_all(conn)


def main(mode, *args):
    if mode == "http":
        serve_http(*args)
    elif mode == "silent":
        serve_silent(*args)
    elif mode == "echo":
        asyncio.run(serve_echo(*args))
    elif mode == "clients":
        asyncio.run(clients(*args))
    elif mode == "xmlrpc":
        serve_xmlrpc(*args)
    elif mode == "xmlrpc-call":
        print(xmlrpc.client.ServerProxy(args[0]).add(2, 3), flush=True)
    elif mode == "udp":
        udp(*args)
    elif mode == "tcp":
        tcp(*args)
    elif mode == "count":
        count(*args)
    elif mode == "sink":
        sink(*args)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(*sys.argv[1:])
