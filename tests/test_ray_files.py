"""What a local Ray instance leaves behind (issue "Results you can trust", Poor list): nothing in the
home folder (Ray would write ``~/.ray/auth_token``) and nothing in the temporary folder (Ray would
leave ``/tmp/ray/session_*``); the token the project keeps lies under its cache folder, mode 0600,
and a token the user gives is used as given. Each case starts Ray in a fresh process whose home,
cache and temporary folders are the test's own."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

DRIVER = """
from pmtrec_lab.execution.ray_connect import connect, disconnect

ray = connect(object_store_memory=80 * 1024 * 1024, num_cpus=1)
assert ray.get(ray.remote(lambda: 3).remote()) == 3
disconnect()
print("ok")
"""


@pytest.mark.parametrize("auth", ["project", "token-path", "token"])
def test_a_local_ray_leaves_nothing_in_the_home_or_temporary_folder(tmp_path, auth):
    # a short temporary folder: Ray's socket paths under it must stay within AF_UNIX's 107 bytes
    tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    try:
        _check(tmp_path, tmp, auth)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check(tmp_path: Path, tmp: Path, auth: str) -> None:
    home, cache = tmp_path / "home", tmp_path / "cache"
    for d in (home, cache):
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), PMTREC_CACHE_DIR=str(cache), TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO)
    user_token = tmp_path / "my-token"
    if auth == "token-path":
        user_token.write_text(secrets.token_hex(32))
        env["RAY_AUTH_TOKEN_PATH"] = str(user_token)
    elif auth == "token":
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    before = user_token.read_text() if user_token.exists() else None
    r = subprocess.run(
        [sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
    assert not (home / ".ray").exists(), sorted(p.name for p in (home / ".ray").iterdir())
    assert sorted(p.name for p in tmp.iterdir()) == []
    project_token = cache / "ray" / "auth_token"
    if auth == "project":
        assert project_token.is_file() and (project_token.stat().st_mode & 0o777) == 0o600
        assert len(project_token.read_text()) == 64
    else:
        assert not project_token.exists()
    if auth == "token-path":
        assert user_token.read_text() == before
