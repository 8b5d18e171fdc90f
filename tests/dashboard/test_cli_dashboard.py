"""``archetype dashboard``: refuses a store that does not exist, and serves one for real with its token."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from archetype.cli import main


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.db"
    assert main(["dashboard", "--storage", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no database file" in err[0] and str(missing) in err[0]
    assert not missing.exists()


@pytest.mark.parametrize(("flags", "message"), [(["--port", "70000"], "--port"), (["--token", " "], "--token")])
def test_bad_options_are_one_line_errors(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    from archetype.store import Store

    url = f"sqlite:///{tmp_path / 'a.db'}"
    Store.open(url).close()
    assert main(["dashboard", "--storage", url, *flags]) == 2
    assert message in capsys.readouterr().err


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
def test_the_command_serves_the_store_on_loopback_with_its_token(filled, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "archetype", "dashboard", "--storage", filled.url, "--port", str(port),
         "--token", "t0k"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"{base}/api/studies", "t0k")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
        assert status == 200
        assert filled.report.study.name in [s["name"] for s in json.loads(body)["studies"]]
        assert _get(f"{base}/api/studies")[0] == 401
        assert _get(f"{base}/?token=t0k")[0] == 200
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert f"http://127.0.0.1:{port}/?token=..." in err
