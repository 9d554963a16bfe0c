"""Users, virtual hosts and permissions, set up through the management HTTP API.

Permissions are regexes over resource names: configure (declare/delete), write (publish to an
exchange, bind *to* a queue), read (consume/get from a queue, bind *from* an exchange).
"""
from __future__ import annotations


import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError

from .conftest import q, url_with


@pytest.fixture
def tenant(mgmt, uniq):
    """A fresh vhost and user; permissions set per test through ``grant``."""
    vhost, user, password = uniq("vh"), uniq("user"), "s3cret-pw"
    assert mgmt.put(f"/api/vhosts/{q(vhost)}", {}) in (201, 204)
    assert mgmt.put(f"/api/users/{q(user)}", {"password": password, "tags": ""}) in (201, 204)

    class Tenant:
        pass

    t = Tenant()
    t.vhost, t.user, t.password = vhost, user, password

    def grant(configure=".*", write=".*", read=".*"):
        status = mgmt.put(f"/api/permissions/{q(vhost)}/{q(user)}",
                          {"configure": configure, "write": write, "read": read})
        assert status in (201, 204)

    t.grant = grant
    yield t
    mgmt.delete(f"/api/vhosts/{q(vhost)}")
    mgmt.delete(f"/api/users/{q(user)}")


@pytest.fixture
def tenant_url(broker_url, tenant):
    return url_with(broker_url, user=tenant.user, password=tenant.password, vhost=tenant.vhost)


def test_user_and_vhost_visible_in_management_api(mgmt, tenant):
    tenant.grant("^c-", "^w-", "^r-")
    assert mgmt.get(f"/api/vhosts/{q(tenant.vhost)}")["name"] == tenant.vhost
    assert mgmt.get(f"/api/users/{q(tenant.user)}")["name"] == tenant.user
    perms = mgmt.get(f"/api/permissions/{q(tenant.vhost)}/{q(tenant.user)}")
    assert (perms["configure"], perms["write"], perms["read"]) == ("^c-", "^w-", "^r-")


def test_no_permission_on_vhost_refused_530(tenant, tenant_url):
    with pytest.raises(ProbableAccessDeniedError) as e:
        pika.BlockingConnection(pika.URLParameters(tenant_url))
    assert (f"(530) \"NOT_ALLOWED - access to vhost '{tenant.vhost}' refused for user "
            f"'{tenant.user}'\"") in str(e.value)


def test_full_permission_can_work(tenant, tenant_url, connect):
    tenant.grant()
    ch = connect(tenant_url).channel()
    qname = ch.queue_declare("anything").method.queue
    ch.confirm_delivery()
    ch.basic_publish("", qname, b"hi")
    assert ch.basic_get(qname, auto_ack=True)[2] == b"hi"


def test_wrong_password_for_new_user_403(broker_url, tenant):
    tenant.grant()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        pika.BlockingConnection(pika.URLParameters(
            url_with(broker_url, user=tenant.user, password="wrong", vhost=tenant.vhost)))
    assert "(403) 'ACCESS_REFUSED" in str(e.value)


def test_declare_queue_outside_configure_regex_403(tenant, tenant_url, connect):
    tenant.grant(configure="^c-.*")
    c = connect(tenant_url)
    assert c.channel().queue_declare("c-ok").method.queue == "c-ok"
    ch = c.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("other")
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to queue 'other' in vhost '{tenant.vhost}' "
                                  f"refused for user '{tenant.user}'")


def test_declare_exchange_outside_configure_regex_403(tenant, tenant_url, connect):
    tenant.grant(configure="^c-.*")
    ch = connect(tenant_url).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("x-other", "direct")
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to exchange 'x-other' in vhost "
                                  f"'{tenant.vhost}' refused for user '{tenant.user}'")


def test_publish_outside_write_regex_403(tenant, tenant_url, connect):
    tenant.grant(configure=".*", write="^w-.*", read=".*")
    c = connect(tenant_url)
    setup = c.channel()
    setup.exchange_declare("w-ex", "fanout")
    setup.exchange_declare("other-ex", "fanout")
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish("w-ex", "", b"allowed")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("other-ex", "", b"refused")
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to exchange 'other-ex' in vhost "
                                  f"'{tenant.vhost}' refused for user '{tenant.user}'")


def test_publish_to_default_exchange_checks_amq_default(tenant, tenant_url, connect):
    tenant.grant(configure=".*", write="^w-.*", read=".*")
    ch = connect(tenant_url).channel()
    ch.queue_declare("w-q")
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", "w-q", b"x")
    # The default exchange is checked under the name 'amq.default'.
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to exchange 'amq.default' in vhost "
                                  f"'{tenant.vhost}' refused for user '{tenant.user}'")


def test_write_permission_matching_the_empty_name_does_not_cover_the_default_exchange(
        tenant, tenant_url, connect):
    # '^$' matches the default exchange's empty name, but permissions see it as 'amq.default'
    tenant.grant(configure=".*", write="^$", read=".*")
    ch = connect(tenant_url).channel()
    ch.queue_declare("any-q")
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("", "any-q", b"x")
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to exchange 'amq.default' in vhost "
                                  f"'{tenant.vhost}' refused for user '{tenant.user}'")


def test_write_permission_on_amq_default_covers_the_default_exchange(tenant, tenant_url,
                                                                     connect):
    tenant.grant(configure=".*", write=r"^amq\.default$", read=".*")
    ch = connect(tenant_url).channel()
    ch.queue_declare("any-q")
    ch.confirm_delivery()
    ch.basic_publish("", "any-q", b"x")
    assert ch.basic_get("any-q", auto_ack=True)[2] == b"x"


def test_consume_outside_read_regex_403(tenant, tenant_url, connect):
    tenant.grant(configure=".*", write=".*", read="^r-.*")
    c = connect(tenant_url)
    setup = c.channel()
    setup.queue_declare("r-q")
    setup.queue_declare("secret-q")
    setup.basic_consume("r-q", lambda *a: None)
    ch = c.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume("secret-q", lambda *a: None)
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to queue 'secret-q' in vhost "
                                  f"'{tenant.vhost}' refused for user '{tenant.user}'")
    ch2 = c.channel()
    with pytest.raises(ChannelClosedByBroker) as e2:
        ch2.basic_get("secret-q")
    assert e2.value.reply_code == 403


def test_bind_needs_write_on_queue_and_read_on_exchange(tenant, tenant_url, connect):
    tenant.grant(configure=".*", write="^q-.*", read="^q-.*")
    c = connect(tenant_url)
    setup = c.channel()
    setup.queue_declare("q-1")
    setup.exchange_declare("e-1", "fanout")
    ch = c.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_bind("q-1", "e-1")
    assert e.value.reply_code == 403
    assert "access to exchange 'e-1'" in e.value.reply_text


def test_permissions_deleted_closes_nothing_but_new_connections_refused(tenant, tenant_url, mgmt, connect):
    tenant.grant()
    c = connect(tenant_url)
    assert c.channel().queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")
    assert mgmt.delete(f"/api/permissions/{q(tenant.vhost)}/{q(tenant.user)}") == 204
    with pytest.raises(ProbableAccessDeniedError) as e:
        pika.BlockingConnection(pika.URLParameters(tenant_url))
    assert "530" in str(e.value)


def test_guest_connects_from_loopback(connect, mgmt, broker_url):
    # RabbitMQ's loopback_users: 'guest' may only connect from localhost. The refusal for a
    # remote address cannot be tested without a second, non-loopback address; we assert the
    # allowed side and the user's tags.
    assert "127.0.0.1" in broker_url or "localhost" in broker_url
    c = connect()
    assert c.channel().queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")
    guest = mgmt.get("/api/users/guest")
    assert guest["name"] == "guest" and "administrator" in guest["tags"]


def test_management_api_requires_auth(mgmt):
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(mgmt.base + "/api/overview", timeout=5)
    assert e.value.code == 401


# ---------------------------------------------------------------------------------------------
# Where RabbitMQ 3.10's answers were found to differ from ours
# ---------------------------------------------------------------------------------------------

def test_server_named_queue_needs_configure_on_its_generated_name(tenant, tenant_url, connect):
    tenant.grant(configure="^c-", write=".*", read=".*")
    ch = connect(tenant_url).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)
    assert e.value.reply_code == 403
    assert e.value.reply_text.startswith("ACCESS_REFUSED - access to queue 'amq.gen-")
    assert e.value.reply_text.endswith(f"' in vhost '{tenant.vhost}' refused for user "
                                       f"'{tenant.user}'")


def test_reserved_name_is_refused_before_permissions(tenant, tenant_url, connect):
    tenant.grant(configure="^c-", write=".*", read=".*")
    ch = connect(tenant_url).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("amq.mine")
    assert e.value.reply_text == \
        "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'"


def test_dead_letter_exchange_needs_write_on_it(tenant, tenant_url, connect):
    tenant.grant(configure=".*", write="^w-", read=".*")
    ch = connect(tenant_url).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("c-dlq", arguments={"x-dead-letter-exchange": "dlx"})
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to exchange 'dlx' in vhost "
                                  f"'{tenant.vhost}' refused for user '{tenant.user}'")
    connect(tenant_url).channel().queue_declare(
        "c-dlq", arguments={"x-dead-letter-exchange": "w-dlx"})


def test_dead_letter_exchange_of_another_type_is_406(tenant, tenant_url, connect):
    tenant.grant()
    ch = connect(tenant_url).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("c-dlq", arguments={"x-dead-letter-exchange": 7})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - invalid type 'signedint' for arg "
                                  f"'x-dead-letter-exchange' in queue 'c-dlq' in vhost "
                                  f"'{tenant.vhost}'")


def test_alternate_exchange_needs_write_on_it(tenant, tenant_url, connect):
    tenant.grant(configure=".*", write="^w-", read=".*")
    ch = connect(tenant_url).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("c-x", "direct", arguments={"alternate-exchange": "ae"})
    assert e.value.reply_code == 403
    assert e.value.reply_text == (f"ACCESS_REFUSED - access to exchange 'ae' in vhost "
                                  f"'{tenant.vhost}' refused for user '{tenant.user}'")


def test_publish_permission_is_checked_before_the_exchange_exists(tenant, tenant_url, connect):
    tenant.grant(configure=".*", write="^w-", read=".*")
    ch = connect(tenant_url).channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("missing", "k", b"x")
        ch.queue_declare("", exclusive=True)      # the publish's error arrives by now
    assert e.value.reply_code == 403


def test_a_permission_pattern_matches_anywhere_in_the_name_in_pcre_syntax(tenant, tenant_url,
                                                                          connect):
    """RabbitMQ runs a permission's pattern with ``re:run``: PCRE, a search (not anchored at
    the start), so ``orders`` covers ``my-orders-2``; POSIX classes and ``\\z`` are PCRE's
    (pcre.py). Before, ours anchored it at the start and refused ``my-orders-2``."""
    tenant.grant(configure="orders|^job[[:digit:]]+\\z", write=".*", read=".*")
    c = connect(tenant_url)
    for name in ("orders", "my-orders-2", "job42"):
        assert c.channel().queue_declare(name).method.queue == name
    for name in ("other", "jobx", "job4a"):
        ch = c.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare(name)
        assert e.value.reply_code == 403, name
