"""``engines token --routes FILE``: a token for the server of that routes file, where the
file's signing secret is local (HS256), and a clear refusal where it is not (RS256)."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engines.auth import Principal, TokenVerifier
from engines.cli import main
from engines.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
MIXED = "examples/routes/mixed.yaml"


def test_token_for_an_example_routes_file_verifies_on_its_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)  # the secret file's path is relative to the repository root
    argv = ["token", "--routes", MIXED, "--tenant", "t1", "--user", "u1", "--surface", "chat"]

    code = main([*argv, "--project", "p1", "--role", "admin", "--data-dir", str(tmp_path / "no")])

    out, err = capsys.readouterr()
    assert code == 0, err
    settings, _ = load_settings(Path(MIXED))
    verifier = TokenVerifier(settings.auth, mode="saas", data_dir=tmp_path)
    principal = verifier.verify(out.strip())
    assert principal == Principal(
        "u1", "t1", {"chat": frozenset({"p1"})}, roles=frozenset({"admin"})
    )
    secret = (ROOT / "examples/routes/LOCAL-ONLY-jwt-secret").read_text().strip()
    assert jwt.decode(out.strip(), secret, algorithms=["HS256"])["mode"] == "saas"
    assert not (tmp_path / "no").exists()  # no data directory needed, none made


def test_token_refuses_a_routes_file_that_verifies_with_an_rs256_public_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    routes = (
        (ROOT / MIXED)
        .read_text()
        .replace(
            "  algorithm: HS256\n  hs256_secret_file: examples/routes/LOCAL-ONLY-jwt-secret\n",
            f"  algorithm: RS256\n  rs256_public_key_file: {pem}\n",
        )
    )
    assert "RS256" in routes
    path = tmp_path / "rs256.yaml"
    path.write_text(routes)

    code = main(["token", "--routes", str(path), "--tenant", "t1", "--user", "u1"])

    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""
    assert "RS256" in err
    assert str(pem) in err
    assert "cannot mint" in err
