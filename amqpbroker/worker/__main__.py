"""``python -m amqpbroker.worker SPEC``: the worker process the supervisor starts (see ``main.py``)."""
import sys

from .main import main

sys.exit(main())
