"""moto_server, one request at a time: ``python -m engines.devservers.moto_serial HOST PORT``.

moto's DynamoDB checks a ``TransactWriteItems``' conditions and then writes, without a
lock, on a threaded server: two concurrent transactions creating the same item can both
pass their ``attribute_not_exists`` check, and the second overwrites the first. Real
DynamoDB isolates them (that is what an append's one-winner-per-seq rests on). Taking
requests one at a time gives the same here; the server stays threaded, so many
keep-alive connections are still served.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with lock:
            return list(app(environ, start_response))

    run_simple(host, port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
