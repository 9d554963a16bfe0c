"""``python -m amqpbroker.frontend SPEC``: the frontend process the supervisor starts (see ``main.py``)."""
import sys

from .main import main

sys.exit(main())
