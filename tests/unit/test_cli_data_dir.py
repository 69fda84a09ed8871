"""The CLI's tools over existing data need a data directory only where the routes file
keeps something there: a lab SQLite file, the lab signing secret, a relative key file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from engines.cli.common import data_dir_of
from engines.settings import load_settings
from spine.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "routes"


def args(data_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(data_dir=str(data_dir))


@pytest.mark.parametrize("name", ["dynamodb.yaml", "cosmos.yaml", "firestore.yaml", "mixed.yaml"])
def test_a_routes_file_on_cloud_stores_needs_no_data_directory(name: str, tmp_path: Path) -> None:
    settings, _ = load_settings(EXAMPLES / name)
    missing = tmp_path / "none"

    assert data_dir_of(args(missing), settings) == missing
    assert not missing.exists()  # nothing made


def test_the_lab_routes_need_the_data_directory_engines_serve_made(tmp_path: Path) -> None:
    settings, _ = load_settings(None)

    with pytest.raises(InvalidInput) as info:
        data_dir_of(args(tmp_path / "none"), settings)

    message = str(info.value)
    assert "does not exist" in message
    assert "the lab database (engines.db) and the lab signing secret" in message
    assert data_dir_of(args(tmp_path), settings) == tmp_path


def test_a_relative_cosmos_key_file_needs_the_data_directory(tmp_path: Path) -> None:
    text = (EXAMPLES / "cosmos.yaml").read_text(encoding="utf-8")
    key_line = next(line for line in text.splitlines() if line.strip().startswith("key:"))
    relative = tmp_path / "relative.yaml"
    relative.write_text(text.replace(key_line, "    key_file: cosmos.key"), encoding="utf-8")
    absolute = tmp_path / "absolute.yaml"
    absolute.write_text(text.replace(key_line, f"    key_file: {tmp_path}/k"), encoding="utf-8")

    with pytest.raises(InvalidInput, match=r"the Cosmos DB key file \(cosmos\.key\)"):
        data_dir_of(args(tmp_path / "none"), load_settings(relative)[0])
    data_dir_of(args(tmp_path / "none"), load_settings(absolute)[0])
