"""The ``engines`` command: serve, token, routes, spine, projections, dev servers, and
one group per domain from the domain registry.

Thin: parse, build from the composition root, call, print; errors map to exit codes in
one table (:data:`engines.cli.common.EXIT_BY_ERROR`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from engines.auth import KINDS, ROLES, lab_projects, mint_lab_token, mint_token
from engines.cli import dev, projections, routes, spine, worker
from engines.cli.common import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    add_common,
    data_dir_of,
    err,
    exit_code_for,
    port_number,
    positive_int,
    settings_of,
)
from spine.errors import EnginesError, InvalidInput

SERVE_EPILOG = """\
exit status: 0 stopped by Ctrl-C or SIGTERM; 2 the routes file is invalid or its
signing key unusable (every problem named, before anything starts); 1 it could not
start (a backend does not answer, the address is in use: said why).
"""


def exit_codes_epilog() -> str:
    """The exit-code table of :mod:`engines.cli.common`, for ``engines --help``."""
    lines = [f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES]
    return "exit status (every command):\n" + "\n".join(lines) + "\n"


def cmd_serve(args: argparse.Namespace) -> int:
    from engines.cli.serve import serve  # uvicorn and the app: only for this command

    return serve(args)


def cmd_token(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    surfaces = args.surface or []
    grants = {
        "tenant_id": args.tenant,
        "user_id": args.user,
        "surfaces": surfaces,
        "projects": lab_projects(args.project or [], surfaces),
        "kind": args.kind,
        "roles": sorted(set(args.role or [])),
        "ttl_seconds": args.ttl,
    }
    if settings.mode == "lab":
        token = mint_lab_token(
            data_dir_of(args, settings),
            settings=settings.auth,
            create_secret=False,  # the server's secret, never a new one
            **grants,
        )
    else:
        # Outside lab the secret is the routes file's own (inline or a file), or there is
        # none here at all (RS256, JWKS: refused, NoSigningKey).
        token = mint_token(
            settings.auth,
            mode=settings.mode,
            data_dir=Path(args.data_dir),
            create_secret=False,
            **grants,
        )
    print(token)
    return 0


def parser() -> argparse.ArgumentParser:
    from engines.domains import DOMAINS

    p = argparse.ArgumentParser(
        prog="engines",
        description=__doc__.splitlines()[0],
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description=(
            "Serve the HTTP API over the routes of --routes. The file is checked first "
            "(as `engines routes check` does), then every store is opened; only then "
            "does it say it is serving."
        ),
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=port_number, default=8000)
    s.add_argument("--log-level", default="info")
    s.add_argument(
        "--no-projectors",
        dest="projectors",
        action="store_false",
        help=(
            "serve without running the projectors here: `engines projections run` runs "
            "them in processes of their own (with spine_feed: kafka, in consumer groups)"
        ),
    )
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser(
        "token",
        help="mint a token for a routes file whose HS256 secret is local; prints just the token",
        description=(
            "Mint a token the server of --routes accepts: signed with the file's HS256 secret "
            "(hs256_secret or hs256_secret_file), or in lab mode with the data directory's. "
            "Refused (exit 3) where the file names an RS256 public key or a JWKS: the "
            "signing key is the identity provider's."
        ),
    )
    add_common(t)
    t.add_argument("--tenant", required=True)
    t.add_argument("--user", required=True)
    t.add_argument("--surface", action="append", help="a surface the user may use (repeatable)")
    t.add_argument(
        "--project",
        action="append",
        help="a project granted on every surface (P), or on one (SURFACE=P); repeatable",
    )
    t.add_argument(
        "--kind", choices=KINDS, default="user", help="the principal's kind (default user)"
    )
    t.add_argument("--role", action="append", choices=ROLES, help="a role (repeatable)")
    t.add_argument("--ttl", type=positive_int, default=3600, help="seconds (default 3600)")
    t.set_defaults(func=cmd_token)

    routes.register(sub)
    spine.register(sub)
    projections.register(sub)
    dev.register(sub)
    worker.register(sub)
    for domain in DOMAINS:
        if domain.cli is not None:
            domain.cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, so a closed pipe is caught below
    except EnginesError as exc:
        err(f"engines: {exc}")
        return exit_code_for(exc)
    except ValidationError as exc:  # an option that is not a valid id, tenant, user...
        wrong = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
        )
        err(f"engines: invalid option ({wrong})")
        return exit_code_for(InvalidInput(wrong))
    except BrokenPipeError:
        # the reader went away (`engines spine read ... | head`): stop quietly, and keep
        # the interpreter's final flush from failing on the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C: stop, say so, no traceback
        err("engines: interrupted")
        return EXIT_INTERRUPTED
    return code


def entry() -> None:  # pragma: no cover - the console script
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before or after main's own handler (imports, exit)
        err("engines: interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover - `python -m engines.cli`
    entry()
