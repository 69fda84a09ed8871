"""``python -m tests.e2e.kafka.feed.cli ARGS``: the ``engines`` command, with the consumer
group's assignments logged.

The CLI configures no logging, so aiokafka's INFO lines ("Setting newly assigned
partitions ...") go nowhere; the tests of a group split read them from the log of each
``engines projections run`` process. Nothing else differs from ``engines ARGS``.
"""

from __future__ import annotations

import logging
import sys

from engines.cli import main

ASSIGNED = "Setting newly assigned partitions"
"""What aiokafka logs when the group gives this member its partitions."""

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.INFO)
    sys.exit(main())
