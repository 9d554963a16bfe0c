"""TLS: the server's contexts (AMQPS, HTTPS) and the EXTERNAL mechanism's user name.

As RabbitMQ's ``ssl_options`` and ``rabbitmq_auth_mechanism_ssl``:

* ``--tls-verify none`` (the default) asks clients for no certificate; ``peer`` asks for one
  and checks it against ``--tls-ca`` (a client that sends one that does not check out fails
  the handshake); ``--tls-fail-if-no-peer-cert`` also refuses clients that send none.
* EXTERNAL is offered on every TLS connection (RabbitMQ offers it even without a client
  certificate, so that the refusal says why: "connection peer presented no TLS (x.509)
  certificate"). The user name is the certificate's subject as RabbitMQ formats it,
  ``CN=alice,OU=dev,O=example`` (RFC 4514 order and escaping), or with
  ``--tls-login-from common_name`` its CN. The user must exist; no password is checked.
* HTTPS for management uses the same certificate and asks for no client certificate (the
  API authenticates with basic auth), as RabbitMQ's ``management.ssl`` by default.

Every process that accepts TLS connections builds its own context from the configuration
(a front-end process cannot inherit one); the supervisor builds one first, so that a bad
file stops the start with one line.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass

# the attribute names Python's ssl gives, and how RabbitMQ's rabbit_ssl writes them
SHORT_NAMES = {
    "commonName": "CN", "surname": "SN", "givenName": "GIVENNAME", "initials": "INITIALS",
    "generationQualifier": "GENERATIONQUALIFIER", "localityName": "L",
    "stateOrProvinceName": "ST", "organizationName": "O", "organizationalUnitName": "OU",
    "title": "TITLE", "countryName": "C", "serialNumber": "SERIALNUMBER",
    "pseudonym": "PSEUDONYM", "domainComponent": "DC", "emailAddress": "EMAILADDRESS",
    "streetAddress": "STREET", "userId": "UID",
}


def amqps_context(cfg) -> ssl.SSLContext:
    """The AMQPS listener's context, peer verification as configured."""
    ctx = _server_context(cfg)
    if cfg.tls_verify == "peer":
        if not cfg.tls_ca:
            raise ValueError("--tls-verify peer needs --tls-ca (the CAs client certificates "
                             "must chain to)")
        ctx.load_verify_locations(cafile=cfg.tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.tls_fail_if_no_peer_cert \
            else ssl.CERT_OPTIONAL
    elif cfg.tls_fail_if_no_peer_cert:
        raise ValueError("--tls-fail-if-no-peer-cert needs --tls-verify peer")
    return ctx


def https_context(cfg) -> ssl.SSLContext:
    """The management HTTPS listener's context: no client certificate asked for."""
    return _server_context(cfg)


def _server_context(cfg) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2         # RabbitMQ 3.10's default versions
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    return ctx


@dataclass(frozen=True)
class CertificateLogin:
    """What EXTERNAL would log in as on one TLS connection: ``name``, or why not
    (``refused``, RabbitMQ's wording)."""
    name: str | None
    refused: str | None = None


def certificate_login(ssl_object, login_from: str) -> CertificateLogin:
    """The EXTERNAL user name of a TLS connection's verified client certificate."""
    cert = ssl_object.getpeercert()
    if not cert:            # none sent, or not asked for (--tls-verify none)
        return CertificateLogin(None, "connection peer presented no TLS (x.509) certificate")
    subject = cert.get("subject", ())
    if login_from == "common_name":
        names = [value for rdn in subject for key, value in rdn if key == "commonName"]
        if not names:
            return CertificateLogin(None, "no name found")
        return CertificateLogin(",".join(names))
    return CertificateLogin(distinguished_name(subject))


def distinguished_name(subject) -> str:
    """RabbitMQ's string of a certificate subject: the last RDN first, attributes by their
    short names, multi-valued RDNs joined by '+', values escaped as RFC 4514 says."""
    rdns = ["+".join(f"{SHORT_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn)
            for rdn in subject]
    return ",".join(reversed(rdns))


def _escape(value: str) -> str:
    """RabbitMQ's ``rabbit_ssl:escape_rdn_value``: a leading space or '#', a trailing
    space and ``"+,;<>\\`` get a backslash; control characters, '~' and every byte of a
    non-ASCII character are written as ``\\HH``."""
    data = value.encode()
    out = []
    for i, b in enumerate(data):
        ch = chr(b)
        if i == 0 and ch in " #":
            out.append("\\" + ch)
        elif ch == " " and i == len(data) - 1:
            out.append("\\ ")
        elif ch in '"+,;<>\\':
            out.append("\\" + ch)
        elif b < 32 or b >= 126:
            out.append(f"\\{b:02X}")
        else:
            out.append(ch)
    return "".join(out)
