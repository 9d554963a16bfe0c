"""EXTERNAL's user name from a certificate subject, written as RabbitMQ's rabbit_ssl writes
it (checked against RabbitMQ 3.10 in interop/test_tls.py for a plain subject)."""
from __future__ import annotations

from amqpbroker.frontend.tls import distinguished_name


def subject(*rdns):
    """A subject as ``SSLSocket.getpeercert()`` gives it: RDNs in certificate order."""
    return tuple(tuple(rdn) for rdn in rdns)


def test_last_rdn_first_with_short_names():
    s = subject([("countryName", "DE")], [("organizationName", "Example Org")],
                [("organizationalUnitName", "dev")], [("commonName", "alice")])
    assert distinguished_name(s) == "CN=alice,OU=dev,O=Example Org,C=DE"


def test_multi_valued_rdn_and_unknown_attribute():
    s = subject([("domainComponent", "com")], [("commonName", "a"), ("userId", "42")],
                [("1.2.3.4", "x")])
    assert distinguished_name(s) == "1.2.3.4=x,CN=a+UID=42,DC=com"


def test_values_escaped_as_rabbitmq_escapes_them():
    s = subject([("commonName", ' #lead, "q" +;<>\\ trail ')])
    assert distinguished_name(s) == 'CN=\\ #lead\\, \\"q\\" \\+\\;\\<\\>\\\\ trail\\ '
    s = subject([("commonName", "#x")], [("organizationName", "Zoë~")])
    assert distinguished_name(s) == "O=Zo\\C3\\AB\\7E,CN=\\#x"
