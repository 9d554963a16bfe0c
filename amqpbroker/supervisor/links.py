"""A link between two processes: two unnamed shared-memory rings and their four eventfds.

``make_link`` returns the descriptors for each side, in the order ``attach`` expects:
(out ring, out data fd, out space fd, in ring, in data fd, in space fd). The creator sends
them (``ControlChannel.send_fds`` or ``pass_fds``) and closes its own copies; the segments
have no name, so they vanish when the last process holding them exits.
"""
from __future__ import annotations

import os

from shm.ring import Ring
from shm.wakeup import make_eventfds

from ..partition.ringlink import RingEndpoint

RING_BYTES = 8 << 20          # per direction; records up to 4 MiB, bigger ones are fragmented


def make_link() -> tuple[list[int], list[int]]:
    """(front-end side fds, worker side fds); the caller closes both lists after sending."""
    d_fw, s_fw = make_eventfds()          # front-end -> worker ring
    d_wf, s_wf = make_eventfds()          # worker -> front-end ring
    fw, fw_fd = Ring.create_unnamed(RING_BYTES)
    wf, wf_fd = Ring.create_unnamed(RING_BYTES)
    fw.close()
    wf.close()
    front = [fw_fd, d_fw, s_fw, wf_fd, d_wf, s_wf]
    worker = [os.dup(wf_fd), os.dup(d_wf), os.dup(s_wf), os.dup(fw_fd), os.dup(d_fw),
              os.dup(s_fw)]
    return front, worker


def attach(fds: list[int], on_batch, *, yield_after=None) -> RingEndpoint:
    """Map one side of a link (fds from ``make_link``) and start reading it."""
    out_fd, out_data, out_space, in_fd, in_data, in_space = fds
    out_ring = Ring.attach_fd(out_fd, data_fd=out_data, space_fd=out_space)
    in_ring = Ring.attach_fd(in_fd, data_fd=in_data, space_fd=in_space)
    os.close(out_fd)
    os.close(in_fd)
    endpoint = RingEndpoint(out_ring, in_ring, on_batch, yield_after=yield_after)
    endpoint.eventfds = (out_data, out_space, in_data, in_space)
    endpoint.start()
    return endpoint


def close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
