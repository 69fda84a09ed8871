"""Identity without I/O beyond key files: token verification, scope resolution, lab tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError

from engines.auth import (
    LAB_SECRET_FILE,
    RESERVED_TENANT_PREFIX,
    Principal,
    ProjectRequired,
    SurfaceRequired,
    TokenVerifier,
    lab_projects,
    lab_secret,
    mint_lab_token,
    resolve_scope,
)
from engines.settings import AuthSettings, Settings, load_settings
from spine.errors import EnginesError, InvalidInput, ScopeMismatch, Unauthenticated

SECRET = "a-configured-hs256-secret-with-32+-chars"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "u1",
        "tenant_id": "t1",
        "surfaces": ["chat"],
        "projects": ["p1"],
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(
    settings: AuthSettings | None = None, *, mode: Any = "saas", data_dir: Path
) -> TokenVerifier:
    return TokenVerifier(
        settings or AuthSettings(hs256_secret=SECRET), mode=mode, data_dir=data_dir
    )


@pytest.mark.parametrize(
    "claim",
    [{"sub": "alice\n"}, {"tenant_id": "t1\n"}, {"surfaces": ["chat\n"]}, {"projects": ["p\n"]}],
)
def test_an_id_ending_in_a_newline_is_refused(tmp_path: Path, claim: dict[str, Any]) -> None:
    token = jwt.encode(claims(**claim), SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        hs256(data_dir=tmp_path).verify(token)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- HS256 --------------------------------------------------------------------------------


def test_hs256_with_the_configured_secret_yields_the_principal(tmp_path: Path) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")

    principal = hs256(data_dir=tmp_path).verify(token)

    assert principal == Principal("u1", "t1", {"chat": frozenset({"p1"})})
    assert (principal.kind, principal.roles, principal.source) == ("user", frozenset(), "ui")


def test_hs256_with_a_configured_secret_never_makes_a_lab_secret(tmp_path: Path) -> None:
    hs256(mode="lab", data_dir=tmp_path).verify(jwt.encode(claims(), SECRET, algorithm="HS256"))

    assert not (tmp_path / LAB_SECRET_FILE).exists()


def test_hs256_secret_may_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    verifier = hs256(AuthSettings(hs256_secret_file=str(secret_file)), data_dir=tmp_path)

    assert verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256")).user_id == "u1"


def test_a_secret_file_too_short_to_be_safe_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("short\n")

    with pytest.raises(EnginesError, match="32"):
        hs256(AuthSettings(hs256_secret_file=str(secret_file)), data_dir=tmp_path)


def test_a_token_signed_with_another_secret_is_unauthenticated(tmp_path: Path) -> None:
    token = jwt.encode(claims(), "some-other-secret-some-other-secret!!", algorithm="HS256")

    with pytest.raises(Unauthenticated, match="token rejected"):
        hs256(data_dir=tmp_path).verify(token)


@pytest.mark.parametrize(
    ("overrides", "what"),
    [
        ({"exp": None}, "exp"),
        ({"sub": None}, "sub"),
        ({"tenant_id": None}, "tenant_id"),
        ({"tenant_id": "a/b"}, "tenant_id"),
        ({"sub": "../root"}, "sub"),
        ({"surfaces": "chat"}, "surfaces"),
        ({"projects": ["ok", "not ok"]}, "projects"),
        ({"projects": [1]}, "projects"),
    ],
)
def test_a_token_with_missing_or_malformed_claims_is_unauthenticated(
    tmp_path: Path, overrides: dict[str, Any], what: str
) -> None:
    token = jwt.encode(claims(**overrides), SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated, match=what):
        hs256(data_dir=tmp_path).verify(token)


@pytest.mark.parametrize(
    ("overrides", "what"),
    [
        ({"kind": "robot"}, "kind"),
        ({"kind": 1}, "kind"),
        ({"kind": ["agent"]}, "kind"),
        ({"roles": "admin"}, "roles"),
        ({"roles": [1]}, "roles"),
        ({"roles": ["root"]}, "roles"),
        ({"roles": {"admin": True}}, "roles"),
        ({"projects": {"canvas": ["p1"]}}, "canvas"),
        ({"projects": {"chat": "p1"}}, "projects.chat"),
        ({"projects": {"chat": ["a b"]}}, "projects.chat"),
        ({"surfaces": [f"s{i}" for i in range(65)]}, "surfaces"),
        ({"tenant_id": RESERVED_TENANT_PREFIX + "unauthenticated"}, "tenant_id"),
        ({"tenant_id": "ENGINES:unauthenticated"}, "tenant_id"),
    ],
)
def test_kind_roles_and_grants_of_the_wrong_type_or_value_are_unauthenticated(
    tmp_path: Path, overrides: dict[str, Any], what: str
) -> None:
    token = jwt.encode(claims(**overrides), SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated, match=what):
        hs256(data_dir=tmp_path).verify(token)


@pytest.mark.parametrize(
    ("kind", "source"),
    [("user", "ui"), ("agent", "agent"), ("connector", "connector"), ("tool", "tool")],
)
def test_the_principals_kind_comes_from_the_token_and_names_its_source(
    tmp_path: Path, kind: str, source: str
) -> None:
    token = jwt.encode(claims(kind=kind), SECRET, algorithm="HS256")

    principal = hs256(data_dir=tmp_path).verify(token)

    assert (principal.kind, principal.source) == (kind, source)


def test_roles_come_from_the_token(tmp_path: Path) -> None:
    token = jwt.encode(claims(roles=["admin", "auditor"]), SECRET, algorithm="HS256")

    assert hs256(data_dir=tmp_path).verify(token).roles == {"admin", "auditor"}


def test_a_projects_list_is_granted_on_every_granted_surface(tmp_path: Path) -> None:
    token = jwt.encode(claims(surfaces=["chat", "canvas"], projects=["p1"]), SECRET)

    principal = hs256(data_dir=tmp_path).verify(token)

    assert principal.grants == {"chat": {"p1"}, "canvas": {"p1"}}


def test_a_projects_mapping_grants_projects_per_surface(tmp_path: Path) -> None:
    token = jwt.encode(
        claims(surfaces=["chat", "canvas", "builder"], projects={"chat": ["p1"], "canvas": []}),
        SECRET,
    )

    principal = hs256(data_dir=tmp_path).verify(token)

    assert principal.grants == {"chat": {"p1"}, "canvas": set(), "builder": set()}


def test_surfaces_and_projects_default_to_none_granted(tmp_path: Path) -> None:
    token = jwt.encode(claims(surfaces=None, projects=None), SECRET, algorithm="HS256")

    principal = hs256(data_dir=tmp_path).verify(token)

    assert (principal.surfaces, principal.grants) == (frozenset(), {})


def test_an_expired_token_is_refused_beyond_the_leeway_only(tmp_path: Path) -> None:
    now = int(time.time())
    verifier = hs256(AuthSettings(hs256_secret=SECRET, leeway_seconds=30), data_dir=tmp_path)
    strict = hs256(AuthSettings(hs256_secret=SECRET, leeway_seconds=0), data_dir=tmp_path)
    just_expired = jwt.encode(claims(exp=now - 5), SECRET, algorithm="HS256")
    long_expired = jwt.encode(claims(exp=now - 60), SECRET, algorithm="HS256")

    assert verifier.verify(just_expired).user_id == "u1"
    with pytest.raises(Unauthenticated, match="expired"):
        strict.verify(just_expired)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(long_expired)


def test_a_token_not_yet_valid_is_refused(tmp_path: Path) -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256")

    with pytest.raises(Unauthenticated):
        hs256(data_dir=tmp_path).verify(token)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "ey.ey.ey"])
def test_garbage_is_unauthenticated(tmp_path: Path, token: str) -> None:
    with pytest.raises(Unauthenticated):
        hs256(data_dir=tmp_path).verify(token)


def test_an_unsigned_alg_none_token_is_refused(tmp_path: Path) -> None:
    token = jwt.encode(claims(), None, algorithm="none")

    with pytest.raises(Unauthenticated):
        hs256(data_dir=tmp_path).verify(token)


def test_a_token_claiming_another_mode_is_a_scope_mismatch(tmp_path: Path) -> None:
    lab_token = jwt.encode(claims(mode="lab"), SECRET, algorithm="HS256")
    saas_token = jwt.encode(claims(mode="saas"), SECRET, algorithm="HS256")
    verifier = hs256(mode="saas", data_dir=tmp_path)

    assert verifier.verify(saas_token).tenant_id == "t1"
    with pytest.raises(ScopeMismatch, match="mode 'lab'"):
        verifier.verify(lab_token)


def test_outside_lab_mode_hs256_needs_a_configured_secret(tmp_path: Path) -> None:
    with pytest.raises(EnginesError, match="secret"):
        TokenVerifier(AuthSettings(), mode="saas", data_dir=tmp_path)
    assert not (tmp_path / LAB_SECRET_FILE).exists()

    with pytest.raises(ValidationError, match="hs256_secret"):
        Settings.model_validate({"mode": "saas", "routes": {}})


@pytest.mark.parametrize(
    "fields",
    [
        {"hs256_secret": "too-short"},
        {"hs256_secret": SECRET, "hs256_secret_file": "/x"},
        {"algorithm": "RS256"},
        {"algorithm": "ES256"},
        {"leeway_seconds": 301},
        {"unknown": 1},
    ],
)
def test_auth_settings_refuse_unsafe_or_incomplete_configurations(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AuthSettings.model_validate(fields)


# -- issuer and audience ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        ({"iss": "https://id.example", "aud": "engines"}, True),
        ({"iss": "https://id.example", "aud": ["other", "engines"]}, True),
        ({"iss": "https://evil.example", "aud": "engines"}, False),
        ({"aud": "engines"}, False),
        ({"iss": "https://id.example", "aud": "someone-else"}, False),
        ({"iss": "https://id.example"}, False),
    ],
)
def test_issuer_and_audience_are_checked_when_configured(
    tmp_path: Path, overrides: dict[str, Any], accepted: bool
) -> None:
    settings = AuthSettings(hs256_secret=SECRET, issuer="https://id.example", audience="engines")
    token = jwt.encode(claims(**overrides), SECRET, algorithm="HS256")
    verifier = hs256(settings, data_dir=tmp_path)

    if accepted:
        assert verifier.verify(token).user_id == "u1"
    else:
        with pytest.raises(Unauthenticated):
            verifier.verify(token)


def test_without_a_configured_audience_any_audience_is_accepted(tmp_path: Path) -> None:
    token = jwt.encode(claims(aud="whatever"), SECRET, algorithm="HS256")

    assert hs256(data_dir=tmp_path).verify(token).user_id == "u1"


# -- RS256 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rs256_pem_verifier(tmp_path: Path, key: rsa.RSAPrivateKey, **auth: Any) -> TokenVerifier:
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(pem_public(key))
    settings = AuthSettings(algorithm="RS256", rs256_public_key_file=str(key_file), **auth)
    return TokenVerifier(settings, mode="saas", data_dir=tmp_path)


def rs256_jwks_verifier(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> TokenVerifier:
    jwks = {
        "keys": [
            {**RSAAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": kid, "alg": "RS256"}
            for kid, k in keys.items()
        ]
    }
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    settings = AuthSettings(algorithm="RS256", jwks_file=str(jwks_file))
    return TokenVerifier(settings, mode="saas", data_dir=tmp_path)


def test_rs256_with_a_pem_public_key_verifies_tokens_of_its_private_key(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    ours, theirs = rsa_keys
    verifier = rs256_pem_verifier(tmp_path, ours)

    assert verifier.verify(jwt.encode(claims(), ours, algorithm="RS256")).user_id == "u1"
    with pytest.raises(Unauthenticated):
        verifier.verify(jwt.encode(claims(), theirs, algorithm="RS256"))


def test_rs256_checks_issuer_and_audience_too(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    key, _ = rsa_keys
    verifier = rs256_pem_verifier(tmp_path, key, issuer="https://id.example", audience="engines")
    good = claims(iss="https://id.example", aud="engines")

    assert verifier.verify(jwt.encode(good, key, algorithm="RS256")).user_id == "u1"
    with pytest.raises(Unauthenticated):
        verifier.verify(jwt.encode({**good, "aud": "nope"}, key, algorithm="RS256"))


def test_rs256_refuses_an_hs256_token_signed_with_the_public_key(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    """The classic algorithm-confusion attack: the public key used as an HMAC secret."""
    key, _ = rsa_keys
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(pem_public(key), signing_input, hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64url(signature)}"

    with pytest.raises(Unauthenticated):
        rs256_pem_verifier(tmp_path, key).verify(forged)


def test_rs256_with_a_jwks_file_picks_the_key_by_kid(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    k1, k2 = rsa_keys
    verifier = rs256_jwks_verifier(tmp_path, {"k1": k1, "k2": k2})

    for kid, key in (("k1", k1), ("k2", k2)):
        token = jwt.encode(claims(sub=f"user-{kid}"), key, algorithm="RS256", headers={"kid": kid})
        assert verifier.verify(token).user_id == f"user-{kid}"


def test_rs256_with_a_jwks_file_refuses_an_unknown_kid(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    k1, k2 = rsa_keys
    verifier = rs256_jwks_verifier(tmp_path, {"k1": k1})

    unknown = jwt.encode(claims(), k2, algorithm="RS256", headers={"kid": "k9"})
    with pytest.raises(Unauthenticated, match="key id"):
        verifier.verify(unknown)


def test_rs256_with_a_jwks_file_refuses_a_token_without_kid(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    k1, _ = rsa_keys
    verifier = rs256_jwks_verifier(tmp_path, {"k1": k1})

    with pytest.raises(Unauthenticated, match="key id"):
        verifier.verify(jwt.encode(claims(), k1, algorithm="RS256"))


def test_rs256_with_a_jwks_file_refuses_a_known_kid_signed_by_another_key(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    k1, k2 = rsa_keys
    verifier = rs256_jwks_verifier(tmp_path, {"k1": k1, "k2": k2})

    swapped = jwt.encode(claims(), k2, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated, match="token rejected"):
        verifier.verify(swapped)


def test_rs256_with_a_jwks_file_refuses_a_garbage_header(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    k1, _ = rsa_keys
    verifier = rs256_jwks_verifier(tmp_path, {"k1": k1})

    with pytest.raises(Unauthenticated, match="malformed"):
        verifier.verify("%%%.%%%.%%%")


@pytest.mark.parametrize(
    ("field", "content", "message"),
    [
        ("rs256_public_key_file", None, "cannot read"),
        ("rs256_public_key_file", "not a pem", "PEM"),
        ("jwks_file", None, "cannot read"),
        ("jwks_file", "{not json", "JWKS"),
        ("jwks_file", '{"keys": []}', "JWKS"),
    ],
)
def test_an_unusable_key_file_fails_when_the_verifier_is_built(
    tmp_path: Path, field: str, content: str | None, message: str
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    settings = AuthSettings.model_validate({"algorithm": "RS256", field: str(key_file)})

    with pytest.raises(EnginesError, match=message):
        TokenVerifier(settings, mode="saas", data_dir=tmp_path)


def test_a_jwks_without_an_rsa_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(
        json.dumps({"keys": [{**ECAlgorithm.to_jwk(ec_key, as_dict=True), "kid": "e1"}]})
    )
    settings = AuthSettings(algorithm="RS256", jwks_file=str(jwks_file))

    with pytest.raises(EnginesError, match="no RSA key"):
        TokenVerifier(settings, mode="saas", data_dir=tmp_path)


# -- the lab secret and lab tokens --------------------------------------------------------


def test_the_lab_secret_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    first = lab_secret(data_dir)
    second = lab_secret(data_dir)

    path = data_dir / LAB_SECRET_FILE
    assert first == second == path.read_text().strip()
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == [LAB_SECRET_FILE]


def test_each_data_directory_has_its_own_lab_secret(tmp_path: Path) -> None:
    assert lab_secret(tmp_path / "a") != lab_secret(tmp_path / "b")


def test_an_existing_lab_secret_is_reused(tmp_path: Path) -> None:
    (tmp_path / LAB_SECRET_FILE).write_text("x" * 40 + "\n")

    assert lab_secret(tmp_path) == "x" * 40


def test_a_truncated_lab_secret_is_refused_rather_than_signing_with_it(tmp_path: Path) -> None:
    (tmp_path / LAB_SECRET_FILE).write_text("")

    with pytest.raises(EnginesError, match=LAB_SECRET_FILE):
        TokenVerifier(AuthSettings(), mode="lab", data_dir=tmp_path)


def race_to_create_the_lab_secret(data_dir: Path, threads: int) -> list[str | BaseException]:
    barrier = threading.Barrier(threads)
    outcomes: list[str | BaseException] = []

    def make() -> None:
        barrier.wait()
        try:
            outcomes.append(lab_secret(data_dir))
        except BaseException as exc:
            outcomes.append(exc)

    workers = [threading.Thread(target=make) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return outcomes


def test_threads_racing_to_create_the_lab_secret_agree(tmp_path: Path) -> None:
    for round_ in range(10):
        data_dir = tmp_path / str(round_)

        outcomes = race_to_create_the_lab_secret(data_dir, 8)

        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        assert len(set(outcomes)) == 1
        assert [p.name for p in data_dir.iterdir()] == [LAB_SECRET_FILE]


def test_a_minted_lab_token_verifies_against_the_same_data_directory(tmp_path: Path) -> None:
    token = mint_lab_token(
        tmp_path, tenant_id="t1", user_id="u1", surfaces=["s"], projects=["p"], ttl_seconds=60
    )
    verifier = TokenVerifier(AuthSettings(), mode="lab", data_dir=tmp_path)

    assert verifier.verify(token) == Principal("u1", "t1", {"s": frozenset({"p"})})
    raw = jwt.decode(token, lab_secret(tmp_path), algorithms=["HS256"])
    assert raw["mode"] == "lab"
    assert raw["exp"] - raw["iat"] == 60


def test_a_lab_token_does_not_verify_against_another_data_directory(tmp_path: Path) -> None:
    token = mint_lab_token(
        tmp_path / "a", tenant_id="t1", user_id="u1", surfaces=[], projects=[], ttl_seconds=60
    )

    with pytest.raises(Unauthenticated):
        TokenVerifier(AuthSettings(), mode="lab", data_dir=tmp_path / "b").verify(token)


def test_a_lab_token_carries_the_configured_issuer_and_audience(tmp_path: Path) -> None:
    settings = AuthSettings(hs256_secret=SECRET, issuer="https://lab", audience="engines")

    token = mint_lab_token(
        tmp_path,
        tenant_id="t1",
        user_id="u1",
        surfaces=[],
        projects=[],
        ttl_seconds=60,
        settings=settings,
    )

    assert TokenVerifier(settings, mode="lab", data_dir=tmp_path).verify(token).user_id == "u1"
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], audience="engines")
    assert (raw["iss"], raw["aud"]) == ("https://lab", "engines")
    assert not (tmp_path / LAB_SECRET_FILE).exists()


def test_minting_refuses_ids_that_would_not_verify(tmp_path: Path) -> None:
    with pytest.raises(Unauthenticated, match="tenant_id"):
        mint_lab_token(
            tmp_path, tenant_id="t/1", user_id="u1", surfaces=[], projects=[], ttl_seconds=60
        )
    with pytest.raises(Unauthenticated, match="surfaces"):
        mint_lab_token(
            tmp_path, tenant_id="t1", user_id="u1", surfaces=["a b"], projects=[], ttl_seconds=60
        )


def test_a_lab_token_carries_kind_roles_and_projects_per_surface(tmp_path: Path) -> None:
    token = mint_lab_token(
        tmp_path,
        tenant_id="t1",
        user_id="bot",
        surfaces=["chat", "canvas"],
        projects={"chat": ["p1", "p2"], "canvas": ["p1"]},
        kind="agent",
        roles=["auditor"],
        ttl_seconds=60,
    )

    principal = TokenVerifier(AuthSettings(), mode="lab", data_dir=tmp_path).verify(token)

    assert principal == Principal(
        "bot",
        "t1",
        {"chat": frozenset({"p1", "p2"}), "canvas": frozenset({"p1"})},
        kind="agent",
        roles=frozenset({"auditor"}),
    )


@pytest.mark.parametrize(
    ("values", "surfaces", "claim"),
    [
        ([], ["chat"], []),
        (["p1"], ["chat", "canvas"], ["p1"]),
        (["chat=p2"], ["chat", "canvas"], {"chat": ["p2"], "canvas": []}),
        (["p1", "chat=p2"], ["chat", "canvas"], {"chat": ["p1", "p2"], "canvas": ["p1"]}),
    ],
)
def test_token_project_options_become_a_list_or_a_mapping(
    values: list[str], surfaces: list[str], claim: Any
) -> None:
    assert lab_projects(values, surfaces) == claim


def test_a_token_project_option_for_an_ungranted_surface_is_refused() -> None:
    with pytest.raises(InvalidInput, match="builder"):
        lab_projects(["builder=p1"], ["chat"])


def test_minting_refuses_a_reserved_tenant_a_bad_kind_or_role(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "tenant_id": "t1",
        "user_id": "u1",
        "surfaces": [],
        "projects": [],
        "ttl_seconds": 60,
    }
    with pytest.raises(Unauthenticated, match="tenant_id"):
        mint_lab_token(tmp_path, **{**base, "tenant_id": RESERVED_TENANT_PREFIX + "x"})
    with pytest.raises(Unauthenticated, match="kind"):
        mint_lab_token(tmp_path, **base, kind="robot")
    with pytest.raises(Unauthenticated, match="roles"):
        mint_lab_token(tmp_path, **base, roles=["root"])


def test_minting_is_for_hs256_lab_tokens_only(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(pem_public(rsa_keys[0]))
    settings = AuthSettings(algorithm="RS256", rs256_public_key_file=str(key_file))

    with pytest.raises(EnginesError, match="HS256"):
        mint_lab_token(
            tmp_path,
            tenant_id="t1",
            user_id="u1",
            surfaces=[],
            projects=[],
            ttl_seconds=60,
            settings=settings,
        )


def test_the_packaged_lab_settings_use_the_data_directory_secret() -> None:
    settings, label = load_settings(None)

    assert settings.mode == "lab"
    assert settings.auth.algorithm == "HS256"
    assert settings.auth.hs256_secret is None
    assert settings.auth.hs256_secret_file is None
    assert "lab" in label


# -- resolve_scope ------------------------------------------------------------------------

PRINCIPAL = Principal("u1", "t1", {"chat": frozenset({"p1", "p2"})})
NO_CLAIMS: dict[str, str | None] = {"tenant_id": None, "mode": None, "user_id": None}


def test_the_scope_comes_from_the_token_and_the_servers_mode() -> None:
    scope = resolve_scope(PRINCIPAL, "saas", claimed=NO_CLAIMS, project_id="p2")

    assert scope.model_dump() == {
        "tenant_id": "t1",
        "mode": "saas",
        "user_id": "u1",
        "surface_id": "chat",
        "project_id": "p2",
    }


def test_claims_that_agree_with_the_token_are_accepted() -> None:
    claimed = {"tenant_id": "t1", "mode": "lab", "user_id": "u1"}

    assert resolve_scope(PRINCIPAL, "lab", claimed=claimed).user_id == "u1"


@pytest.mark.parametrize(
    ("field", "value"),
    [("tenant_id", "t2"), ("mode", "saas"), ("user_id", "admin"), ("tenant_id", "")],
)
def test_a_claim_that_disagrees_with_the_token_is_a_scope_mismatch(field: str, value: str) -> None:
    with pytest.raises(ScopeMismatch, match=field):
        resolve_scope(PRINCIPAL, "lab", claimed={**NO_CLAIMS, field: value})


def test_a_single_granted_surface_is_taken_when_none_is_asked_for() -> None:
    assert resolve_scope(PRINCIPAL, "lab", claimed=NO_CLAIMS).surface_id == "chat"


def test_with_several_or_no_surfaces_granted_none_is_assumed() -> None:
    several = Principal("u1", "t1", {"chat": frozenset(), "canvas": frozenset()})
    none = Principal("u1", "t1", {})

    assert resolve_scope(several, "lab", claimed=NO_CLAIMS).surface_id is None
    assert resolve_scope(none, "lab", claimed=NO_CLAIMS).surface_id is None
    assert resolve_scope(several, "lab", claimed=NO_CLAIMS, surface_id="canvas").surface_id == (
        "canvas"
    )


def test_a_surface_or_project_not_granted_is_a_scope_mismatch() -> None:
    with pytest.raises(ScopeMismatch, match="surface_id 'builder'"):
        resolve_scope(PRINCIPAL, "lab", claimed=NO_CLAIMS, surface_id="builder")
    with pytest.raises(ScopeMismatch, match="project_id 'p3'"):
        resolve_scope(PRINCIPAL, "lab", claimed=NO_CLAIMS, project_id="p3")
    nothing = Principal("u1", "t1", {})
    with pytest.raises(ScopeMismatch, match="surface_id"):
        resolve_scope(nothing, "lab", claimed=NO_CLAIMS, surface_id="chat")


def test_no_project_is_assumed_even_when_one_is_granted() -> None:
    only = Principal("u1", "t1", {"chat": frozenset({"p1"}), "canvas": frozenset({"p1"})})

    assert resolve_scope(only, "lab", claimed=NO_CLAIMS).project_id is None


GRANTS = Principal(
    "u1", "t1", {"chat": frozenset({"p1"}), "canvas": frozenset({"p2"}), "builder": frozenset()}
)


def test_a_project_is_granted_per_surface() -> None:
    assert resolve_scope(GRANTS, "lab", claimed=NO_CLAIMS, surface_id="chat", project_id="p1")
    assert resolve_scope(GRANTS, "lab", claimed=NO_CLAIMS, surface_id="canvas", project_id="p2")
    with pytest.raises(ScopeMismatch, match="not granted on surface 'canvas'"):
        resolve_scope(GRANTS, "lab", claimed=NO_CLAIMS, surface_id="canvas", project_id="p1")
    with pytest.raises(ScopeMismatch, match="not granted on surface 'builder'"):
        resolve_scope(GRANTS, "lab", claimed=NO_CLAIMS, surface_id="builder", project_id="p1")


def test_without_a_surface_a_project_must_be_granted_on_some_surface() -> None:
    assert resolve_scope(GRANTS, "lab", claimed=NO_CLAIMS, project_id="p2").project_id == "p2"
    with pytest.raises(ScopeMismatch, match="project_id 'p3'"):
        resolve_scope(GRANTS, "lab", claimed=NO_CLAIMS, project_id="p3")


def test_a_scope_that_must_have_a_surface_refuses_to_guess_one() -> None:
    with pytest.raises(SurfaceRequired, match="surface_id is required") as info:
        resolve_scope(GRANTS, "lab", claimed=NO_CLAIMS, require_surface=True)
    assert info.value.loc == ("body", "surface_id")
    nothing = Principal("u1", "t1", {})
    with pytest.raises(SurfaceRequired):
        resolve_scope(nothing, "lab", claimed=NO_CLAIMS, require_surface=True)
    single = resolve_scope(
        PRINCIPAL, "lab", claimed=NO_CLAIMS, project_id="p2", require_surface=True
    )
    assert (single.surface_id, single.project_id) == ("chat", "p2")


def test_a_new_record_on_a_surface_granted_with_projects_takes_or_needs_one() -> None:
    one = Principal("u1", "t1", {"chat": frozenset({"p1"})})
    taken = resolve_scope(one, "lab", claimed=NO_CLAIMS, require_surface=True)
    assert taken.project_id == "p1"
    with pytest.raises(ProjectRequired) as info:
        resolve_scope(PRINCIPAL, "lab", claimed=NO_CLAIMS, require_surface=True)
    assert info.value.loc == ("body", "project_id")
    whole = Principal("u1", "t1", {"chat": frozenset()})
    assert resolve_scope(whole, "lab", claimed=NO_CLAIMS, require_surface=True).project_id is None
    reading = resolve_scope(PRINCIPAL, "lab", claimed=NO_CLAIMS)  # a list: every project
    assert reading.project_id is None


def test_a_refusal_names_a_long_claimed_value_cut_short() -> None:
    with pytest.raises(ScopeMismatch) as info:
        resolve_scope(PRINCIPAL, "lab", claimed={"tenant_id": "x" * 2000})
    assert len(str(info.value)) < 200
    assert "2000 chars" in str(info.value)
