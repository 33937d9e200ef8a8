"""What the drop-in costs: a 50 MB download with unmodified ``urllib.request``
over ``net.patched()`` against the same download written on ``net.socket()``
directly, in one run, from the same kernel-side server.

Run it with ``scripts/bench-dropin`` (root, inside a private network
namespace made for the run). The kernel side of a TAP (192.0.2.1/24) runs
the project's HTTP service on kernel sockets (``stack.services.KernelNet``);
the stack (192.0.2.2/24) is in this process. Each way is timed three times
and the best is kept; the ratio is drop-in / direct.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request

import stack

SIZE = 50_000_000
KERNEL = "192.0.2.1"
PORT = 8080


def serve_kernel() -> int:
    """The kernel-side server process: http on kernel sockets until stdin closes."""
    from stack.services import KernelNet, parse_service, start_service

    svc = start_service(KernelNet(), parse_service(f"http:{PORT}"), address=KERNEL)
    print("up", flush=True)
    sys.stdin.read()
    svc.close()
    return 0


def direct(net: stack.Stack, size: int) -> int:
    """HTTP/1.0 GET on a stack socket, reading until EOF; the body's length."""
    with net.create_connection((KERNEL, PORT), timeout=30) as s:
        s.sendall(f"GET /bytes/{size} HTTP/1.0\r\nHost: {KERNEL}\r\n\r\n".encode())
        got = 0
        head = b""
        buf = bytearray(1 << 16)
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            if head is not None:
                head += bytes(buf[:n])
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                got = len(head) - end - 4
                head = None
            else:
                got += n
        return got


def dropin(net: stack.Stack, size: int) -> int:
    """``urllib.request.urlopen`` while patched: the body's length."""
    with net.patched():
        with urllib.request.urlopen(f"http://{KERNEL}:{PORT}/bytes/{size}", timeout=30) as r:
            got = 0
            while chunk := r.read(1 << 16):
                got += len(chunk)
            return got


def best_of(runs: int, fn, net: stack.Stack, size: int) -> float:
    """The best rate of ``runs`` downloads, in MB/s (each checked for length)."""
    best = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        got = fn(net, size)
        dt = time.perf_counter() - t0
        assert got == size, f"{fn.__name__}: {got} bytes of {size}"
        best = max(best, size / dt / 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=SIZE, help="bytes per download (%(default)s)")
    p.add_argument("--runs", type=int, default=3, help="downloads per way, best kept")
    p.add_argument("--serve-kernel", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_kernel:
        return serve_kernel()
    load = os.getloadavg()[0]
    net = stack.Stack.tap("tapdrop", address="192.0.2.2/24", host_address=f"{KERNEL}/24")
    server = subprocess.Popen([sys.executable, __file__, "--serve-kernel"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        rate_direct = best_of(args.runs, direct, net, args.size)
        rate_dropin = best_of(args.runs, dropin, net, args.size)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=10)
        net.close()
    print(f"load average at start: {load:.2f}")
    print(f"{args.size / 1e6:.0f} MB download, best of {args.runs}:")
    print(f"  net.socket() directly        {rate_direct:8.1f} MB/s")
    print(f"  urllib over net.patched()    {rate_dropin:8.1f} MB/s")
    print(f"  ratio drop-in / direct       {rate_dropin / rate_direct:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
