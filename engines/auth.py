"""Identity (DESIGN §7): verified bearer tokens → a principal → a server-bound scope.

Precedence: the server's binding (its mode) > the token's claims > anything a client
sends in headers or query parameters. A client value that disagrees is refused, never
used. Claims: ``sub`` (user id), ``tenant_id``, optional ``surfaces`` and ``projects``
(lists of ids the user may act in), optional ``mode`` (must equal the server's), ``exp``.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from engines.settings import AuthSettings
from spine.errors import EnginesError, ScopeMismatch, Unauthenticated
from spine.events import IDENTIFIER_PATTERN, Mode, Scope

LAB_SECRET_FILE = "lab-jwt-secret"
MIN_SECRET_LENGTH = 32
_ID = re.compile(IDENTIFIER_PATTERN)


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    surfaces: frozenset[str]
    projects: frozenset[str]


def lab_secret(data_dir: Path) -> str:
    """The lab signing secret: read from the data directory, created there on first use
    (mode 0600, written atomically so two processes or threads starting together agree)."""
    path = data_dir / LAB_SECRET_FILE
    try:
        return _checked_secret(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        pass
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

    def __init__(self, settings: AuthSettings, *, mode: Mode, data_dir: Path) -> None:
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
                secret = lab_secret(data_dir)
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
        user_id, tenant_id = claims.get("sub"), claims.get("tenant_id")
        for name, value in (("sub", user_id), ("tenant_id", tenant_id)):
            if not isinstance(value, str) or not _ID.match(value):
                raise Unauthenticated(f"token claim {name!r} is missing or malformed")
        lists = {}
        for name in ("surfaces", "projects"):
            value = claims.get(name, [])
            if not isinstance(value, list) or not all(
                isinstance(v, str) and _ID.match(v) for v in value
            ):
                raise Unauthenticated(f"token claim {name!r} must be a list of ids")
            lists[name] = frozenset(value)
        principal = Principal(str(user_id), str(tenant_id), lists["surfaces"], lists["projects"])
        if "mode" in claims and claims["mode"] != self.mode:
            mismatch = ScopeMismatch(
                f"token is for mode {claims['mode']!r}; this server is {self.mode!r}"
            )
            mismatch.principal = principal  # verified: the denial is recorded as theirs
            raise mismatch
        return principal


def mint_lab_token(
    data_dir: Path,
    *,
    tenant_id: str,
    user_id: str,
    surfaces: list[str],
    projects: list[str],
    ttl_seconds: int,
    settings: AuthSettings | None = None,
) -> str:
    """A token for lab use, signed with the lab secret (or the configured HS256 one)."""
    settings = settings or AuthSettings()
    if settings.algorithm != "HS256":
        raise EnginesError("engines token mints HS256 lab tokens only")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "mode": "lab",
        "surfaces": surfaces,
        "projects": projects,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.issuer:
        claims["iss"] = settings.issuer
    if settings.audience:
        claims["aud"] = settings.audience
    verifier = TokenVerifier(settings, mode="lab", data_dir=data_dir)
    verifier.principal(claims)  # refuse to mint what would not verify
    return jwt.encode(claims, verifier._keys[None], algorithm="HS256")


def resolve_scope(
    principal: Principal,
    mode: Mode,
    *,
    claimed: Mapping[str, str | Sequence[str] | None],
    surface_id: str | None = None,
    project_id: str | None = None,
) -> Scope:
    """The request's scope. ``claimed`` holds what the client said of tenant, mode and user
    (headers, query; every value of every alias); any disagreement is refused. A surface
    or project must be one the token grants; with none asked for, a single granted
    surface is taken."""
    truth = {"tenant_id": principal.tenant_id, "mode": mode, "user_id": principal.user_id}
    for name, given in claimed.items():
        values = [given] if isinstance(given, str) else list(given or ())
        for value in values:
            if value != truth[name]:
                raise ScopeMismatch(f"{name} {value!r} does not match the token")
    if surface_id is None and len(principal.surfaces) == 1:
        (surface_id,) = principal.surfaces
    if surface_id is not None and surface_id not in principal.surfaces:
        raise ScopeMismatch(f"surface_id {surface_id!r} is not granted by the token")
    if project_id is not None and project_id not in principal.projects:
        raise ScopeMismatch(f"project_id {project_id!r} is not granted by the token")
    return Scope(
        tenant_id=principal.tenant_id,
        mode=mode,
        user_id=principal.user_id,
        surface_id=surface_id,
        project_id=project_id,
    )
