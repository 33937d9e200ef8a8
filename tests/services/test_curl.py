"""The HTTP service against a real client (curl).

The services run on the host kernel's sockets (KernelNet) over 127.0.0.1 with
ephemeral ports: the same code the stack runs on its own socket facade.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest

from tests.helpers.services import HOST, expected_bytes, upload_answer


# --- interop with a real client -----------------------------------------------


curl = shutil.which("curl")
needs_curl = pytest.mark.skipif(curl is None, reason="curl is not installed")


def run_curl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [curl, "--silent", "--show-error", "--max-time", "30", *args],
        input=stdin,
        capture_output=True,
        check=True,
    )


@needs_curl
def test_curl_download(web, tmp_path):
    out = tmp_path / "download"
    run_curl("-o", str(out), f"http://{HOST}:{web.port}/bytes/100000")
    assert out.read_bytes() == expected_bytes(100_000)


@needs_curl
def test_curl_upload_file(web, tmp_path):
    body = random.Random(11).randbytes(2_500_000)
    path = tmp_path / "upload.bin"
    path.write_bytes(body)
    done = run_curl("-v", "-T", str(path), f"http://{HOST}:{web.port}/upload.bin")
    assert json.loads(done.stdout) == upload_answer(body)
    log = done.stderr.decode(errors="replace")
    if "Expect: 100-continue" in log:
        assert "HTTP/1.1 100 Continue" in log


@needs_curl
def test_curl_upload_stdin_is_chunked(web):
    body = random.Random(12).randbytes(300_000)
    done = run_curl("-v", "-T", "-", f"http://{HOST}:{web.port}/stdin", stdin=body)
    assert json.loads(done.stdout) == upload_answer(body)
    assert "Transfer-Encoding: chunked" in done.stderr.decode(errors="replace")


@needs_curl
def test_curl_reuses_the_connection(web):
    url = f"http://{HOST}:{web.port}"
    done = run_curl("-v", f"{url}/bytes/10", f"{url}/bytes/20", f"{url}/")
    assert done.stdout.startswith(expected_bytes(10) + expected_bytes(20))
    assert b"<h1>stack</h1>" in done.stdout
    log = done.stderr.decode(errors="replace")
    assert "Re-using existing connection" in log or "Reusing existing" in log
