"""The cluster: nodes that coordinate through etcd (docs/CLUSTER.md; DESIGN.md section 5).

Runs in the supervisor, and only with ``serve --cluster URL``; without it nothing here is
imported and the broker is a single node. Step 1 (this package today): ``etcd`` (the client),
``membership`` (lease, registration, the mirror of etcd, fencing), ``controller`` (the
election and the live-node set), ``node`` (all of it for one broker process). Metadata in
etcd, placement, forwarding and replication come next, as docs/CLUSTER.md lays out.
"""
