"""Test tools users can reuse: a broker process on a free port, a fault proxy, a byte feeder."""
from .broker import BrokerProcess

__all__ = ["BrokerProcess"]
