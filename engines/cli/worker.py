"""``engines worker``: consume the Kafka command bus until Ctrl-C or SIGTERM (see
:mod:`engines.worker`). Several workers split the topic's partitions."""

from __future__ import annotations

import argparse
import asyncio

from engines.cli.common import LAB_NOTICE, add_common, data_dir_of, err, settings_of
from engines.runtime import Runtime, check_settings
from routing.backends.kafka.bus import KafkaCommandBus

EPILOG = """\
exit status: 0 stopped by Ctrl-C or SIGTERM; 2 the routes file is invalid, or its
command_bus is not on kafka; 1 it could not start (a backend does not answer).
"""


def cmd_worker(args: argparse.Namespace) -> int:
    from engines.worker import run_worker  # the domains and their handlers: only here

    settings = settings_of(args)
    route = settings.routes.get("command_bus")
    if route is None or route.backend != "kafka":
        where = "no command_bus route" if route is None else f"command_bus on {route.backend!r}"
        err(
            f"engines worker: this routes file has {where}; the worker consumes "
            "`command_bus: kafka` (with the in-process bus, `engines serve` carries commands)"
        )
        return 2
    data_dir = data_dir_of(args, settings)
    check_settings(settings, data_dir)  # every problem of the file, before anything opens

    def ready(rt: Runtime, bus: KafkaCommandBus) -> None:
        if rt.lab_routes:
            err(LAB_NOTICE)
        err(f"engines: worker consuming {bus.topic} as group {bus.group_id}")

    asyncio.run(run_worker(settings, data_dir, ready=ready))
    err("engines: worker stopped")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser(
        "worker",
        help="carry out commands from the Kafka command bus until Ctrl-C or SIGTERM",
        description=(
            "Consume the command_bus topic as a consumer group: verify each command's "
            "token as the HTTP API does, run its domain's handler, answer on "
            "<topic>.results. Needs `command_bus: kafka`."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(w)
    w.set_defaults(func=cmd_worker)
