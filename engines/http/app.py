"""The app factory: shared middleware, error handlers and health, plus every domain's
router from the domain registry.

Every request passes the gate first (:mod:`engines.http.gate`: identity before any
body is read, body limits, header hygiene). Write endpoints return once the view
reflects the write (bounded by the ``write_wait_seconds`` setting); if it does not in
time they answer 202 with the version. Every error is problem details
(:mod:`engines.http.errors`), and every status an operation can answer is declared in
its OpenAPI document. Every response of a server with lab routes carries
``X-Engines-Lab``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Scope_

from engines.http import errors
from engines.http.gate import Gate
from engines.http.identity import refusals_of, runtime_of
from engines.http.jsonbody import StrictJsonRoute
from engines.http.responses import OrjsonResponse
from engines.runtime import Runtime, bootstrap, serving_gc
from engines.settings import Settings

if TYPE_CHECKING:
    from engines.domain import Domain

log = logging.getLogger(__name__)

LAB_HEADER = "X-Engines-Lab"
LAB_LABEL = "embedded SQLite lab backend; not for production"


class LabelResponses:
    """Pure ASGI middleware: every HTTP response names the mode, and carries
    ``X-Engines-Lab`` when lab routes are in use. (Starlette's ``@app.middleware``
    costs a task and a stream per request; this costs a closure.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        rt: Runtime | None = None
        if scope["type"] == "http":
            rt = getattr(scope["app"].state, "runtime", None)
        if rt is None:
            await self.app(scope, receive, send)
            return
        extra = [(b"x-engines-mode", rt.settings.mode.encode())]
        if rt.lab_routes:
            extra.append((LAB_HEADER.lower().encode(), LAB_LABEL.encode()))

        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, labelled)


def build_app(
    runtime: Runtime | None = None,
    *,
    lifespan: Any = None,
    domains: Sequence[Domain] | None = None,
) -> FastAPI:
    """The app over ``runtime`` (or one the ``lifespan`` builds), with the routers of
    ``domains`` (default: the runtime's, else the domain registry)."""
    if domains is None:
        if runtime is not None:
            domains = runtime.domains
        else:
            from engines.domains import DOMAINS

            domains = DOMAINS
    app = FastAPI(
        title="Engines",
        version="0.1.0",
        description="The durable spine: every write a command, an event and a projection.",
        lifespan=closing_refusals(lifespan),
        # A path that is no route is 404, never a redirect built from the client's Host
        redirect_slashes=False,
    )
    if runtime is not None:
        app.state.runtime = runtime
    app.add_middleware(Gate)
    app.add_middleware(LabelResponses)  # outermost: the gate's refusals are labelled too
    errors.install(app)

    @app.get("/healthz", responses=errors.problem_responses(400, 413, 500))
    async def healthz(request: Request) -> dict[str, Any]:
        """Liveness: the process answers. It asks no backend (``/readyz`` does)."""
        rt = runtime_of(request)
        return {
            "status": "ok",
            "mode": rt.settings.mode,
            "lab": [r.describe() for r in rt.lab_routes],
        }

    @app.get("/readyz", responses=errors.problem_responses(400, 413, 500, 503))
    async def readyz(request: Request) -> Response:
        """Readiness: every routed backend answers (``/healthz`` only says the process
        is up). 503 names each backend that does not, the routes it serves, and why;
        ``backends`` and ``routes`` (by resource kind) say ``ok`` or why not."""
        rt = runtime_of(request)
        readiness = await rt.registry.readiness()
        body = {
            "mode": rt.settings.mode,
            "backends": {name: why or "ok" for name, why in readiness.backends.items()},
            "routes": {kind: why or "ok" for kind, why in readiness.routes.items()},
        }
        if readiness.down:
            return errors.problem(503, "; ".join(readiness.down), kind="not-ready", extensions=body)
        return OrjsonResponse({"status": "ready", **body})

    for domain in domains:
        if domain.router.route_class is not StrictJsonRoute:
            raise TypeError(
                f"domain {domain.name!r}: its router must parse bodies strictly "
                "(APIRouter(route_class=StrictJsonRoute))"
            )
        app.include_router(domain.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.problems_in_openapi(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def closing_refusals(inner: Any) -> Any:
    """``inner`` (a lifespan, or none), plus the refusal audit's life: intervals close as
    they end while the app serves, and every open one closes on shutdown, before the
    runtime does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with inner(app) if inner is not None else contextlib.nullcontext():
            if getattr(app.state, "runtime", None) is None:
                yield
                return
            refusals = refusals_of(app)
            refusals.start()
            try:
                yield
            finally:
                await refusals.aclose()

    return lifespan


def create_app(settings: Settings, data_dir: Path) -> FastAPI:
    """The service: builds its runtime on start-up, closes it on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with bootstrap(settings, data_dir) as runtime:
            app.state.runtime = runtime
            log.warning("%s", runtime.banner())
            with serving_gc():
                yield

    return build_app(lifespan=lifespan)
