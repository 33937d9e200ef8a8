"""Throwaway certificates for the TLS tests, made with the ``openssl`` command.

``make_pki(dir)`` writes a test CA and a server certificate it signed for
``www.example.test``, 192.0.2.1 and 192.0.2.2 (so either end of a TAP may
serve with it), a client certificate it signed, plus a second CA that signed
nothing the servers use: a client trusting only that one must fail
verification.
"""

from __future__ import annotations

import pathlib
import ssl
import subprocess
from dataclasses import dataclass

SERVER_NAME = "www.example.test"
SERVER_SAN = f"DNS:{SERVER_NAME},IP:192.0.2.1,IP:192.0.2.2"


@dataclass(frozen=True)
class Pki:
    ca: pathlib.Path           # the CA the clients trust
    other_ca: pathlib.Path     # a CA that signed nothing here
    cert: pathlib.Path         # the server's certificate (signed by ``ca``)
    key: pathlib.Path          # and its key
    client_cert: pathlib.Path  # a client's certificate, CN "stack client" (signed by ``ca``)
    client_key: pathlib.Path

    def client_context(self, cafile: pathlib.Path | None = None) -> ssl.SSLContext:
        """A client context as a program makes one: verifies against ``ca``."""
        return ssl.create_default_context(cafile=str(cafile or self.ca))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def _openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def _make_ca(d: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN=stack {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _issue(d: pathlib.Path, name: str, cn: str, ext: str, ca: pathlib.Path,
           ca_key: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A key and a certificate for ``cn`` with the extensions ``ext``, signed by ``ca``."""
    key, csr, cert, extfile = (d / f"{name}.{e}" for e in ("key", "csr", "pem", "ext"))
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    extfile.write_text(ext + "basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-extfile", str(extfile), "-out", str(cert))
    return cert, key


def make_pki(d: pathlib.Path) -> Pki:
    """Write the CA, the other CA, the server's and a client's certificate into ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _make_ca(d, "ca")
    other_ca, _ = _make_ca(d, "other-ca")
    cert, key = _issue(d, "server", SERVER_NAME,
                       f"subjectAltName={SERVER_SAN}\nextendedKeyUsage=serverAuth\n", ca, ca_key)
    client_cert, client_key = _issue(d, "client", "stack client",
                                     "extendedKeyUsage=clientAuth\n", ca, ca_key)
    return Pki(ca=ca, other_ca=other_ca, cert=cert, key=key, client_cert=client_cert,
               client_key=client_key)
