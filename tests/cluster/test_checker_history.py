"""The checker's judgement (``amqpbroker.testing.history.check``) over crafted histories: a
clean one passes, and each kind of violation is caught and named, while what the rules allow
(a flagged redelivery, a nacked or unconfirmed message delivered or not) is not counted."""
import json

from amqpbroker.testing.history import check, load


class History(list):
    """A history built event by event, with increasing times."""

    def add(self, ev, **fields):
        self.append({"t": float(len(self)), "ev": ev, **fields})
        return self

    def publish(self, key, seq, outcome="confirm", node="n1"):
        mid = f"{key}:{seq}"
        self.add("publish", p=0, id=mid, key=key, seq=seq, node=node)
        if outcome:
            self.add(outcome, id=mid, **({"why": "timeout"} if outcome == "unknown" else {}))
        return mid

    def deliver(self, mid, c="c0.1", redelivered=False, ack=True):
        self.add("deliver", c=c, id=mid, node="n2", redelivered=redelivered)
        if ack:
            self.add("ack", c=c, id=mid)
        return self


def clean():
    h = History()
    ids = [h.publish("a", s) for s in (1, 2, 3)] + [h.publish("b", s) for s in (1, 2)]
    for mid in ids:
        h.deliver(mid)
    return h


def test_a_clean_history_passes_and_counts_everything():
    v = check(clean())
    assert v.ok, v.summary()
    assert (v.published, v.confirmed, v.delivered, v.deliveries) == (5, 5, 5, 5)
    assert v.summary().startswith("OK: lost 0, duplicated 0, reordered 0, phantom 0, stalled 0")


def test_a_confirmed_message_never_delivered_is_lost():
    h = History()
    a1, a2 = h.publish("a", 1), h.publish("a", 2)
    h.deliver(a1)
    v = check(h)
    assert not v.ok
    assert v.lost == [a2]
    assert "lost 1" in v.summary()


def test_a_confirm_that_arrives_after_the_delivery_still_counts():
    h = History()
    h.add("publish", p=0, id="a:1", key="a", seq=1, node="n1")
    h.deliver("a:1")
    h.add("confirm", id="a:1")
    h.add("publish", p=0, id="a:2", key="a", seq=2, node="n1")
    h.add("confirm", id="a:2")
    v = check(h)
    assert v.lost == ["a:2"] and v.confirmed == 2 and v.maybe_delivered == 0


def test_a_second_delivery_without_the_redelivered_flag_is_a_duplicate():
    h = clean()
    h.deliver("a:2", c="c1.2")
    v = check(h)
    assert not v.ok
    assert v.duplicated == ["a:2"]
    assert v.redelivered_after_ack == 1


def test_a_flagged_redelivery_seen_before_the_first_unflagged_delivery_is_allowed():
    """A leader delivers a:2 as it is cut off (the segment waits in TCP until the cut heals);
    the new leader redelivers it, flagged, to another consumer, who sees it first: one
    unflagged delivery, in whatever order the clients read them, is no duplicate. A second
    unflagged one is."""
    h = History()
    h.add("publish", p=0, id="a:1", key="a", seq=1, node="n1")
    h.add("confirm", id="a:1")
    h.deliver("a:1", c="c1.2", redelivered=True)
    h.deliver("a:1", c="c0.1")
    assert check(h).ok
    h.deliver("a:1", c="c0.2")
    assert check(h).duplicated == ["a:1"]


def test_a_flagged_redelivery_is_allowed():
    h = History()
    a1 = h.publish("a", 1)
    h.deliver(a1, ack=False).deliver(a1, c="c0.2", redelivered=True)
    v = check(h)
    assert v.ok, v.summary()
    assert v.deliveries == 2 and v.delivered == 1


def test_keys_out_of_publish_order_in_one_session_are_reordered():
    h = History()
    a1, a2, a3 = (h.publish("a", s) for s in (1, 2, 3))
    h.deliver(a1).deliver(a3).deliver(a2)
    v = check(h)
    assert not v.ok
    assert v.reordered == [("c0.1", "a", 3, 2)]


def test_order_is_per_session_and_per_key():
    h = History()
    a1, a2, b1, b2 = h.publish("a", 1), h.publish("a", 2), h.publish("b", 1), h.publish("b", 2)
    # two sessions each see their share in order; keys interleave freely
    h.deliver(b1, c="x").deliver(a2, c="y").deliver(a1, c="x").deliver(b2, c="y")
    assert check(h).ok


def test_a_requeued_message_delivered_later_flagged_is_not_reordered():
    h = History()
    a1, a2 = h.publish("a", 1), h.publish("a", 2)
    h.deliver(a1, ack=False).deliver(a2).deliver(a1, redelivered=True)
    assert check(h).ok


def test_nacked_and_unknown_messages_may_or_may_not_arrive():
    h = History()
    n1, u1 = h.publish("a", 1, outcome="nack"), h.publish("a", 2, outcome="unknown")
    u2 = h.publish("a", 3, outcome=None)            # no answer at all before the end
    c4 = h.publish("a", 4)
    h.deliver(u1).deliver(c4)
    v = check(h)
    assert v.ok, v.summary()
    assert (v.nacked, v.unknown, v.maybe_delivered) == (1, 2, 1)
    # an unconfirmed message delivered twice, or out of order, is not held against the broker
    h.deliver(u1).deliver(n1)
    assert check(h).ok
    assert u2 not in check(h).lost


def test_a_delivery_of_something_never_published_is_a_phantom():
    h = clean()
    h.deliver("z:9")
    v = check(h)
    assert not v.ok and v.phantom == ["z:9"]


def test_a_history_file_round_trips(tmp_path):
    h = clean()
    h.deliver("a:2", c="c1.2")
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in h))
    assert check(load(str(path))).duplicated == ["a:2"]


def test_consumers_that_stalled_before_the_final_read_are_a_liveness_violation():
    h = History()
    a1, a2 = h.publish("a", 1), h.publish("a", 2)
    h.deliver(a1)
    h.add("stalled", views="n1: leader amqpbroker@n1 messages 1 unacked 0 consumers 0")
    h.deliver(a2, c="c0.2")                 # the fresh session's final read got it
    v = check(h)
    assert not v.ok and not v.lost
    assert v.stalled == ["n1: leader amqpbroker@n1 messages 1 unacked 0 consumers 0"]
    assert "stalled 1" in v.summary()


def replica(node, role, hw, crc, start=0):
    return {"node": node, "role": role, "leader_epoch": 2, "log_start_offset": start,
            "log_end_offset": hw, "high_watermark": hw, "crc32c": crc}


def test_replicas_whose_logs_differ_up_to_the_high_watermark_diverged():
    same = clean().add("replicas", states=[replica("n1", "leader", 5, 77),
                                           replica("n2", "follower", 5, 77),
                                           replica("n3", "follower", 5, 77)])
    v = check(same)
    assert v.ok and (v.replicas_compared, v.uncompared) == (3, 0), v.summary()
    h = clean().add("replicas", states=[replica("n1", "leader", 5, 77),
                                        replica("n2", "follower", 5, 78),
                                        replica("n3", "follower", 4, 12)])
    v = check(h)
    assert not v.ok and v.diverged == [(0, 5, {"n1": 77, "n2": 78})]
    assert (v.replicas_compared, v.uncompared) == (2, 1)
    assert "diverged 1 (2 replicas compared, 1 not)" in v.summary()
    # another log start (segments deleted at another time): compared within its group only
    h = clean().add("replicas", states=[replica("n1", "leader", 5, 77),
                                        replica("n2", "follower", 5, 90, start=3)])
    assert check(h).ok


def test_two_nodes_leading_in_one_epoch_is_a_split_brain():
    h = clean().add("leader", node="n1", epoch=0).add("leader", node="n2", epoch=1)
    assert check(h).ok
    h.add("leader", node="n1", epoch=2).add("leader", node="n3", epoch=2)
    v = check(h)
    assert not v.ok and v.split_brain == [("", 2, ["n1", "n3"])]
    assert "split-brain 1" in v.summary()


def test_a_topics_partitions_each_have_their_own_epochs():
    """Partition 0 led by n1 and partition 1 by n2, both at epoch 0: two leaders, two
    queues, no split brain; two nodes on one partition's epoch 1 are one."""
    h = clean().add("leader", queue="t-0", node="n1", epoch=0)
    h.add("leader", queue="t-1", node="n2", epoch=0)
    assert check(h).ok
    h.add("leader", queue="t-1", node="n2", epoch=1).add("leader", queue="t-1", node="n3",
                                                         epoch=1)
    v = check(h)
    assert not v.ok and v.split_brain == [("t-1", 1, ["n2", "n3"])]


def test_a_groups_rereads_are_counted_not_duplicates_and_first_deliveries_stay_in_order():
    """With consumer groups a rebalance or a failover re-reads from the committed offset,
    unflagged: a re-read is counted and restarts the key's order; a message delivered for
    the first time out of order is still reordered, one never delivered still lost."""
    def history(groups):
        h = History()
        if groups:
            h.add("workload", groups=True)
        a = [h.publish("a", s) for s in (1, 2, 3, 4)]
        h.deliver(a[0]).deliver(a[1], ack=False)
        h.deliver(a[1], c="c1.2").deliver(a[2], c="c1.2")      # re-read from the commit
        h.deliver(a[3], c="c1.2")
        return h, a
    h, _ = history(groups=False)
    assert check(h).duplicated == ["a:2"]                       # a queue: a duplicate
    h, a = history(groups=True)
    v = check(h)
    assert v.ok and v.reread == 1, v.summary()
    assert "re-read by the group 1" in v.summary()
    h.deliver(a[1], c="c1.2")                                   # a re-read: order restarts
    h.deliver(a[3], c="c1.2")
    assert check(h).ok
    b = [h.publish("b", s) for s in (1, 2, 3)]
    h.deliver(b[1], c="c1.2").deliver(b[0], c="c1.2")           # first deliveries out of order
    v = check(h)
    assert v.reordered == [("c1.2", "b", 2, 1)] and v.lost == ["b:3"]


def test_an_idempotent_producers_retry_counts_its_confirm_and_a_second_copy_is_a_duplicate():
    """A message without an answer (or nacked) is published again until confirmed: the
    retry's confirm counts, so the message must be delivered once; stored twice (two
    unflagged deliveries) is a duplicate."""
    h = History()
    h.add("workload", idempotent=True)
    h.publish("a", 1, outcome="unknown")
    h.add("publish", p=0, id="a:1", key="a", seq=1, node="n2")      # again, elsewhere
    h.add("nack", id="a:1")
    h.add("publish", p=0, id="a:1", key="a", seq=1, node="n3")
    h.add("confirm", id="a:1")
    h.deliver("a:1")
    v = check(h)
    assert v.ok and (v.confirmed, v.unknown, v.nacked) == (1, 0, 0), v.summary()
    h.deliver("a:1", c="c1.2")
    assert check(h).duplicated == ["a:1"]
