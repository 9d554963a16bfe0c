"""The counters of ``amqpbroker.stats``: what one call adds, confirms counted from the
``Confirms`` tracker's own actions (acks and nacks interleaved), and nothing counted with
statistics off. (Counts seen through real clients: tests/integration/test_metrics.py.)"""
from amqpbroker.config import Config
from amqpbroker.frontend.confirms import Confirms
from amqpbroker.stats.counters import CHANNEL_FIELDS, FrontendStats


class Host:
    """A partition host as ``Confirms`` sees one: a watermark and the numbers it refused."""

    def __init__(self):
        self.upto = 0
        self.refused: set = set()

    def reached(self, n):
        return n <= self.upto

    def take_nack(self, n):
        if n in self.refused:
            self.refused.discard(n)
            return True
        return False


def test_confirmed_counts_acks_not_nacks_whatever_the_multiple_runs():
    node = FrontendStats(Config())
    ch = node.channel()
    confirms, host = Confirms(), Host()
    for n in range(1, 11):
        confirms.insert([(host, n)])
    host.refused = {3, 7}
    host.upto = 5
    ch.on_confirms(confirms.take_settled())     # ack 1-2 (multiple), nack 3, ack 4-5
    assert ch.confirm == 4
    host.upto = 10
    ch.on_confirms(confirms.take_settled())     # ack 6, nack 7, ack 8-10
    assert ch.confirm == 8


def test_routed_and_exchange_counts_are_derived_from_the_unroutable_ones():
    node = FrontendStats(Config())
    ch = node.channel()
    a, b = object(), object()
    for ex, routed, mandatory in ((a, 1, False), (a, 2, False), (b, 0, True), (a, 0, False),
                                  (b, 1, True)):
        ch.on_publish(ex, routed, mandatory, 10)
    counts = dict(zip(CHANNEL_FIELDS, ch.values()))
    assert (counts["publish"], counts["routed"], counts["return_unroutable"],
            counts["drop_unroutable"]) == (5, 3, 1, 1)
    ch.on_close()
    assert node.exchange_in == {a: 3, b: 2}
    assert node.exchange_unrouted == {a: 1, b: 1}
    assert node.sizes[0] == 5 and node.size_sum == 50
    assert dict(zip(CHANNEL_FIELDS, node.closed_totals))["routed"] == 3


def test_statistics_off_counts_nothing_but_channels():
    node = FrontendStats(Config(collect_statistics="none"))
    ch = node.channel()
    ch.on_confirm_select()
    ch.on_publish(object(), 1, False, 10)
    ch.deliver_no_ack += 1                  # what the channel adds inline
    ch.redeliver += 1
    ch.on_ack(3)
    ch.on_close()
    assert set(ch.values()) == {0}
    assert node.sizes == [0] * len(node.sizes)
    assert (node.channels_opened, node.channels_closed) == (1, 1)


class Tags:
    """A channel as its counters see it: the next delivery tag."""
    next_tag = 1


def test_a_batch_of_fast_path_publishes_folds_into_the_histogram_and_exchange():
    node = FrontendStats(Config())
    chan = Tags()
    ch = node.channel(chan)
    a, b = object(), object()
    ch.on_publish(a, 1, False, 50)              # the first: through on_publish (dirty)
    ch.pending.extend([50, 150, 20_000, 150])   # the channel's fast path: appends
    assert node.dirty == [ch]
    ch.on_confirm_select()
    ch.on_publish(b, 1, False, 7)               # another exchange: a's batch folds
    ch.pending.append(7)
    assert node.exchange_in == {a: 5}
    node.fold_dirty()
    assert node.dirty == [] and ch.exchange is None and ch.pending == []
    assert node.exchange_in == {a: 5, b: 2}
    assert node.sizes[:4] == [4, 2, 0, 1] and node.size_sum == 20_414
    chan.next_tag = 8                           # 7 tags: 2 gets, 1 direct reply, 4 deliveries
    ch.on_get(False, False)
    ch.on_get(True, False)
    ch.direct += 1
    ch.deliver_no_ack += 1
    counts = dict(zip(CHANNEL_FIELDS, ch.values()))
    assert (counts["publish"], counts["publish_confirm"], counts["deliver"],
            counts["deliver_no_ack"], counts["get"], counts["get_no_ack"]) == (7, 2, 3, 1, 1, 1)


def test_a_closing_channel_counts_its_unfolded_publishes():
    node = FrontendStats(Config())
    ch = node.channel(Tags())
    ex = object()
    ch.on_publish(ex, 1, False, 10)
    ch.pending.extend([10, 10])
    ch.on_close()
    assert dict(zip(CHANNEL_FIELDS, node.closed_totals))["publish"] == 3
    assert node.exchange_in == {ex: 3} and node.sizes[0] == 3
    node.fold_dirty()                           # it was still listed: nothing twice
    assert node.exchange_in == {ex: 3} and node.sizes[0] == 3
