"""Consumer groups: Kafka's model over AMQP 0-9-1 (issue 10), the pure core.

Four small modules, no I/O but the offset file, importing nothing of ours above storage/:

    assignor.py      assign(partitions, member keys, current) -> target: KIP-848's uniform,
                     sticky assignor (balanced, minimal movement, deterministic)
    coordinator.py   ConsumerGroup: one group's membership state machine; inputs join / leave /
                     revoked / tick / set_partitions with an explicit `now`, outputs the actions
                     Revoke(partition, member, epoch) and Assign(partition, member, epoch)
    commits.py       CommitTracker: the committed offset (= next offset to read) of one group on
                     one partition, from deliveries and acks in any order
    offset_store.py  OffsetStore: the committed offsets of every group on one partition, a
                     compacted log in the partition's directory, written in the commit round

How the wiring should use them (who calls what, in which process)
-----------------------------------------------------------------
Supervisor (owns membership; one ConsumerGroup per (vhost, topic or stream, group name),
created at the first join, with the topic's partition numbers):
  * front-end -> supervisor, new contract messages: a member joins on basic.consume with
    `x-consumer-group` (member id unique while it lives, e.g. "<frontend>/<conn>/<channel>/<ctag>";
    `x-group-instance-id` as instance id) -> `join(member, instance_id, now)`; it leaves on
    basic.cancel -> `leave(member, now, permanent=True)`, on channel or connection loss ->
    `leave(member, now)` (a static member keeps its partitions for the session timeout); a
    front-end process that dies -> `leave` for each of its members. InstanceIdInUse refuses the
    consume (the front-end turns it into a channel error).
  * every Assign / Revoke is sent to the worker that owns the partition (placement), with the
    epoch; the worker's answer to a Revoke, "revocation complete", becomes
    `revoked(member, partition, epoch)`; actions returned by that call go out in turn.
  * timers: after every call, (re)arm one loop timer at `group.deadline()` that calls
    `tick(now)` (loop.time() as `now`). Partitions added to a topic -> `set_partitions`.
  * a restarted worker: re-send Assign (same member, same epoch) for the partitions it owns that
    the group is delivering, and treat its revocations in progress as complete (`revoked`).
  * offset resets (management API / CLI, as `kafka-consumer-groups --reset-offsets`): allowed
    only while `group.is_empty()` (no group, or no member connected nor reserved); the
    supervisor resolves earliest/latest/time with the worker and has it call `reset`.

Worker (owns the partition, so everything about its offsets): one OffsetStore per partition,
opened with its MessageStore (same directory, same fsync policy), and a CommitTracker per
(group, partition) while the group has the partition assigned here.
  * Assign(p, member, epoch): if a tracker exists (an earlier owner's grace ran out), call its
    `revoke()` and forget that member's deliveries (its late acks no longer commit), and set
    its `no_ack` to the new member's consume. Otherwise
    create one: `CommitTracker(store.get(group) or <the consume's x-stream-offset resolved on the
    log, default next>, log.start_offset, no_ack=...)`; `fell_back_from` not None -> count and
    log. Deliver from `next_offset()` to the member with credit (prefetch), headers
    `x-partition` and `x-stream-offset`; `deliver(offset)` each; `skip_to` past filtered reads.
  * acks / rejects from the front-end -> `ack(offsets)`; nack or reject with requeue ->
    `requeue(offsets)`. After a batch, `take_commit()` -> `store.commit(group, offset)` and
    mark the partition dirty in the Committer, whose round calls `store.flush()` on the loop
    and `store.sync()` in its thread beside the MessageStore's (one more descriptor per queue:
    worker/committer.FILES_PER_QUEUE).
  * Revoke(p, member, epoch): stop new deliveries to the member on p; once
    `tracker.in_flight() == 0` (requeued offsets do not count: they stay behind the commit for
    the next owner), call `tracker.revoke()` and tell the supervisor the revocation of (p,
    member, epoch) is complete. A member whose connection is gone settles at once.
  * retention: after deleting segments, `clamp(log.start_offset)` every tracker (count, log).
  * lag per (group, partition) = log end offset - committed, from `store.in_file()` (groups with
    no member included), reported for the operations issue.
"""
