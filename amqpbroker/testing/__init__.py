"""Test tools users can reuse: a broker process on a free port, a fault proxy, a byte feeder."""
from .broker import LAYOUTS, BrokerProcess
from .feeder import byte_chunks, feed, frames
from .proxy import FaultProxy

__all__ = ["LAYOUTS", "BrokerProcess", "FaultProxy", "byte_chunks", "feed", "frames"]
