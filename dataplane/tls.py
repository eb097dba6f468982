"""The TLS listener: pyOpenSSL, with SNI so a wildcard certificate can serve host routing."""

from __future__ import annotations

from twisted.internet import ssl

from dataplane.config import ProxyConfig


def context_factory(config: ProxyConfig) -> ssl.CertificateOptions:
    with open(config.tls_cert, "rb") as f:
        cert_pem = f.read()
    with open(config.tls_key, "rb") as f:
        key_pem = f.read()
    certificate = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
    chain = [ssl.Certificate.loadPEM(block).original for block in _pem_blocks(cert_pem)[1:]]
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        extraCertChain=chain or None,
        # Clients such as urllib3 offer ALPN; answering it (HTTP/1.1 only) is required by some.
        acceptableProtocols=[b"http/1.1"],
    )


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [part + marker for part in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]
