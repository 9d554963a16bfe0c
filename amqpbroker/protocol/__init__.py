"""AMQP 0-9-1 as a state machine with no I/O (``connection.py``); pamqp decodes the cold
path, through our linear field-table decoder (``fieldtable.py``)."""
from . import fieldtable

fieldtable.install()
