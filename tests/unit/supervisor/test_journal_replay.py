"""The definitions journal's file and replay (``supervisor/journal.py``), on real files."""
from __future__ import annotations

import json

from amqpbroker.supervisor.definitions import read_definitions
from amqpbroker.supervisor.journal import DefinitionsJournal, DefinitionsState


def q(name, vhost="/"):
    return {"name": name, "vhost": vhost, "durable": True, "auto_delete": False,
            "arguments": {}}


def x(name, vhost="/"):
    return {"name": name, "vhost": vhost, "type": "direct", "durable": True,
            "auto_delete": False, "internal": False, "arguments": {}}


def bd(source, dest, key="", dtype="queue", vhost="/"):
    return {"source": source, "vhost": vhost, "destination": dest, "destination_type": dtype,
            "routing_key": key, "arguments": {}}


CHANGES = [
    ["vhost+", {"name": "v", "description": "", "tags": [], "limits": {"max-queues": 3}}],
    ["queue+", q("q1")], ["queue+", q("q2")], ["exchange+", x("x")], ["exchange+", x("y")],
    ["binding+", bd("x", "q1", "a")], ["binding+", bd("x", "y", "b", "exchange")],
    ["binding+", bd("y", "q2", "c")],
    ["exchange-", "/", "x"],                 # takes x->q1 and x->y with it
    ["exchange+", x("x")], ["binding+", bd("x", "q2", "new")],
    ["queue-", "/", "q2"],                   # takes x->q2 and y->q2
    ["queue+", q("q3", "v")], ["exchange+", x("xv", "v")], ["vhost-", "v"],
    ["tombstone+", "d1"], ["tombstone+", "d2"], ["tombstone-", "d1"],
]


def test_deletes_take_what_the_object_owned_and_replay_is_idempotent():
    state = DefinitionsState({"vhosts": [{"name": "/"}]})
    state.replay(CHANGES)
    doc = state.document()
    assert {v["name"] for v in doc["vhosts"]} == {"/"}
    assert [e["name"] for e in doc["exchanges"]] == ["y", "x"]
    assert [e["name"] for e in doc["queues"]] == ["q1"]
    assert doc["bindings"] == []
    assert doc["amqpbroker_deleted_queues"] == ["d2"]
    again = DefinitionsState(json.loads(json.dumps(doc)))
    again.replay(CHANGES)                    # a compaction's snapshot, then its old journal
    assert again.document() == doc


def test_journal_file_reopens_with_its_entries_and_cuts_a_torn_tail(tmp_path):
    path = str(tmp_path / "definitions.journal")
    j = DefinitionsJournal(path)
    j.append(CHANGES[:3])
    j.append(CHANGES[3:5])
    good = j.size
    j.append(CHANGES[5:])
    j.close()
    with open(path, "r+b") as f:
        f.truncate(good + 11)                # the last entry torn
    j = DefinitionsJournal(path)
    assert j.changes == CHANGES[:5]
    assert j.truncated_bytes == 11 and j.size == good
    j.append(CHANGES[5:6])                   # appends after the cut
    j.close()
    assert DefinitionsJournal(path).changes == CHANGES[:6]


def test_read_definitions_is_snapshot_plus_journal(tmp_path):
    snap = tmp_path / "definitions.json"
    snap.write_text(json.dumps({"vhosts": [{"name": "/"}], "queues": [q("old")],
                                "parameters": [{"vhost": "/", "component": "vhost-limits",
                                                "name": "limits",
                                                "value": {"max-connections": 5}}]}))
    j = DefinitionsJournal(str(tmp_path / "definitions.journal"))
    j.append([["queue-", "/", "old"], ["queue+", q("new")]])
    j.close()
    doc = read_definitions(str(snap))
    assert [e["name"] for e in doc["queues"]] == ["new"]
    assert doc["vhosts"][0]["limits"] == {"max-connections": 5}


def test_policies_replay_and_go_with_their_vhost():
    def pol(name, vhost="/"):
        return {"vhost": vhost, "name": name, "pattern": ".", "apply-to": "all",
                "definition": {"max-length": 1}, "priority": 0}
    changes = [["policy+", pol("a")], ["policy+", pol("b")], ["policy-", "/", "a"],
               ["vhost+", {"name": "v", "description": "", "tags": [], "limits": {}}],
               ["policy+", pol("c", "v")], ["vhost-", "v"],
               ["policy+", {**pol("b"), "priority": 3}]]
    state = DefinitionsState({"vhosts": [{"name": "/"}]})
    state.replay(changes)
    doc = state.document()
    assert doc["policies"] == [{**pol("b"), "priority": 3}]
    again = DefinitionsState(json.loads(json.dumps(doc)))
    again.replay(changes)
    assert again.document() == doc
