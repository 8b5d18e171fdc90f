"""The dashboard never migrates: an old store gets a page naming ``archetype db upgrade``, which upgrades it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archetype.cli import main
from archetype.dashboard.app import create_outdated_app
from archetype.dashboard.server import open_existing
from archetype.store import SchemaOutdatedError, Store, head_revision

OLD_STORE = Path(__file__).parents[1] / "data" / "store-0005.db"


@pytest.fixture()
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(OLD_STORE, path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_dashboard_refuses_to_migrate_and_leaves_the_file_unchanged(old_store: Path) -> None:
    before = _digest(old_store)
    with pytest.raises(SchemaOutdatedError, match="archetype db upgrade") as raised:
        open_existing(f"sqlite:///{old_store}")
    assert _digest(old_store) == before
    client = TestClient(create_outdated_app(str(raised.value)))
    page = client.get("/studies/anything")
    assert page.status_code == 503 and "archetype db upgrade --storage URL" in page.text
    api = client.get("/api/studies")
    assert api.status_code == 503 and api.json()["upgrade"] == "archetype db upgrade"
    assert _digest(old_store) == before


def test_db_upgrade_migrates_then_the_dashboard_opens_it(old_store: Path, capsys) -> None:
    url = f"sqlite:///{old_store}"
    assert main(["db", "upgrade", "--storage", url, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"storage": url, "revision": head_revision()}
    assert "next: archetype dashboard" in err
    with open_existing(url) as store:
        assert store.list_studies()
    with Store.open(url, migrate=False) as store:  # at the newest revision: nothing to refuse
        assert store.list_studies()
