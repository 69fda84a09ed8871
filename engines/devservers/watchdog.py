"""The watchdog of one server's process group: stops the group once the process that
started it is gone, however it went (SIGKILL included), so no server outlives it.

``python -m engines.devservers.watchdog PGID`` with its standard input the read end of
a pipe whose only write end the starting process holds (:mod:`.process`): end of file
there means that process closed it (it stopped the group itself) or died. Then the
group gets SIGTERM, and SIGKILL after a grace period. The whole group, not just its
leader: a launcher script's children (the Firestore emulator's Java) outlive a signal
sent to the script alone, and a parent-death signal (Linux's ``PR_SET_PDEATHSIG``)
reaches only the leader. The watchdog runs in a session of its own, so a Ctrl-C or a
hang-up on the terminal does not end it before the servers.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from engines.devservers.process import group_alive, signal_group

GRACE_SECONDS = 10.0


def watch(pgid: int, fd: int = 0, grace: float = GRACE_SECONDS) -> None:
    """Wait for end of file on ``fd``, then stop process group ``pgid``."""
    while True:
        try:
            if not os.read(fd, 4096):
                break
        except InterruptedError:  # pragma: no cover - retried by Python itself
            continue
    if not group_alive(pgid):
        return  # stopped already (the usual case: the parent stopped it, then let go)
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
