"""Versioned entities over HTTP, written once (:mod:`commands.entities`): read the latest
or a given version, page the history, list, put and delete, each under the request's
identity and preconditions. A domain's router parses its own paths and bodies and calls
these.

Answers:

* a record: its path fields, its body fields, ``version``, ``scope`` (tenant, mode,
  user, surface, project) and ``timestamps``, with ``ETag: "<version>"``;
* a history entry: the same, for one version, plus ``event_type`` and ``deleted``;
* a body field a record does not hold: ``null``, or (``sparse``) left out, so a body
  stored exactly as given is answered exactly as given;
* anything the caller may not see: 404, as if absent.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, create_model

from commands.entities import (
    Creation,
    DeleteEntity,
    PutEntity,
    can_see,
    refuse_reused_key,
)
from commands.envelope import Command, CommandResult
from engines.auth import Principal, Role
from engines.domain import OnBus, Place
from engines.http.identity import runtime_of
from engines.http.responses import (
    OrjsonResponse,
    ProvenanceOut,
    Timestamps,
    etag,
    expected_version,
    provenance_out,
)
from engines.http.writes import envelope, written
from projections.entities import VERSION, latest_key, version_key
from projections.views import Filter, Grant, ViewQuery, ViewRecord
from spine.entities import EntityKind
from spine.errors import BackendUnavailable, ConcurrencyError, NotFound, PreconditionRequired
from spine.events import Mode, Provenance, Scope

if TYPE_CHECKING:
    from routing.registry import Registry


class ScopeOut(BaseModel):
    tenant_id: str
    mode: Mode
    user_id: str | None
    surface_id: str | None
    project_id: str | None


def _scope_out(scope: Scope) -> dict[str, Any]:
    return scope.model_dump()


@dataclass(frozen=True)
class EntityApi:
    """What a domain's router needs to serve its entities."""

    kind: EntityKind
    view: str
    """The projector (an :class:`projections.entities.EntityProjector`) answering reads."""
    put_type: type[PutEntity]
    delete_type: type[DeleteEntity] | None
    body: type[BaseModel]
    """The body model: its fields are what a record shows besides path and scope."""
    base_path: str
    """The URL of the collection (``/flows``); an entity's is ``{base_path}/{path...}``."""
    require_precondition: bool = False
    """A change must say which version it replaces (``If-Match: "N"``) or that there is
    nothing (``If-None-Match: *``); neither, or ``If-Match: *`` (which names no version),
    is refused (428): no silent overwrite."""
    sparse: bool = False
    """Answer only the body fields a record holds (a field never given is left out, not
    shown as ``null``): for a body stored exactly as given, with no defaults."""
    answers: Literal["latest", "version"] = "latest"
    """What a put answers: the entity as it then stands (``latest``), or the version that
    put made (``version``: a snapshot, whatever was appended after it)."""
    url_fields: tuple[str, ...] | None = None
    """The path fields an entity's URL names, in order (default: all of them); the others
    come from the request's scope (a strategy lock's project) and are named in the
    query of a ``Location``."""
    as_given: bool = False
    """Store only the body fields given (none defaulted): see :meth:`stored`."""

    @property
    def path_fields(self) -> tuple[str, ...]:
        return self.kind.path

    @property
    def model_stem(self) -> str:
        """The stem of this kind's OpenAPI model names: ``Flow``, ``BlackboardKey``."""
        return "".join(word[:1].upper() + word[1:].lower() for word in self.kind.entity.split())

    # -- models for OpenAPI ---------------------------------------------------------------

    def out_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = dict.fromkeys(self.path_fields, (str, ...))
        fields.update(
            {
                name: (info.annotation, ... if info.is_required() else None)
                for name, info in self.body.model_fields.items()
            }
        )
        fields.update(
            {
                "version": (int, ...),
                "scope": (ScopeOut, ...),
                "provenance": (ProvenanceOut, ...),
                "timestamps": (Timestamps, ...),
            }
        )
        name = self.model_stem + "Out"
        return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)

    def version_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = dict.fromkeys(self.path_fields, (str, ...))
        fields.update(dict.fromkeys(self.body.model_fields, (Any, None)))
        fields.update(
            {
                "version": (int, ...),
                "event_type": (str, ...),
                "deleted": (bool, ...),
                "scope": (ScopeOut, ...),
                "provenance": (ProvenanceOut, ...),
                "recorded_at": (str, ...),
            }
        )
        name = self.model_stem + "Version"
        return create_model(name, **fields)

    # -- rendering -------------------------------------------------------------------------

    def body_of(self, data: dict[str, Any]) -> dict[str, Any]:
        """The body fields of a record's ``data``: each one (``null`` if absent), or with
        ``sparse`` only those it holds."""
        if self.sparse:
            return {name: data[name] for name in self.body.model_fields if name in data}
        return {name: data.get(name) for name in self.body.model_fields}

    def render(self, record: ViewRecord) -> dict[str, Any]:
        data = record.data
        return {
            **{name: data[name] for name in self.path_fields},
            **self.body_of(data),
            "version": record.version,
            "scope": _scope_out(record.scope),
            "provenance": provenance_out(data),
            "timestamps": {"created_at": data["created_at"], "updated_at": data["updated_at"]},
        }

    def render_version(self, record: ViewRecord) -> dict[str, Any]:
        data = record.data
        return {
            **{name: data[name] for name in self.path_fields},
            **self.body_of(data),
            "version": data["seq"],
            "event_type": data["event_type"],
            "deleted": data["deleted"],
            "scope": _scope_out(record.scope),
            "provenance": provenance_out(data),
            "recorded_at": data["recorded_at"],
        }

    def location(self, path: tuple[str, ...], version: int | None = None) -> str:
        """The URL of the entity at ``path`` (of its ``version``, if given)."""
        named = dict(zip(self.path_fields, path, strict=True))
        in_url = self.path_fields if self.url_fields is None else self.url_fields
        query = [(name, named[name]) for name in self.path_fields if name not in in_url]
        if version is not None:
            query.append(("version", str(version)))
        url = "/".join((self.base_path, *(named[name] for name in in_url)))
        return f"{url}?{urlencode(query)}" if query else url

    def _visible(self, principal: Principal, record: ViewRecord) -> bool:
        return can_see(self.kind.access, record.scope, principal.user_id, principal.grants)

    def _name(self, path: tuple[str, ...]) -> str:
        return f"{self.kind.entity} {'/'.join(path)!r}"

    # -- reads -----------------------------------------------------------------------------

    async def read(
        self,
        request: Request,
        principal: Principal,
        scope: Scope,
        path: tuple[str, ...],
        version: int | None = None,
    ) -> Response:
        """The entity as it stands, or as it was at ``version`` (deleted since or not)."""
        sid = self.kind.stream_id(scope, path)
        view = runtime_of(request).view_of(self.view)
        if version is None:
            record = await view.get(latest_key(sid))
        else:
            record = await view.get(version_key(sid, version))
        if record is None or not self._visible(principal, record):
            raise NotFound(f"{self._name(path)} not found")
        if version is None:
            return OrjsonResponse(self.render(record), headers={"ETag": etag(record.version)})
        if record.data.get("deleted"):
            raise NotFound(f"{self._name(path)} was deleted at version {version}")
        return OrjsonResponse(self.render_version(record), headers={"ETag": etag(version)})

    async def history(
        self,
        request: Request,
        principal: Principal,
        scope: Scope,
        path: tuple[str, ...],
        cursor: str | None,
        limit: int,
    ) -> dict[str, Any]:
        """A page of the entity's versions, oldest first; 404, whatever the cursor, if
        the caller may not see the entity (its first version says whose it is)."""
        sid = self.kind.stream_id(scope, path)
        view = runtime_of(request).view_of(self.view)
        first = await view.get(version_key(sid, 1))
        if first is None or not self._visible(principal, first):
            raise NotFound(f"{self._name(path)} not found")
        page = await view.query(
            ViewQuery(
                tenant_id=scope.tenant_id,
                mode=scope.mode,
                user_id=principal.user_id if self.kind.access == "owner" else None,
                where=(
                    Filter(field="entry", value=VERSION),
                    Filter(field="stream_id", value=sid),
                ),
                order_by="seq",
                descending=False,
                limit=limit,
                cursor=cursor,
            )
        )
        items = [r for r in page.items if self._visible(principal, r)]
        return {"items": [self.render_version(r) for r in items], "next_cursor": page.next_cursor}

    async def list(
        self,
        request: Request,
        principal: Principal,
        scope: Scope,
        *,
        surface_id: str | None = None,
        project_id: str | None = None,
        where: tuple[Filter, ...] = (),
        order_by: str = "created_at",
        descending: bool = True,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        """A page of the live entities the caller may see, by ``order_by`` (newest created
        first by default: the order never changes, so a walk of the pages sees every
        entity that existed when it began). Owned entities are the caller's own within
        their grants."""
        owner = self.kind.access == "owner"
        grants = None
        if owner:
            grants = tuple(
                Grant(surface_id=s, project_ids=tuple(sorted(projects)))
                for s, projects in sorted(principal.grants.items())
                if surface_id is None or s == surface_id
            )
        page = (
            await runtime_of(request)
            .view_of(self.view)
            .query(
                ViewQuery(
                    tenant_id=scope.tenant_id,
                    mode=scope.mode,
                    user_id=principal.user_id if owner else None,
                    surface_id=surface_id,
                    project_id=project_id,
                    grants=grants,
                    where=(Filter(field="entry", value="latest"), *where),
                    order_by=order_by,
                    descending=descending,
                    limit=limit,
                    cursor=cursor,
                )
            )
        )
        items = [self.render(r) for r in page.items if self._visible(principal, r)]
        return {"items": items, "next_cursor": page.next_cursor}

    # -- writes ----------------------------------------------------------------------------

    def stored(self, body: BaseModel) -> dict[str, Any]:
        """What a put stores of ``body`` (an instance of :attr:`body`, or of a request
        model adding fields to it): its body fields, as JSON; with :attr:`as_given`, only
        those given."""
        return body.model_dump(
            mode="json", include=set(self.body.model_fields), exclude_unset=self.as_given
        )

    def admit(
        self, command: Command[Any], check: Callable[[Any], None] | None = None
    ) -> Command[Any]:
        """A put or delete sent as a command (the command bus), checked as a request is
        checked before dispatch: the body against :attr:`body` (as JSON, as a request's
        is parsed), and the preconditions, with ``expected_version`` read as the headers
        would say it (``N``: ``If-Match: "N"``; ``0``: ``If-None-Match: *``). ``check``:
        the domain's own check of a valid body, before the preconditions (as its
        endpoint's)."""
        payload = command.payload
        expected = command.expected_version
        matched, absent = expected is not None and expected > 0, expected == 0
        if isinstance(payload, PutEntity):
            body = self.body.model_validate_json(orjson.dumps(payload.body))
            if check is not None:
                check(body)
            create, expected = self.settle(expected, payload.create, matched, absent)
            payload = type(payload)(path=payload.path, body=self.stored(body), create=create)
        else:
            expected = self.settle_delete(expected)
        return command.model_copy(update={"payload": payload, "expected_version": expected})

    async def put(
        self,
        request: Request,
        principal: Principal,
        scope: Scope,
        path: tuple[str, ...],
        body: dict[str, Any],
        *,
        create: Creation,
        if_match: str | None,
        if_none_match: str | None,
        command_id: str | None = None,
        provenance: Provenance | None = None,
        status: int | None = None,
    ) -> Response:
        """Create or replace an entity under the request's preconditions: ``If-Match``
        needs it as it is (and never creates); ``If-None-Match: *`` needs it absent.
        ``command_id`` (from an ``Idempotency-Key``): a retry answers as the first did."""
        expected = expected_version(if_match, if_none_match)  # validates both headers
        create, expected = self.settle(
            expected, create, if_match is not None, if_none_match is not None
        )
        extra: dict[str, Any] = {} if command_id is None else {"command_id": command_id}
        command = Command[Any](
            scope=scope,
            expected_version=expected,
            payload=self.put_type(path=path, body=body, create=create),
            **extra,
            **envelope(request, principal, provenance),
        )
        result = await runtime_of(request).dispatch(command)
        if result.deduplicated:
            same_put_or_refuse(command, result)
            # A replay under If-None-Match: * is refused (as for notes: the client asked
            # for a create, and this one made nothing), unless every create must say
            # If-None-Match: then a retry answers as its create did, or no create could
            # ever be retried.
            if if_none_match is not None and not self.require_precondition:
                raise ConcurrencyError(
                    result.stream_id, "absent (If-None-Match: *)", result.version
                )
        created = bool(result.events) and result.events[0].event_type == self.kind.created
        answer = status or (201 if created else 200)
        if self.answers == "version":
            return await self._written_version(request, result, path, answer)
        return await written(
            runtime_of(request),
            result,
            projector=self.view,
            key=latest_key(result.stream_id),
            ident=dict(zip(self.path_fields, path, strict=True)),
            render=self.render,
            status=answer,
            location=self.location(path) if answer == 201 else None,
            replay=result.deduplicated,
        )

    async def delete(
        self,
        request: Request,
        principal: Principal,
        scope: Scope,
        path: tuple[str, ...],
        *,
        if_match: str | None,
        if_none_match: str | None,
        provenance: Provenance | None = None,
    ) -> Response:
        """Delete an entity (a tombstone: history and spine keep it)."""
        assert self.delete_type is not None, f"{self.kind.entity} cannot be deleted"
        expected = self.settle_delete(expected_version(if_match, if_none_match))
        command = Command[Any](
            scope=scope,
            expected_version=expected,
            payload=self.delete_type(path=path),
            **envelope(request, principal, provenance),
        )
        result = await runtime_of(request).dispatch(command)
        return await written(
            runtime_of(request),
            result,
            projector=self.view,
            key=latest_key(result.stream_id),
            ident=dict(zip(self.path_fields, path, strict=True)),
            render=self.render,
            status=200,
        )

    async def _written_version(
        self, request: Request, result: CommandResult, path: tuple[str, ...], status: int
    ) -> Response:
        """Answer a put with the version it made, once the view's history holds it (a
        history entry never changes, so it is exactly what the put wrote); ``202`` if the
        view does not reflect it within the configured wait."""
        runtime = runtime_of(request)
        headers = {"ETag": etag(result.version)}
        reflected = await runtime.wait_for(
            self.view, result.stream_id, result.version, runtime.settings.write_wait_seconds
        )
        record = None
        if reflected:
            with contextlib.suppress(BackendUnavailable):  # gone since: the write is durable
                record = await runtime.view_of(self.view).get(
                    version_key(result.stream_id, result.version)
                )
        if record is None:
            ident = dict(zip(self.path_fields, path, strict=True))
            return OrjsonResponse(
                {**ident, "version": result.version, "status": "accepted"},
                status_code=202,
                headers=headers,
            )
        if status == 201:
            headers["Location"] = self.location(path, result.version)
        return OrjsonResponse(self.render_version(record), status_code=status, headers=headers)

    def settle(
        self, expected: int | None, create: Creation, matched: bool, absent: bool
    ) -> tuple[Creation, int | None]:
        """What a put may do and the version it expects, given ``expected`` and whether
        it names a version it replaces (``matched``: ``If-Match``; never a create) or
        that there is none (``absent``: ``If-None-Match: *``)."""
        self._required(expected, deleting=False)
        if matched:
            return "never", expected
        if absent and create != "never":
            return "must", None  # absent, whatever the stream's version
        # (a replace under If-None-Match: * keeps expected version 0: 412 if it exists,
        # 404 if it does not; it never creates)
        return create, expected

    def settle_delete(self, expected: int | None) -> int | None:
        """The version a delete expects (``expected``), which it must name if
        :attr:`require_precondition`."""
        self._required(expected, deleting=True)
        return expected

    def _required(self, expected: int | None, *, deleting: bool) -> None:
        if self.require_precondition and expected is None:  # neither, or If-Match: *
            read = 'send If-Match with the version you read (its ETag, e.g. "3")'
            if deleting:
                raise PreconditionRequired(f"a {self.kind.entity} is never deleted blindly: {read}")
            raise PreconditionRequired(
                f"a {self.kind.entity} is never overwritten blindly: {read}, or "
                "If-None-Match: * to create one"
            )


def on_bus(
    api: EntityApi,
    *,
    role: Role | None = None,
    place: Place | None = None,
    require_surface: bool | None = None,
    check: Callable[[Registry, Any], None] | None = None,
    scoped: Callable[[Scope], Scope] | None = None,
) -> dict[type[BaseModel], OnBus]:
    """How the command bus takes ``api``'s puts and deletes, as its endpoints take them:
    the ``role`` they need; where the scope is (``place``, from the path, as the URL
    says it); whether the scope must name a surface (``require_surface``; by default,
    for a put that may create, as a document's ``POST`` does); ``check``,
    the domain's own check of a valid body against the routes (before the
    preconditions); ``scoped``, the scope an entity is kept in; a repeated put must be
    the same request."""

    def admit(principal: Principal, command: Command[Any], registry: Registry) -> Command[Any]:
        del principal
        if scoped is not None:
            command = command.model_copy(update={"scope": scoped(command.scope)})
        return api.admit(command, None if check is None else functools.partial(check, registry))

    def creates(payload: Any) -> bool:
        return isinstance(payload, PutEntity) and payload.create != "never"

    taken = OnBus(
        require_surface=creates if require_surface is None else require_surface,
        role=role,
        place=place,
        admit=admit,
        same_request=same_put_or_refuse,
    )
    types: tuple[type[BaseModel], ...] = (api.put_type,)
    if api.delete_type is not None:
        types += (api.delete_type,)
    return dict.fromkeys(types, taken)


def same_put_or_refuse(command: Command[Any], result: CommandResult) -> None:
    """A repeated put (its command id derived from an ``Idempotency-Key``, or resent on
    the command bus) must be the same request (:func:`commands.entities.refuse_reused_key`);
    a repeated delete is."""
    if result.deduplicated and isinstance(command.payload, PutEntity):
        refuse_reused_key(result.events, command)
