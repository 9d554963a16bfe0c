"""The routes a node's front-end processes forward by, sent as numbered changes.

The supervisor's ``Forwarder`` decides, after each change of the etcd view, which queues the
node forwards and to which node; its front-end processes must make the same choice
(``forward.FrontendForwarder``). The table was sent whole (``contract.Leaders``) on every
change: O(queues) of CPU per change on both ends (2.2 ms per message of 1,000 entries), so
a node loss that moves hundreds of leaders, one etcd event at a time, was quadratic.

Now the supervisor numbers its versions of the table (``RoutesTable``) and sends each
front-end the change from the version it was told before (``contract.LeadersChanged``: the
entries set and removed; the node list whole, it has a few entries). A front-end's copy
(``RoutesCopy``) applies a change only on top of the version before it: one that is older
than its own (a duplicate, or reordered behind a newer one) is dropped, one that skips a
version applies nothing and the front-end asks for the whole table
(``contract.LeadersWanted``). The whole table goes unasked to a front-end told nothing yet
(started, or restarted). The control channel is ordered and reliable, so a gap means a
restarted front-end or a bug: the versions make either harmless.
"""
from __future__ import annotations

from .. import contract as c


class RoutesTable:
    """The supervisor's table: (vhost, queue) -> the node it is forwarded to."""

    def __init__(self, node: str):
        self.node = node
        self.version = 0
        self.nodes: dict = {}               # node -> [host, cluster port, workers]
        self.leaders: dict[tuple[str, str], str] = {}
        self.change: c.LeadersChanged | None = None     # from version - 1 to version

    def update(self, nodes: dict, leaders: dict, queues=None) -> bool:
        """The table as it is now: ``leaders`` the whole, or, with ``queues`` ((vhost, name)
        pairs), the routes of those queues only (one absent from ``leaders`` is not
        forwarded; the others stay as they were). True when it changed (a new version)."""
        old = self.leaders
        set_ = [[vhost, name, node] for (vhost, name), node in leaders.items()
                if old.get((vhost, name)) != node]
        removed = [[vhost, name] for (vhost, name) in (old if queues is None else queues)
                   if (vhost, name) in old and (vhost, name) not in leaders]
        if not set_ and not removed and nodes == self.nodes:
            return False
        self.version += 1
        self.nodes = nodes
        if queues is None:
            self.leaders = leaders
        else:
            for vhost, name, node in set_:
                old[vhost, name] = node
            for vhost, name in removed:
                old.pop((vhost, name), None)
        self.change = c.LeadersChanged(version=self.version, nodes=nodes, set=set_,
                                       removed=removed)
        return True

    def whole(self) -> c.Leaders:
        return c.Leaders(node=self.node, version=self.version, nodes=self.nodes,
                         leaders=[[vhost, name, node]
                                  for (vhost, name), node in self.leaders.items()])

    def message_for(self, told: int | None):
        """What a front-end told up to version ``told`` (None: nothing yet) is sent now, or
        None when it is up to date."""
        if told == self.version:
            return None
        if told is not None and told == self.version - 1 and self.change is not None:
            return self.change
        return self.whole()


class RoutesCopy:
    """A front-end's copy of the supervisor's table."""

    def __init__(self):
        self.version: int | None = None     # None: nothing applied yet
        self.node = ""
        self.nodes: dict = {}
        self.leaders: dict[tuple[str, str], str] = {}

    def apply_whole(self, m: c.Leaders) -> None:
        self.version = m.version
        self.node = m.node
        self.nodes = m.nodes
        self.leaders = {(vhost, name): node for vhost, name, node in m.leaders}

    def apply_change(self, m: c.LeadersChanged):
        """The queues (vhost, name) whose route changed, [] for an old change (dropped), or
        None when ``m`` does not follow this copy's version: nothing is applied, the whole
        table is wanted."""
        if self.version is None or m.version > self.version + 1:
            return None
        if m.version <= self.version:
            return []
        self.version = m.version
        self.nodes = m.nodes
        changed = []
        for vhost, name, node in m.set:
            self.leaders[vhost, name] = node
            changed.append((vhost, name))
        for vhost, name in m.removed:
            self.leaders.pop((vhost, name), None)
            changed.append((vhost, name))
        return changed
