"""The web dashboard in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium): what a person sees, against a broker the module starts.

Some endpoints the pages use (publish, get, purge, declare and delete over HTTP, channels,
bindings, topics, consumer groups) may not be in the broker under test yet. Each test asks
the API itself whether it offers an operation (``offers``: a 405 names the methods a path
takes, a 404 means no such path) and then holds the page to what is true: where the API
offers it, the form must do it (and a pika client sees the result); where it does not, the
page must say "not available" and nothing may have happened.
"""
from __future__ import annotations

import json
import os
import re
import signal
import urllib.parse
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from amqpbroker.testing import BrokerProcess
from amqpbroker.testing.leaks import wait_gone, wait_until
from amqpbroker.testing.mgmt_client import ManagementClient, q

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with BrokerProcess(tmp_path_factory.mktemp("dashboard"), management=True) as b:
        yield b


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (chromedriver -> chromium -> its helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            out.add(kid)
            todo.append(kid)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver_pid = service.process.pid
    try:
        yield driver
    finally:
        pids = descendants(driver_pid) | {driver_pid}
        driver.quit()
        left = wait_gone(pids, timeout=10)
        for pid in left:                    # the ones quit() did not end, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not wait_gone(left, timeout=10), f"browser processes left: {sorted(left)}"


def mgmt(b: BrokerProcess) -> ManagementClient:
    return ManagementClient(f"http://127.0.0.1:{b.management_port}")


def offers(b: BrokerProcess, method: str, path: str) -> bool:
    """Whether the API takes ``method`` on ``path``, asked without doing it: a path the
    server routes answers OPTIONS with 405 and its methods in Allow; an unknown one, 404."""
    status, _, headers = mgmt(b).request("OPTIONS", path, "guest", "guest")
    assert status in (404, 405), (method, path, status)
    return status == 405 and method in headers.get("Allow", "").split(",")


def amqp(b: BrokerProcess, vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        b.host, b.port, vhost, pika.PlainCredentials("guest", "guest")))


def queue_depth(b: BrokerProcess, name: str) -> int | None:
    """Messages ready in ``name`` as a pika client sees them (None: no such queue)."""
    with amqp(b) as conn:
        try:
            return conn.channel().queue_declare(name, passive=True).method.message_count
        except ChannelClosedByBroker as err:
            assert err.reply_code == 404
            return None


def severe_entries(driver) -> list[dict]:
    """What the page wrote to the console since last asked, worse than a warning."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def assert_no_console_errors(driver, b: BrokerProcess, absent: dict[str, tuple] | None = None,
                             refused: set[str] = frozenset(),
                             answered: dict[str, int] | None = None) -> None:
    """No script error at all; a failed request only where it is expected: a refused login,
    a call the API does not take (``absent``: path -> the methods the page may have used
    on it, one of which the API must refuse), or a refusal the test provoked (``answered``:
    path -> its status)."""
    absent = absent or {}
    answered = answered or {}
    for entry in severe_entries(driver):
        assert entry["source"] == "network", entry
        failed = re.match(r"(\S+) - Failed to load resource: .* status of (\d+)",
                          entry["message"])
        assert failed, entry
        path, status = urllib.parse.urlsplit(failed[1]).path, int(failed[2])
        if path in refused and status == 401 or answered.get(path) == status:
            continue
        assert path in absent and status in (404, 405), entry
        assert not all(offers(b, m, path) for m in absent[path]), f"{path} failed: {entry}"


def wait_text(driver, css: str, pattern: str, timeout: float = WAIT) -> str:
    """Wait until the element at ``css`` shows text matching ``pattern``; return it."""
    def found(d):
        for node in d.find_elements(By.CSS_SELECTOR, css):
            try:
                text = node.text
            except Exception:          # replaced by a refresh between find and read
                continue
            if re.search(pattern, text):
                return text
        return None
    return WebDriverWait(driver, timeout).until(found, f"{css} never showed /{pattern}/")


def login(driver, b: BrokerProcess, password: str = "guest") -> None:
    driver.get(f"http://127.0.0.1:{b.management_port}/")
    driver.execute_script("sessionStorage.clear(); location.hash = ''")
    driver.refresh()                            # a fresh page, no credentials
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "login-user"))
    driver.find_element(By.ID, "login-user").send_keys("guest")
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    if password == "guest":
        wait_text(driver, "#whoami", r"^guest")
        Select(driver.find_element(By.ID, "refresh")).select_by_value("2")


def go(driver, hash_path: str) -> None:
    driver.execute_script("location.hash = arguments[0]", hash_path)


def submit(driver, form_id: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{form_id} button[type=submit]").click()


def test_login_refuses_a_wrong_password_and_keeps_credentials_out_of_cookies(browser, broker):
    login(browser, broker, password="not-the-password")
    wait_text(browser, "#login-error", r"Login failed")
    assert not browser.find_element(By.ID, "nav").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0
    assert_no_console_errors(browser, broker, refused={"/api/whoami"})

    login(browser, broker)
    wait_text(browser, "[data-total=queues] .value", r"^\d+$")
    assert browser.find_element(By.ID, "nav").is_displayed()
    assert browser.get_cookies() == []
    assert browser.execute_script("return sessionStorage.length") == 1
    # the overview's charts are drawn, and say plainly what the broker does not report
    assert browser.find_elements(By.CSS_SELECTOR, ".chart canvas")
    overview = mgmt(broker).get("/api/overview", "guest", "guest")[1]
    if "message_stats" not in overview:
        wait_text(browser, "#rates-chart", r"not reported by this broker")
    wait_text(browser, "#cluster-name", rf"^Cluster {re.escape(overview['cluster_name'])}$")
    api = mgmt(broker)
    assert api.request("PUT", "/api/cluster-name", "guest", "guest",
                       body={"name": "dash-named"})[0] == 204
    try:
        go(browser, "#/queues")
        go(browser, "#/")
        wait_text(browser, "#cluster-name", r"^Cluster dash-named$")
    finally:
        api.request("PUT", "/api/cluster-name", "guest", "guest",
                    body={"name": overview["cluster_name"]})
    assert_no_console_errors(browser, broker)

    browser.find_element(By.ID, "logout").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "login-user"))
    assert browser.execute_script("return sessionStorage.length") == 0


def test_a_queue_shows_the_depth_a_pika_publisher_left(browser, broker):
    name = f"dash-depth-{uuid.uuid4().hex[:8]}"
    with amqp(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish("", name, f"m{i}".encode())
        login(browser, broker)
        go(browser, "#/queues")
        row = f"#queues tr[data-name='{name}']"
        wait_text(browser, f"{row} .col-messages_ready", r"^3$")
        assert browser.find_element(By.CSS_SELECTOR, f"{row} .col-state").text == "running"

        go(browser, f"#/queues/{q('/')}/{name}")
        wait_text(browser, "#queue-details [data-total=messages_ready] .value", r"^3$")
        ch.basic_publish("", name, b"one more")
        wait_text(browser, "#queue-details [data-total=messages_ready] .value", r"^4$")
        # the connection publishing is listed, with its client
        go(browser, "#/connections")
        wait_text(browser, "#connections .col-client", r"^Pika Python Client Library \d")
        assert_no_console_errors(browser, broker, absent={
            f"/api/queues/%2F/{name}/bindings": ("GET",)})
        ch.queue_delete(name)


def test_a_quorum_queue_shows_its_held_dead_letters(browser, broker):
    """At-least-once dead-lettering (worker/discards.py): a rejected message with no route
    is held by its quorum queue, and its page says so."""
    name = f"dash-held-{uuid.uuid4().hex[:8]}"
    with amqp(broker) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(name, durable=True, arguments={
            "x-queue-type": "quorum", "x-dead-letter-exchange": "dash-nowhere",
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        ch.basic_publish("", name, b"rejected")
        method, _, _ = ch.basic_get(name)
        ch.basic_reject(method.delivery_tag, requeue=False)
        login(browser, broker)
        go(browser, f"#/queues/{q('/')}/{name}")
        wait_text(browser, "#queue-details [data-total=messages_dlx] .value", r"^1$")
        assert browser.find_element(
            By.CSS_SELECTOR, "#queue-details [data-total=messages_ready] .value").text == "0"
        ch.queue_delete(name)
    assert_no_console_errors(browser, broker, absent={
        f"/api/queues/%2F/{name}/bindings": ("GET",)})


def test_a_queue_shows_its_policy(browser, broker):
    name = f"dash-policy-{uuid.uuid4().hex[:8]}"
    with amqp(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(name)
        status = mgmt(broker).request("PUT", f"/api/policies/%2F/{name}", "guest", "guest",
                                      body={"pattern": f"^{name}$",
                                            "definition": {"max-length": 7}})[0]
        assert status == 201
        try:
            login(browser, broker)
            go(browser, "#/queues")
            wait_text(browser, f"#queues tr[data-name='{name}'] .col-policy", f"^{name}$")
            # an operator policy: named beside it, merged into the effective definition
            status = mgmt(broker).request(
                "PUT", f"/api/operator-policies/%2F/{name}-ops", "guest", "guest",
                body={"pattern": f"^{name}$", "definition": {"max-length": 5}})[0]
            assert status == 201
            wait_text(browser, f"#queues tr[data-name='{name}'] .col-policy",
                      f"^{name}, operator: {name}-ops$")
            go(browser, f"#/queues/{q('/')}/{name}")
            wait_text(browser, "#queue-details .props", r'"max-length":5')
            assert_no_console_errors(browser, broker, absent={
                f"/api/queues/%2F/{name}/bindings": ("GET",)})
        finally:
            mgmt(broker).request("DELETE", f"/api/operator-policies/%2F/{name}-ops", "guest",
                                 "guest")
            mgmt(broker).request("DELETE", f"/api/policies/%2F/{name}", "guest", "guest")
            ch.queue_delete(name)


def test_the_publish_form_delivers_to_a_pika_consumer_and_get_shows_it(browser, broker):
    name = f"dash-publish-{uuid.uuid4().hex[:8]}"
    with amqp(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(name)
        login(browser, broker)
        go(browser, f"#/queues/{q('/')}/{name}")
        wait_text(browser, "#queue-details [data-total=messages_ready] .value", r"^0$")
        browser.find_element(By.CSS_SELECTOR, "#publish textarea[name=payload]").send_keys(
            "hello from the dashboard")
        submit(browser, "publish")
        if offers(broker, "POST", "/api/exchanges/%2F/amq.default/publish"):
            wait_text(browser, "#publish-result", r"^Message published\.$")
            submit(browser, "get")              # "Nack, requeue": it stays for the consumer
            if offers(broker, "POST", f"/api/queues/%2F/{name}/get"):
                wait_text(browser, "#get-result pre.payload", r"^hello from the dashboard$")
            else:
                wait_text(browser, "#get-result .unavailable", r"Getting messages is not available")
            method, _, body = None, None, None
            for method, _, body in ch.consume(name, auto_ack=True, inactivity_timeout=WAIT):
                break
            assert method is not None and body == b"hello from the dashboard"
            ch.cancel()
        else:
            wait_text(browser, "#publish-result .unavailable", r"Publishing is not available")
            assert queue_depth(broker, name) == 0
            submit(browser, "get")
            if offers(broker, "POST", f"/api/queues/%2F/{name}/get"):
                wait_text(browser, "#get-result", r"^Queue is empty\.$")
            else:
                wait_text(browser, "#get-result .unavailable", r"Getting messages is not available")
        assert_no_console_errors(browser, broker, absent={
            f"/api/queues/%2F/{name}/bindings": ("GET",),
            "/api/exchanges/%2F/amq.default/publish": ("POST",),
            f"/api/queues/%2F/{name}/get": ("POST",)})
        ch.queue_delete(name)


def test_declare_purge_and_delete_forms(browser, broker):
    name = f"dash-forms-{uuid.uuid4().hex[:8]}"
    login(browser, broker)
    go(browser, "#/queues")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "declare-queue"))
    browser.find_element(By.CSS_SELECTOR, "#declare-queue input[name=name]").send_keys(name)
    submit(browser, "declare-queue")
    if offers(broker, "PUT", f"/api/queues/%2F/{name}"):
        wait_text(browser, "#declare-queue-result", rf"^Declared queue '{name}'\.$")
        assert queue_depth(broker, name) == 0
    else:
        wait_text(browser, "#declare-queue-result .unavailable",
                  r"Declaring a queue is not available")
        assert queue_depth(broker, name) is None
    with amqp(broker) as conn:                  # the rest needs the queue, declared or not
        ch = conn.channel()
        ch.queue_declare(name, durable=True)       # as the form declares it
        ch.confirm_delivery()
        for i in range(2):
            ch.basic_publish("", name, f"m{i}".encode())

    go(browser, f"#/queues/{q('/')}/{name}")
    wait_text(browser, "#queue-details [data-total=messages_ready] .value", r"^2$")
    browser.find_element(By.ID, "purge").click()
    browser.switch_to.alert.accept()
    if offers(broker, "DELETE", f"/api/queues/%2F/{name}/contents"):
        wait_text(browser, "#queue-danger-result", r"^Queue purged\.$")
        assert queue_depth(broker, name) == 0
    else:
        wait_text(browser, "#queue-danger-result .unavailable",
                  r"Purge messages is not available")
        assert queue_depth(broker, name) == 2

    browser.find_element(By.ID, "delete").click()
    browser.switch_to.alert.accept()
    if offers(broker, "DELETE", f"/api/queues/%2F/{name}"):
        WebDriverWait(browser, WAIT).until(lambda d: d.current_url.endswith("#/queues"))
        assert queue_depth(broker, name) is None
    else:
        wait_text(browser, "#queue-danger-result .unavailable", r"Delete queue is not available")
        assert queue_depth(broker, name) is not None
        with amqp(broker) as conn:
            conn.channel().queue_delete(name)
    assert_no_console_errors(browser, broker, absent={
        f"/api/queues/%2F/{name}/bindings": ("GET",), f"/api/queues/%2F/{name}/contents": ("DELETE",),
        f"/api/queues/%2F/{name}": ("PUT", "DELETE")})


def exchange_exists(b: BrokerProcess, name: str) -> bool:
    with amqp(b) as conn:
        try:
            conn.channel().exchange_declare(name, passive=True)
            return True
        except ChannelClosedByBroker as err:
            assert err.reply_code == 404
            return False


def test_the_delete_form_of_an_exchange(browser, broker):
    """The exchange's page deletes it, goes back to the list, and its refresh does not ask
    for the exchange once the DELETE is sent (no 404 in the console)."""
    name = f"dash-x-{uuid.uuid4().hex[:8]}"
    with amqp(broker) as conn:
        conn.channel().exchange_declare(name, "topic", durable=True)
    login(browser, broker)
    go(browser, f"#/exchanges/{q('/')}/{name}")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "delete"))
    wait_text(browser, "#exchange-details", r"topic")
    browser.find_element(By.ID, "delete").click()
    browser.switch_to.alert.accept()
    WebDriverWait(browser, WAIT).until(lambda d: d.current_url.endswith("#/exchanges"))
    assert not exchange_exists(broker, name)
    assert_no_console_errors(browser, broker)


@pytest.mark.parametrize("page, container, endpoint, what", [
    ("#/channels", "#channels", "/api/channels", "Channels"),
    ("#/topics", "#topics", "/api/topics", "Topics"),
    ("#/groups", "#groups", "/api/consumer-groups", "Consumer groups"),
])
def test_pages_show_their_table_or_say_the_broker_lacks_it(browser, broker, page, container,
                                                           endpoint, what):
    with amqp(broker):                          # at least one channel, for the channels page
        login(browser, broker)
        go(browser, page)
        if offers(broker, "GET", endpoint):
            wait_text(browser, container, r"\S")
            assert not browser.find_elements(By.CSS_SELECTOR, f"{container} .unavailable")
            assert not browser.find_elements(By.CSS_SELECTOR, f"{container} .error")
        else:
            wait_text(browser, f"{container} .unavailable",
                      rf"^{what}: not available from this broker \(404 Not Found\)\.$")
        assert_no_console_errors(browser, broker, absent={endpoint: ("GET",)})


def test_a_group_shows_its_lag(browser, broker):
    """A consumer group that read a stream and left before 3 more messages came: the groups
    list and the group's page show its lag, 3, with no member."""
    stream, group = f"dash-lag-{uuid.uuid4().hex[:8]}", f"dash-g-{uuid.uuid4().hex[:8]}"
    with amqp(broker) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
        for i in range(5):
            ch.basic_publish("", stream, f"m{i}".encode())
        got = []
        reader = conn.channel()
        reader.basic_qos(prefetch_count=10)
        reader.basic_consume(stream, lambda c, m, p, b: (got.append(b),
                                                         c.basic_ack(m.delivery_tag)),
                             arguments={"x-consumer-group": group, "x-stream-offset": "first"})
        wait_until(lambda: len(got) == 5, step=lambda: conn.process_data_events(0.05),
                   what="5 deliveries")
        reader.close()
        for i in range(3):
            ch.basic_publish("", stream, f"n{i}".encode())
        def lag():
            status, g, _ = mgmt(broker).request("GET", f"/api/consumer-groups/%2F/{group}",
                                                "guest", "guest")
            return g["lag"] if status == 200 else None
        wait_until(lambda: lag() == 3, what="the group's lag in the API")
        try:
            login(browser, broker)
            go(browser, "#/groups")
            row = wait_text(browser, "#groups", re.escape(group))
            assert re.search(rf"{re.escape(group)}\s+{re.escape(stream)}\s+empty\s+0\s+3", row)
            go(browser, f"#/groups/%2F/{group}")
            assert wait_text(browser, "[data-total=lag] .value", r"^3$") == "3"
            # topic, partition, member (none: "–"), committed offset, log end offset, lag
            wait_text(browser, "#group-partitions", rf"{re.escape(stream)}\s+0\s+\S+\s+5\s+8\s+3")
            assert_no_console_errors(browser, broker)
        finally:
            ch.queue_delete(stream)


def test_static_files_are_public_and_confined_and_the_api_still_asks_for_a_login(broker):
    c = mgmt(broker)
    status, page, headers = c.request("GET", "/", None)
    assert status == 200 and "<title>amqpbroker</title>" in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "Set-Cookie" not in headers
    status, _, headers = c.request("GET", "/static/js/main.js", None)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    for path in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/nope.js",
                 "/static/js/../../__init__.py"):
        status, body, _ = c.request("GET", path, None)
        assert status == 404, path
    assert c.request("GET", "/api/queues", None)[0] == 401


def row(driver, table: str, name: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f"#{table} tr[data-name='{name}']")


def set_policy(driver, kind: str, name: str, pattern: str, definition: str) -> None:
    """Fill the policies page's form (clearing what the last use left) and submit it."""
    Select(driver.find_element(By.CSS_SELECTOR, "#set-policy select[name=kind]")) \
        .select_by_visible_text(kind)
    Select(driver.find_element(By.CSS_SELECTOR, "#set-policy select[name=vhost]")) \
        .select_by_value("/")
    for field, text in (("input[name=name]", name), ("input[name=pattern]", pattern),
                        ("textarea[name=definition]", definition)):
        box = driver.find_element(By.CSS_SELECTOR, f"#set-policy {field}")
        box.clear()
        box.send_keys(text)
    submit(driver, "set-policy")


def delete_row(driver, table: str, name: str, label: str | None = None) -> None:
    """Its row's Delete (or Clear) button, or the one labelled ``label`` (the row is redrawn
    by each refresh: found again if need be)."""
    def clicked(d):
        try:
            buttons = row(d, table, name)[0].find_elements(By.CSS_SELECTOR, "button.danger")
            [button] = [b for b in buttons if b.text == label] if label else buttons[:1]
            button.click()
            return True
        except Exception:           # replaced by a refresh between find and click
            return False
    WebDriverWait(driver, WAIT).until(clicked)
    driver.switch_to.alert.accept()


def test_the_policies_page_sets_shows_and_deletes_policies(browser, broker):
    """A policy set on the page applies to a pika client's queue (its length capped); a
    refused definition shows the broker's reason and sets nothing; an operator policy caps
    it further; the rows' Delete buttons take both away."""
    name = f"dash-pol-{uuid.uuid4().hex[:8]}"
    api = mgmt(broker)

    def policy(kind: str, pname: str) -> int:
        return api.request("GET", f"/api/{kind}/%2F/{pname}", "guest", "guest")[0]

    with amqp(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.confirm_delivery()
        try:
            login(browser, broker)
            go(browser, "#/policies")
            WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "set-policy"))
            set_policy(browser, "policy", name, f"^{name}$", '{"foo": 1}')
            wait_text(browser, "#set-policy-result .error",
                      r"^Setting the policy failed: 400 Validation failed "
                      r"\[\{<<\"foo\">>,1\}\] are not recognised policy settings$")
            assert policy("policies", name) == 404

            set_policy(browser, "policy", name, f"^{name}$", '{"max-length": 2}')
            wait_text(browser, "#set-policy-result", rf"^Set the policy '{name}'\.$")
            wait_text(browser, f"#policies tr[data-name='{name}'] .col-definition",
                      r'^\{"max-length":2\}$')
            wait_text(browser, f"#policies tr[data-name='{name}'] .col-apply-to", r"^all$")
            for i in range(5):
                ch.basic_publish("", name, f"m{i}".encode())
            wait_until(lambda: queue_depth(broker, name) == 2)

            set_policy(browser, "operator policy", name + "-ops", f"^{name}$",
                       '{"max-length": 1}')
            wait_text(browser, "#set-policy-result", rf"^Set the operator policy '{name}-ops'\.$")
            wait_text(browser, f"#operator-policies tr[data-name='{name}-ops'] .col-apply-to",
                      r"^queues$")
            wait_until(lambda: queue_depth(broker, name) == 1)

            delete_row(browser, "policies", name)
            wait_text(browser, "#policies-result", rf"^Deleted the policy '{name}'\.$")
            WebDriverWait(browser, WAIT).until(lambda d: not row(d, "policies", name))
            assert policy("policies", name) == 404
            delete_row(browser, "operator-policies", name + "-ops")
            wait_text(browser, "#policies-result",
                      rf"^Deleted the operator policy '{name}-ops'\.$")
            WebDriverWait(browser, WAIT).until(
                lambda d: not row(d, "operator-policies", name + "-ops"))
            assert policy("operator-policies", name + "-ops") == 404

            def grows_past_the_caps():          # applied by the queue after the answer
                ch.basic_publish("", name, b"after")
                return queue_depth(broker, name) > 2
            wait_until(grows_past_the_caps)
            assert_no_console_errors(browser, broker, answered={f"/api/policies/%2F/{name}": 400})
        finally:
            api.request("DELETE", f"/api/operator-policies/%2F/{name}-ops", "guest", "guest")
            api.request("DELETE", f"/api/policies/%2F/{name}", "guest", "guest")
            ch.queue_delete(name)


def test_the_shovels_page_sets_shows_restarts_and_deletes_a_shovel(browser, broker):
    """A shovel set on the page moves a pika publisher's messages; a refused definition shows
    the broker's reason and sets nothing; Restart and Delete act on its row."""
    name = f"dash-sh-{uuid.uuid4().hex[:8]}"
    api = mgmt(broker)

    def defined() -> int:
        return api.request("GET", f"/api/parameters/shovel/%2F/{name}", "guest", "guest")[0]

    def set_shovel(definition: str) -> None:
        Select(browser.find_element(By.CSS_SELECTOR, "#set-shovel select[name=vhost]")) \
            .select_by_value("/")
        fill_form(browser, "set-shovel", {"input[name=name]": name,
                                          "textarea[name=definition]": definition})
        submit(browser, "set-shovel")

    with amqp(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(name + "-src")
        ch.queue_declare(name + "-dest")
        try:
            login(browser, broker)
            go(browser, "#/shovels")
            WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "set-shovel"))
            set_shovel('{"src-uri": "amqp://", "dest-uri": "amqp://"}')
            wait_text(browser, "#set-shovel-result .error",
                      r"^Setting the shovel failed: 400 Validation failed Must specify "
                      r"'src-exchange' or 'src-queue'$")
            assert defined() == 404
            set_shovel(json.dumps({"src-uri": "amqp://", "src-queue": name + "-src",
                                   "dest-uri": "amqp://", "dest-queue": name + "-dest"}))
            wait_text(browser, "#set-shovel-result", rf"^Set the shovel '{name}'\.$")
            wait_text(browser, f"#shovels tr[data-name='{name}'] .col-state", r"^running$")
            wait_text(browser, f"#shovels tr[data-name='{name}'] .col-source",
                      rf"^amqp:// {name}-src$")
            for i in range(3):
                ch.basic_publish("", name + "-src", f"m{i}".encode())
            wait_until(lambda: queue_depth(broker, name + "-dest") == 3)
            delete_row(browser, "shovels", name, "Restart")
            wait_text(browser, "#shovels-result", rf"^Restarted the shovel '{name}'\.$")
            delete_row(browser, "shovels", name, "Delete")
            wait_text(browser, "#shovels-result", rf"^Deleted the shovel '{name}'\.$")
            WebDriverWait(browser, WAIT).until(lambda d: not row(d, "shovels", name))
            assert defined() == 404
            assert_no_console_errors(browser, broker,
                                     answered={f"/api/parameters/shovel/%2F/{name}": 400})
        finally:
            api.request("DELETE", f"/api/parameters/shovel/%2F/{name}", "guest", "guest")
            ch.queue_delete(name + "-src")
            ch.queue_delete(name + "-dest")


def test_the_federation_page_sets_an_upstream_and_shows_restarts_its_link(browser, broker):
    """An upstream set on the page (another vhost of this broker) feeds an exchange a policy
    federates: its link shows running and moves a pika publisher's message; a refused
    upstream shows the broker's reason; Restart and Delete act on their rows."""
    name = f"dash-fed-{uuid.uuid4().hex[:8]}"
    up_vhost = name + "-up"
    api = mgmt(broker)

    def set_upstream(value: str) -> None:
        Select(browser.find_element(By.CSS_SELECTOR, "#set-upstream select[name=vhost]")) \
            .select_by_value("/")
        fill_form(browser, "set-upstream", {"input[name=name]": name,
                                            "textarea[name=value]": value})
        submit(browser, "set-upstream")

    assert api.request("PUT", f"/api/vhosts/{up_vhost}", "guest", "guest", body={})[0] == 201
    with amqp(broker) as conn:
        ch = conn.channel()
        ch.exchange_declare(name, "fanout")
        ch.queue_declare(name)
        ch.queue_bind(name, name)
        try:
            assert api.request("PUT", f"/api/policies/%2F/{name}", "guest", "guest", body={
                "pattern": f"^{name}$", "apply-to": "exchanges",
                "definition": {"federation-upstream": name}})[0] == 201
            login(browser, broker)
            go(browser, "#/federation")
            WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "set-upstream"))
            set_upstream('{"max-hops": 1}')
            wait_text(browser, "#set-upstream-result .error",
                      r'^Setting the upstream failed: 400 Validation failed Key "uri" not '
                      rf"found in {name}$")
            set_upstream(json.dumps({"uri": f"amqp://guest:guest@127.0.0.1:{broker.port}/"
                                            f"{up_vhost}"}))
            wait_text(browser, "#set-upstream-result", rf"^Set the upstream '{name}'\.$")
            wait_text(browser, f"#federation-upstreams tr[data-name='{name}'] .col-uri",
                      rf"^amqp://guest:guest@127\.0\.0\.1:{broker.port}/{up_vhost}$")
            wait_text(browser, f"#federation-links tr[data-name='{name}'] .col-state",
                      r"^running$", timeout=30)

            def moved() -> bool:        # published upstream until the link has bound
                with amqp(broker, vhost=up_vhost) as up:
                    up.channel().basic_publish(name, "", b"over the link")
                return bool(queue_depth(broker, name))
            wait_until(moved)
            delete_row(browser, "federation-links", name, "Restart")
            wait_text(browser, "#federation-result", rf"^Restarted the link of exchange "
                                                     rf"'{name}'\.$")
            delete_row(browser, "federation-upstreams", name, "Delete")
            wait_text(browser, "#federation-result", rf"^Deleted the upstream '{name}'\.$")
            WebDriverWait(browser, WAIT).until(
                lambda d: not row(d, "federation-links", name)
                and not row(d, "federation-upstreams", name))
            assert_no_console_errors(browser, broker, answered={
                f"/api/parameters/federation-upstream/%2F/{name}": 400})
        finally:
            api.request("DELETE", f"/api/policies/%2F/{name}", "guest", "guest")
            api.request("DELETE", f"/api/parameters/federation-upstream/%2F/{name}", "guest",
                        "guest")
            api.request("DELETE", f"/api/vhosts/{up_vhost}", "guest", "guest")
            ch.queue_delete(name)
            ch.exchange_delete(name)


def fill_form(driver, form_id: str, values: dict) -> None:
    """Type ``values`` (css under the form -> text) into the form, clearing each first."""
    for css, text in values.items():
        box = driver.find_element(By.CSS_SELECTOR, f"#{form_id} {css}")
        box.clear()
        box.send_keys(text)


def test_the_admin_page_adds_a_user_a_vhost_and_a_permission_a_pika_client_then_uses(
        browser, broker):
    """A user, a virtual host and a permission made on the Admin page let a pika client in
    and work there; a topic permission set there narrows its routing keys on amq.topic until
    its Clear button; the user's Delete button shuts it out again."""
    user, vhost = f"dash-user-{uuid.uuid4().hex[:8]}", f"dash-vh-{uuid.uuid4().hex[:8]}"
    api = mgmt(broker)

    def status(path: str) -> int:
        return api.request("GET", path, "guest", "guest")[0]

    def as_user() -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(
            broker.host, broker.port, vhost, pika.PlainCredentials(user, "s3cret")))

    try:
        login(browser, broker)
        go(browser, "#/admin")
        WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "set-permission"))
        fill_form(browser, "add-user", {"input[name=name]": user})
        submit(browser, "add-user")             # no password and no tick: not sent
        wait_text(browser, "#add-user-result .error", r"^Give a password, or tick No password\.$")
        assert status(f"/api/users/{user}") == 404
        fill_form(browser, "add-user", {"input[name=password]": "s3cret",
                                        "input[name=tags]": "management"})
        submit(browser, "add-user")
        wait_text(browser, "#add-user-result", rf"^Added the user '{user}'\.$")
        wait_text(browser, f"#users tr[data-name='{user}'] .col-tags", r"^management$")
        fill_form(browser, "add-vhost", {"input[name=name]": vhost})
        submit(browser, "add-vhost")
        wait_text(browser, "#add-vhost-result", rf"^Added the virtual host '{vhost}'\.$")

        def offered(d):                         # the form is rebuilt with the new names
            try:
                Select(d.find_element(By.CSS_SELECTOR, "#set-permission select[name=user]")) \
                    .select_by_value(user)
                Select(d.find_element(By.CSS_SELECTOR, "#set-permission select[name=vhost]")) \
                    .select_by_value(vhost)
                return True
            except Exception:
                return False
        WebDriverWait(browser, WAIT).until(offered)
        submit(browser, "set-permission")
        wait_text(browser, "#set-permission-result",
                  rf"^Set the permissions of '{user}' in '{vhost}'\.$")
        wait_text(browser, f"#permissions tr[data-name='{user}'] .col-write", r"^\.\*$")

        with as_user() as conn:                 # in, and working, in the new vhost
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare("admin-made")
            ch.basic_publish("", "admin-made", b"hello")
            assert ch.basic_get("admin-made", auto_ack=True)[2] == b"hello"

        def topic_publish(key: str) -> int:
            """200, or the code the broker closed the channel with."""
            with as_user() as conn:
                ch = conn.channel()
                ch.confirm_delivery()
                try:
                    ch.basic_publish("amq.topic", key, b"m")
                    return 200
                except pika.exceptions.ChannelClosedByBroker as exc:
                    return exc.reply_code

        def topic_offered(d):
            try:
                for name, value in (("user", user), ("vhost", vhost)):
                    Select(d.find_element(By.CSS_SELECTOR,
                                          f"#set-topic-permission select[name={name}]")) \
                        .select_by_value(value)
                return True
            except Exception:
                return False
        WebDriverWait(browser, WAIT).until(topic_offered)
        fill_form(browser, "set-topic-permission", {"input[name=write]": "^ok\\."})
        submit(browser, "set-topic-permission")
        wait_text(browser, "#set-topic-permission-result",
                  rf"^Set the topic permission of '{user}' on 'amq.topic' in '{vhost}'\.$")
        wait_text(browser, f"#topic-permissions tr[data-name='{user}/amq.topic'] .col-write",
                  r"^\^ok\\\.$")
        assert (topic_publish("ok.1"), topic_publish("other.1")) == (200, 403)
        delete_row(browser, "topic-permissions", f"{user}/amq.topic")
        wait_text(browser, "#admin-result",
                  rf"^Cleared the topic permission of '{user}' on 'amq.topic' in '{vhost}'\.$")
        assert topic_publish("other.1") == 200

        delete_row(browser, "users", user)
        wait_text(browser, "#admin-result", rf"^Deleted the user '{user}'\.$")
        assert status(f"/api/users/{user}") == 404
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            as_user()
        delete_row(browser, "vhosts", vhost)
        wait_text(browser, "#admin-result", rf"^Deleted the virtual host '{vhost}'\.$")
        assert status(f"/api/vhosts/{q(vhost)}") == 404
        assert_no_console_errors(browser, broker)
    finally:
        api.request("DELETE", f"/api/users/{user}", "guest", "guest")
        api.request("DELETE", f"/api/vhosts/{q(vhost)}", "guest", "guest")


def test_the_exchange_form_offers_the_types_the_broker_has(browser, broker):
    """The declare form lists /api/overview's exchange types: an x-consistent-hash exchange
    made there routes a pika client's publish to the queue bound with a weight."""
    name = f"dash-chash-{uuid.uuid4().hex[:8]}"
    login(browser, broker)
    go(browser, "#/exchanges")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "declare-exchange"))
    fill_form(browser, "declare-exchange", {"input[name=name]": name})
    Select(browser.find_element(By.CSS_SELECTOR, "#declare-exchange select[name=type]")) \
        .select_by_value("x-consistent-hash")
    submit(browser, "declare-exchange")
    wait_text(browser, "#declare-exchange-result", rf"^Declared exchange '{name}'\.$")
    with amqp(broker) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, name, "5")
        ch.basic_publish(name, "any key", b"by weight", mandatory=True)
        assert ch.basic_get(q, auto_ack=True)[2] == b"by weight"
        ch.exchange_delete(name)
    assert_no_console_errors(browser, broker)
