"""Configuration: one YAML file (routes, connections, auth), read once at start-up."""

from __future__ import annotations

import os
import stat
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    model_validator,
)

from routing.config import Connections, Route, RoutesFile, describe_validation_error, load_yaml
from routing.kinds import required_kinds
from routing.registry import check_routes
from spine.anchors import MIN_KEY_BYTES
from spine.errors import RoutingError


class AuthSettings(BaseModel):
    """How bearer tokens are verified. HS256 with a shared secret, or RS256 with a public
    key (PEM file) or a JWKS file. In lab mode with no secret configured, one is made on
    first use in the data directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    algorithm: Literal["HS256", "RS256"] = "HS256"
    hs256_secret: str | None = Field(default=None, min_length=32)
    hs256_secret_file: str | None = None
    rs256_public_key_file: str | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = Field(default=30, ge=0, le=300)

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        if self.algorithm == "RS256" and not (self.rs256_public_key_file or self.jwks_file):
            raise ValueError("RS256 needs rs256_public_key_file or jwks_file")
        if self.hs256_secret and self.hs256_secret_file:
            raise ValueError("give hs256_secret or hs256_secret_file, not both")
        return self


class HttpSettings(BaseModel):
    """Limits and trust at the HTTP edge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(default=2_000_000, ge=1, le=100_000_000)
    """The largest request body accepted (413 beyond it), by Content-Length and as read."""
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    """Peers whose ``X-Forwarded-For`` is believed (addresses or networks). Default: none,
    so the client address is always the connecting peer."""


class AuditSettings(BaseModel):
    """How refusals are recorded on the spine: the first refusal of a (caller, reason) in
    an interval at once, later ones counted into one summary when the interval ends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refusal_interval_seconds: float = Field(default=60.0, gt=0, le=86_400)
    refusal_max_keys: int = Field(default=1024, ge=1, le=1_000_000)
    """How many (caller, reason) pairs are tracked at once; beyond it, refusals of new
    pairs are counted together under one overflow key."""
    anchor_key_file: str | None = None
    """The key of the anchors' keyed chain (``engines audit anchor`` and ``verify``;
    :mod:`spine.anchors`): a file of at least 32 bytes, relative to the data directory.
    Without it, anchors carry no mac."""


class Settings(RoutesFile):
    auth: AuthSettings = AuthSettings()
    http: HttpSettings = HttpSettings()
    audit: AuditSettings = AuditSettings()
    write_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    """How long a write endpoint waits for its view before answering 202."""

    @model_validator(mode="after")
    def _secret_outside_lab(self) -> Self:
        a = self.auth
        if (
            self.mode != "lab"
            and a.algorithm == "HS256"
            and not (a.hs256_secret or a.hs256_secret_file)
        ):
            raise ValueError(f"mode {self.mode!r} needs auth.hs256_secret(_file) or RS256 keys")
        return self


#: The most bytes an anchor key file is read for (a key is 32 bytes or a little more).
MAX_KEY_FILE_BYTES = 4096


def read_anchor_key(audit: AuditSettings, data_dir: Path) -> bytes | None:
    """The secret of ``audit.anchor_key_file`` (relative to ``data_dir``), or ``None``
    without one; :class:`RoutingError` naming the file if it cannot serve."""
    name = audit.anchor_key_file
    if name is None:
        return None
    path = Path(name) if Path(name).is_absolute() else data_dir / name
    try:
        # never blocks on a FIFO; a device (/dev/zero) or a directory is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RoutingError(f"audit.anchor_key_file {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RoutingError(f"audit.anchor_key_file {path}: not a regular file")
        raw = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise RoutingError(f"audit.anchor_key_file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise RoutingError(
            f"audit.anchor_key_file {path} holds over {MAX_KEY_FILE_BYTES} bytes: not a key"
        )
    secret = raw.strip()
    if len(secret) < MIN_KEY_BYTES:
        raise RoutingError(
            f"audit.anchor_key_file {path} holds {len(secret)} bytes; "
            f"an anchor key needs at least {MIN_KEY_BYTES}"
        )
    return secret


LAB_ROUTES = "lab.yaml"


def load_settings(path: Path | None) -> tuple[Settings, str]:
    """Read and validate a configuration file (the packaged lab default when ``None``).
    Returns the settings and a label saying where they came from."""
    if path is None:
        label = "packaged lab routes"
        text = resources.files("engines").joinpath(LAB_ROUTES).read_text(encoding="utf-8")
        data = load_yaml(Path(label), text)
    else:
        label = str(path)
        data = load_yaml(path)
    try:
        return Settings.model_validate(data), label
    except ValidationError as exc:
        problems = [describe_validation_error(Path(label), exc), *_route_problems(data)]
        raise RoutingError("\n".join(problems)) from exc


def _route_problems(data: dict[str, Any]) -> list[str]:
    """What else is wrong with the routes of a file that failed validation, so one error
    names every problem: the routes that are well-formed are checked as a set (the
    others' own field errors are named already, and they do not count as missing)."""
    routes = data.get("routes")
    if not isinstance(routes, dict):
        routes = {}
    well_formed: dict[str, Route] = {}
    for kind, route in routes.items():
        try:
            well_formed[str(kind)] = Route.model_validate(route)
        except ValidationError:
            continue
    try:
        config = RoutesFile.model_validate({"mode": data.get("mode"), "routes": well_formed})
    except ValidationError:
        return []  # no usable mode: nothing to check the routes against
    try:  # connections that are well-formed are checked too (others are named already)
        config = config.model_copy(
            update={"connections": Connections.model_validate(data.get("connections") or {})}
        )
        connections = True
    except ValidationError:
        connections = False
    needed = required_kinds(config.mode) - (routes.keys() - well_formed.keys())
    try:
        check_routes(config, kinds=needed, connections=connections)
    except RoutingError as exc:
        return [f"  {line.strip()}" for line in str(exc).splitlines() if line.strip()]
    return []
