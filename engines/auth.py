"""Identity (DESIGN §7): verified bearer tokens → a principal → a server-bound scope.

Precedence: the server's binding (its mode) > the token's claims > anything a client
sends in headers or query parameters. A client value that disagrees is refused, never
used. Claims:

* ``sub`` (the principal's id) and ``tenant_id`` (never one beginning with
  :data:`RESERVED_TENANT_PREFIX`, which names the server's own placeholders), ``exp``;
* ``surfaces``: the surfaces granted; ``projects``: the projects granted, either a list
  (granted on every granted surface) or a mapping ``{surface: [projects]}``;
* ``kind``: ``user`` (default), ``agent``, ``connector`` or ``tool`` — the source of the
  events the principal's writes record (a user's is ``ui``);
* ``roles``: a list of ``admin``, ``auditor`` and ``safety`` (DESIGN §7; ``safety``: may
  record safety decisions, given to the services that run the gates);
* ``mode``: if present, must equal the server's.

Any claim of the wrong type or value is refused (401), never ignored.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import jwt
from jwt.algorithms import RSAAlgorithm

from engines.settings import AuthSettings
from spine.errors import EnginesError, InvalidField, InvalidInput, ScopeMismatch, Unauthenticated
from spine.events import IDENTIFIER_PATTERN, Mode, Scope, Source

LAB_SECRET_FILE = "lab-jwt-secret"
MIN_SECRET_LENGTH = 32
_ID = re.compile(IDENTIFIER_PATTERN)

#: Tenant ids the server uses for itself (e.g. the tenant of refusals whose caller is
#: unknown); a token naming one is refused, so no real tenant can collide with them.
RESERVED_TENANT_PREFIX: Final = "engines:"
MAX_SURFACES: Final = 64
MAX_PROJECTS: Final = 256

Kind = Literal["user", "agent", "connector", "tool"]
Role = Literal["admin", "auditor", "safety"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
ROLES: Final[tuple[Role, ...]] = get_args(Role)
#: The event ``source`` a principal's writes carry.
SOURCE_OF: Final[dict[Kind, Source]] = {
    "user": "ui",
    "agent": "agent",
    "connector": "connector",
    "tool": "tool",
}


@dataclass(frozen=True)
class Principal:
    """A verified caller. ``grants`` maps each granted surface to the projects granted
    on it."""

    user_id: str
    tenant_id: str
    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    kind: Kind = "user"
    roles: frozenset[Role] = frozenset()

    @property
    def surfaces(self) -> frozenset[str]:
        return frozenset(self.grants)

    @property
    def source(self) -> Source:
        return SOURCE_OF[self.kind]


def lab_secret(data_dir: Path, *, create: bool = True) -> str:
    """The lab signing secret: read from the data directory, created there on first use
    (mode 0600, written atomically so two processes or threads starting together agree).
    Without ``create``, a missing secret is :class:`InvalidInput` (a tool minting for a
    server must use that server's secret, never a new one)."""
    path = data_dir / LAB_SECRET_FILE
    try:
        return _checked_secret(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        if not create:
            raise InvalidInput(
                f"no lab signing secret in {data_dir}: `engines serve` makes it on first "
                "start (is --data-dir the server's?)"
            ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnginesError(f"cannot read the lab signing secret {path}: {exc}") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    # A name of its own per caller: a shared one would let a racing thread truncate it.
    tmp = data_dir / f".{LAB_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_urlsafe(48))
    try:
        os.link(tmp, path)  # fails if another process won: then use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _checked_secret(path.read_text(encoding="utf-8"), path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnginesError(f"cannot read key file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise EnginesError(f"key file {path} is not UTF-8 text: {exc.reason}") from exc


def uses_lab_secret(settings: AuthSettings, mode: Mode) -> bool:
    """Whether tokens are signed with the data directory's lab secret: lab mode, HS256,
    and no secret configured."""
    return (
        mode == "lab"
        and settings.algorithm == "HS256"
        and not (settings.hs256_secret or settings.hs256_secret_file)
    )


def signing_key_problems(settings: AuthSettings, *, mode: Mode, data_dir: Path | None) -> list[str]:
    """What would stop a server from loading its signing key, found without making one:
    a key file missing, unreadable, too short or not a key. In lab mode without a
    configured secret, the data directory's is checked where it exists (a missing one is
    made on first start, so it is no problem), and not at all without ``data_dir``."""
    if uses_lab_secret(settings, mode) and (
        data_dir is None or not (data_dir / LAB_SECRET_FILE).exists()
    ):
        return []
    try:
        TokenVerifier(settings, mode=mode, data_dir=data_dir or Path("."), create_secret=False)
    except EnginesError as exc:
        return [f"auth: {exc}"]
    return []


def _checked_secret(text: str, source: Path) -> str:
    """A secret read from a file; refused if too short to sign with safely (an empty or
    truncated file would make every token forgeable)."""
    secret = text.strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise EnginesError(
            f"HS256 secret in {source} has {len(secret)} characters; "
            f"at least {MIN_SECRET_LENGTH} are required"
        )
    return secret


class TokenVerifier:
    """Verifies bearer tokens against the configured keys. Keys are read and parsed here,
    so a missing or unusable key file fails at start-up (:class:`EnginesError` naming the
    file), not as a 401 on every request."""

    def __init__(
        self, settings: AuthSettings, *, mode: Mode, data_dir: Path, create_secret: bool = True
    ) -> None:
        self.settings = settings
        self.mode = mode
        self._keys: dict[str | None, Any] = {}
        if settings.algorithm == "HS256":
            if settings.hs256_secret:
                secret = settings.hs256_secret
            elif settings.hs256_secret_file:
                path = Path(settings.hs256_secret_file)
                secret = _checked_secret(_read_text(path), path)
            elif mode == "lab":
                secret = lab_secret(data_dir, create=create_secret)
            else:  # refused by Settings already; kept as a guard
                raise EnginesError("HS256 outside lab mode needs a configured secret")
            self._keys[None] = secret
        elif settings.jwks_file:
            path = Path(settings.jwks_file)
            try:
                jwks = jwt.PyJWKSet.from_json(_read_text(path))
            except (jwt.PyJWTError, ValueError) as exc:  # ValueError: not JSON
                raise EnginesError(f"JWKS file {path} is not usable: {exc}") from exc
            for key in jwks.keys:
                if key.key_type == "RSA":
                    self._keys[key.key_id] = key.key
            if not self._keys:
                raise EnginesError(f"JWKS file {path} holds no RSA key")
        else:
            assert settings.rs256_public_key_file is not None
            path = Path(settings.rs256_public_key_file)
            try:
                self._keys[None] = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(_read_text(path))
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise EnginesError(f"{path} is not an RSA public key in PEM form: {exc}") from exc

    def _key_for(self, token: str) -> Any:
        if not self.settings.jwks_file:
            return self._keys[None]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token is malformed: {exc}") from exc
        if kid not in self._keys:
            raise Unauthenticated("token's key id is not in the configured key set")
        return self._keys[kid]

    def verify(self, token: str) -> Principal:
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=[s.algorithm],
                issuer=s.issuer,
                audience=s.audience,
                leeway=s.leeway_seconds,
                options={"require": ["exp", "sub"], "verify_aud": s.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token rejected: {exc}") from exc
        return self.principal(claims)

    def principal(self, claims: dict[str, Any]) -> Principal:
        """The principal the (verified) ``claims`` describe; :class:`Unauthenticated` for
        a claim of the wrong type or value."""
        principal = principal_of(claims)
        if "mode" in claims and not isinstance(claims["mode"], str):
            raise Unauthenticated("token claim 'mode' must be a string")
        if "mode" in claims and claims["mode"] != self.mode:
            mismatch = ScopeMismatch(
                f"token is for mode {_quoted(claims['mode'])}; this server is {self.mode!r}"
            )
            mismatch.principal = principal  # verified: the denial is recorded as theirs
            raise mismatch
        return principal


def _ids(name: str, value: Any, limit: int) -> frozenset[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and _ID.fullmatch(v) for v in value
    ):
        raise Unauthenticated(f"token claim {name!r} must be a list of ids")
    if len(value) > limit:
        raise Unauthenticated(f"token claim {name!r} holds more than {limit} ids")
    return frozenset(value)


def _grants(claims: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    surfaces = _ids("surfaces", claims.get("surfaces", []), MAX_SURFACES)
    projects = claims.get("projects", [])
    if not isinstance(projects, dict):
        everywhere = _ids("projects", projects, MAX_PROJECTS)
        return dict.fromkeys(surfaces, everywhere)
    for surface in projects:
        if surface not in surfaces:
            raise Unauthenticated(
                f"token claim 'projects' names surface {surface!r}, which 'surfaces' does not"
            )
    return {s: _ids(f"projects.{s}", projects.get(s, []), MAX_PROJECTS) for s in surfaces}


def principal_of(claims: Mapping[str, Any]) -> Principal:
    """Read a principal from token claims (see the module's docstring), refusing any
    claim of the wrong type or value with :class:`Unauthenticated`."""
    user_id, tenant_id = claims.get("sub"), claims.get("tenant_id")
    for name, value in (("sub", user_id), ("tenant_id", tenant_id)):
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise Unauthenticated(f"token claim {name!r} is missing or malformed")
    if str(tenant_id).lower().startswith(RESERVED_TENANT_PREFIX):
        raise Unauthenticated(f"token claim 'tenant_id' may not begin {RESERVED_TENANT_PREFIX!r}")
    kind = claims.get("kind", "user")
    if kind not in KINDS:
        raise Unauthenticated(f"token claim 'kind' must be one of {', '.join(KINDS)}")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and r in ROLES for r in roles):
        raise Unauthenticated(f"token claim 'roles' must be a list of {', '.join(ROLES)}")
    return Principal(
        user_id=str(user_id),
        tenant_id=str(tenant_id),
        grants=_grants(claims),
        kind=cast(Kind, kind),
        roles=frozenset(cast(list[Role], roles)),
    )


def mint_lab_token(
    data_dir: Path,
    *,
    tenant_id: str,
    user_id: str,
    surfaces: Sequence[str],
    projects: Sequence[str] | Mapping[str, Sequence[str]],
    kind: str = "user",
    roles: Sequence[str] = (),
    ttl_seconds: int,
    settings: AuthSettings | None = None,
    create_secret: bool = True,
) -> str:
    """A token for lab use, signed with the lab secret (or the configured HS256 one).
    ``projects`` is a list (granted on every surface) or a mapping per surface;
    ``create_secret``: make the lab secret if the data directory has none."""
    settings = settings or AuthSettings()
    if settings.algorithm != "HS256":
        raise EnginesError("engines token mints HS256 lab tokens only")
    return mint_token(
        settings,
        mode="lab",
        data_dir=data_dir,
        tenant_id=tenant_id,
        user_id=user_id,
        surfaces=surfaces,
        projects=projects,
        kind=kind,
        roles=roles,
        ttl_seconds=ttl_seconds,
        create_secret=create_secret,
    )


class NoSigningKey(InvalidInput):
    """The configuration verifies tokens with a public key (RS256 or a JWKS): the key
    that signs them is the identity provider's, not here, so no token can be minted."""


def mint_token(
    settings: AuthSettings,
    *,
    mode: Mode,
    data_dir: Path,
    tenant_id: str,
    user_id: str,
    surfaces: Sequence[str],
    projects: Sequence[str] | Mapping[str, Sequence[str]],
    kind: str = "user",
    roles: Sequence[str] = (),
    ttl_seconds: int,
    create_secret: bool = True,
) -> str:
    """A token the server configured by ``settings`` in ``mode`` accepts, signed with its
    HS256 secret (inline, a secret file, or in lab mode the data directory's).
    :class:`NoSigningKey` where the server holds only a public key (RS256, JWKS)."""
    if settings.algorithm != "HS256":
        where = settings.jwks_file or settings.rs256_public_key_file
        raise NoSigningKey(
            f"the configuration verifies {settings.algorithm} tokens with a public key "
            f"({where}): the private key that signs them is not here, so engines cannot "
            "mint one; get a token from the identity provider that holds it"
        )
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "mode": mode,
        "kind": kind,
        "roles": list(roles),
        "surfaces": list(surfaces),
        "projects": (
            {s: list(p) for s, p in projects.items()}
            if isinstance(projects, Mapping)
            else list(projects)
        ),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.issuer:
        claims["iss"] = settings.issuer
    if settings.audience:
        claims["aud"] = settings.audience
    verifier = TokenVerifier(settings, mode=mode, data_dir=data_dir, create_secret=create_secret)
    verifier.principal(claims)  # refuse to mint what would not verify
    return jwt.encode(claims, verifier._keys[None], algorithm="HS256")


def check_claimed(
    principal: Principal, mode: Mode, claimed: Mapping[str, str | Sequence[str] | None]
) -> None:
    """Refuse (:class:`ScopeMismatch`) any tenant, mode or user the client states
    (``claimed``: every value of every alias) that disagrees with the token and server."""
    truth = {"tenant_id": principal.tenant_id, "mode": mode, "user_id": principal.user_id}
    for name, given in claimed.items():
        values = [given] if isinstance(given, str) else list(given or ())
        for value in values:
            if value != truth[name]:
                raise ScopeMismatch(f"{name} {_quoted(value)} does not match the token")


class SurfaceRequired(InvalidField):
    """A write needs a surface, and neither the token nor the request settles which."""

    def __init__(self, granted: int) -> None:
        super().__init__(
            ("body", "surface_id"),
            f"surface_id is required: the token grants {granted} surfaces; name one "
            "(body or query `surface_id`, or the X-Surface-Id header)",
        )


class ProjectRequired(InvalidField):
    """A write on a surface the token grants only some projects of, naming none of them
    (when the token grants exactly one there, that one is taken)."""

    def __init__(self, surface_id: str, granted: int) -> None:
        super().__init__(
            ("body", "project_id"),
            f"project_id is required: the token grants {granted} projects on surface "
            f"{surface_id!r} and no record outside them; name one (body or query "
            "`project_id`, or the X-Project-Id header)",
        )


def _quoted(value: str, limit: int = 64) -> str:
    """A client's value as an error names it: quoted, and cut short (an error is not an
    echo service)."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"… ({len(value)} chars)"


def resolve_scope(
    principal: Principal,
    mode: Mode,
    *,
    claimed: Mapping[str, str | Sequence[str] | None],
    surface_id: str | None = None,
    project_id: str | None = None,
    require_surface: bool = False,
) -> Scope:
    """The request's scope. ``claimed`` holds what the client said of tenant, mode and user
    (headers, query; every value of every alias); any disagreement is refused. A surface
    must be granted by the token, and a project granted on that surface (with no surface
    settled, on some granted surface); with none asked for, a single granted surface is
    taken. ``require_surface`` (for a new record): a scope without a surface is refused
    (:class:`SurfaceRequired`), as every record needs one; and on a surface the token
    grants projects of, the record needs one of them (a single one is taken;
    :class:`ProjectRequired` otherwise), as a token granting projects there reaches no
    record outside them."""
    check_claimed(principal, mode, claimed)
    grants = principal.grants
    if surface_id is None and len(grants) == 1:
        (surface_id,) = grants
    if surface_id is not None and surface_id not in grants:
        raise ScopeMismatch(f"surface_id {_quoted(surface_id)} is not granted by the token")
    if project_id is not None:
        if surface_id is not None and project_id not in grants[surface_id]:
            raise ScopeMismatch(
                f"project_id {_quoted(project_id)} is not granted on surface {surface_id!r}"
            )
        if surface_id is None and not any(project_id in p for p in grants.values()):
            raise ScopeMismatch(f"project_id {_quoted(project_id)} is not granted by the token")
    if require_surface:
        if surface_id is None:
            raise SurfaceRequired(len(grants))
        projects = grants[surface_id]
        if project_id is None and len(projects) == 1:
            (project_id,) = projects
        elif project_id is None and projects:
            raise ProjectRequired(surface_id, len(projects))
    return Scope(
        tenant_id=principal.tenant_id,
        mode=mode,
        user_id=principal.user_id,
        surface_id=surface_id,
        project_id=project_id,
    )


def lab_projects(
    values: Sequence[str], surfaces: Sequence[str]
) -> list[str] | dict[str, list[str]]:
    """``engines token --project`` values as a ``projects`` claim: ``p1`` is granted on
    every surface, ``chat=p2`` on ``chat`` only (which must be one of ``surfaces``)."""
    everywhere = [v for v in values if "=" not in v]
    per_surface: dict[str, list[str]] = {s: [] for s in surfaces}
    for value in values:
        if "=" not in value:
            continue
        surface, _, project = value.partition("=")
        if surface not in per_surface:
            raise InvalidInput(
                f"--project {value!r} names surface {surface!r}, which no --surface grants"
            )
        per_surface[surface].append(project)
    if not any(per_surface.values()):
        return everywhere
    return {s: sorted({*everywhere, *p}) for s, p in per_surface.items()}
