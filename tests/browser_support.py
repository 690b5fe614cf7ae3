"""Helpers (not tests) for driving JupyterLab in headless Chromium with Playwright's sync API.

- :func:`start_jupyterlab` / :func:`stop_jupyterlab` / :func:`jupyterlab`: a JupyterLab server on
  127.0.0.1 with a random token and a throw-away Jupyter config/runtime/data dir, so no user
  settings, workspaces or extensions leak into a test. The app is exposed as ``window.jupyterapp``
  (``LabApp.expose_app_in_browser``, as JupyterLab's own Galata tests do), which lets the helpers
  run commands by id instead of clicking through menus whose labels can change.
- :func:`chromium_path` / :func:`launch_browser`: the Debian ``chromium`` (Playwright cannot
  download its own browsers here); missing Chromium skips the test, or fails it under ``CI=true``;
  :func:`started_playwright` and :func:`new_page` start Playwright and open a page in a fresh context.
- :func:`open_notebook`, :func:`run_all_cells`, :func:`wait_for_output_text`,
  :func:`click_widget_checkbox`, :func:`save_screenshot`, :func:`screenshot_on_failure`: page-level
  steps for notebook tests.

Every wait is bounded (seconds in the signatures; Playwright itself counts milliseconds).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT_DIR = REPO / "test-output" / "browser"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Flags for headless Chromium in containers/CI (headless itself is Playwright's ``headless=True``).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def in_ci() -> bool:
    """True when the environment says CI (``CI=true``/``1``/``yes``): missing tools fail, not skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it under CI where a silently skipped tier would hide a broken setup."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def chromium_path() -> str:
    """Path of the Chromium to drive: ``$PMTREC_CHROMIUM`` or /usr/bin/chromium; skip/fail if absent."""
    candidate = os.environ.get("PMTREC_CHROMIUM") or DEFAULT_CHROMIUM
    if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
        skip_or_fail(
            f"Chromium not found at {candidate} (Debian: apt-get install -y chromium; `make browser-deps`)"
        )
    return candidate


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the server is told not to retry others)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# JupyterLab server


class JupyterLabProcess(subprocess.Popen):
    """A ``Popen`` of ``jupyter lab`` that also knows its URL, token, state dir and log file."""

    base_url: str
    token: str
    state_dir: Path
    log_path: Path
    _log_file: Any

    def log_tail(self, n_chars: int = 4000) -> str:
        """The end of the server's log, for error messages."""
        with suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n_chars:]
        return ""


def _api(proc: JupyterLabProcess, path: str, method: str = "GET", timeout: float = 5.0) -> Any:
    """Call the server's REST API with the token; return the decoded JSON (or None)."""
    req = urllib.request.Request(
        f"{proc.base_url}{path}",
        method=method,
        headers={"Authorization": f"token {proc.token}"},
        data=b"" if method in {"POST", "DELETE"} else None,
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _jupyter_executable() -> str:
    """The ``jupyter`` beside the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("jupyter")
    if beside.exists():
        return str(beside)
    found = shutil.which("jupyter")
    if not found:
        skip_or_fail("the jupyter command is not installed")
    return str(found)


def start_jupyterlab(
    root_dir: str | os.PathLike, port: int | None = None, timeout: float = 90.0
) -> tuple[JupyterLabProcess, str]:
    """Start ``jupyter lab`` serving ``root_dir``; return ``(process, "http://127.0.0.1:PORT/lab?token=…")``.

    Waits (at most ``timeout`` s) until ``/api/status`` answers; on failure the server is stopped
    and RuntimeError carries its log. Always pair with :func:`stop_jupyterlab` (or use
    :func:`jupyterlab`).
    """
    port = port or free_port()
    token = secrets.token_hex(16)
    state = Path(tempfile.mkdtemp(prefix="pmtrec-jlab-"))
    config_dir, runtime_dir, data_dir = state / "config", state / "runtime", state / "data"
    for d in (config_dir, runtime_dir, data_dir, state / "ipython"):
        d.mkdir()
    # No news/update toasts over the page (they come from the network and change screenshots).
    lab_config = {"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}}
    (config_dir / "jupyter_lab_config.json").write_text(json.dumps(lab_config))
    # ... and no "get notified about Jupyter news?" toast: it asks while fetchNews is "none".
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_RUNTIME_DIR": str(runtime_dir),
        "JUPYTER_DATA_DIR": str(data_dir),  # sys.prefix/share/jupyter (kernels, lab extensions) stays
        "IPYTHONDIR": str(state / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PLOTLY_RENDERER": os.environ.get("PLOTLY_RENDERER", "notebook"),
    }
    cmd = [
        _jupyter_executable(),
        "lab",
        "--no-browser",
        f"--IdentityProvider.token={token}",  # ServerApp.token is deprecated since jupyter_server 2
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={Path(root_dir).resolve()}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension manager
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers/CI often run as root
        cmd.append("--allow-root")
    log_path = state / "jupyterlab.log"
    log_file = log_path.open("wb")
    # A new session: the server is its own process group, so a last-resort killpg hits only it.
    proc = JupyterLabProcess(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    proc.base_url, proc.token = f"http://127.0.0.1:{port}", token
    proc.state_dir, proc.log_path, proc._log_file = state, log_path, log_file

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = proc.log_tail()
            stop_jupyterlab(proc)
            raise RuntimeError(f"jupyter lab exited with {proc.returncode} while starting:\n{tail}")
        try:
            _api(proc, "/api/status", timeout=2.0)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            tail = proc.log_tail()
            stop_jupyterlab(proc)
            raise RuntimeError(f"jupyter lab did not answer /api/status within {timeout:.0f} s:\n{tail}")
        time.sleep(0.25)
    return proc, f"{proc.base_url}/lab?token={token}"


def stop_jupyterlab(proc: JupyterLabProcess, timeout: float = 15.0) -> None:
    """Stop the server and its kernels, then delete its state dir. Safe to call twice.

    Kernels first (REST), then ``POST /api/shutdown``, then SIGTERM, then SIGKILL of the server's
    own process group (it was started in a new session, so the group is exactly its processes).
    """
    if proc.poll() is None:
        with suppress(Exception):
            for kernel in _api(proc, "/api/kernels") or []:
                with suppress(Exception):
                    _api(proc, f"/api/kernels/{kernel['id']}", method="DELETE")
        with suppress(Exception):
            _api(proc, "/api/shutdown", method="POST")
        try:
            proc.wait(timeout=timeout / 2)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    with suppress(Exception):
        proc._log_file.close()
    shutil.rmtree(proc.state_dir, ignore_errors=True)


@contextmanager
def jupyterlab(
    root_dir: str | os.PathLike, port: int | None = None, timeout: float = 90.0
) -> Iterator[tuple[JupyterLabProcess, str]]:
    """Context manager around :func:`start_jupyterlab` that always stops the server."""
    proc, url = start_jupyterlab(root_dir, port=port, timeout=timeout)
    try:
        yield proc, url
    finally:
        stop_jupyterlab(proc)


def notebook_url(server_url: str, relpath: str | os.PathLike) -> str:
    """The URL opening ``relpath`` (relative to the server's root dir) in JupyterLab."""
    parts = urllib.parse.urlsplit(server_url)
    token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
    path = "/lab/tree/" + urllib.parse.quote(Path(relpath).as_posix())
    query = urllib.parse.urlencode({"token": token}) if token else ""
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


# ---------------------------------------------------------------------------------------------
# browser


@contextmanager
def started_playwright() -> Iterator[Any]:
    """Playwright's sync API, started for the block; skip (fail under CI) when it is not installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the venv has it
        skip_or_fail("playwright (python package) is not installed")
    with sync_playwright() as pw:
        yield pw


@contextmanager
def new_page(browser: Any, width: int = 1280, height: int = 900, timeout: float = 30.0) -> Iterator[Any]:
    """A page in a fresh browser context (no shared storage) of ``width`` x ``height`` with a default
    timeout of ``timeout`` seconds; the context is closed after the block."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(timeout * 1000)
    try:
        yield context.new_page()
    finally:
        context.close()


def launch_browser(playwright: Any, headless: bool = True, **kwargs: Any) -> Any:
    """Launch the system Chromium through ``playwright`` (a started ``sync_playwright()``)."""
    return playwright.chromium.launch(
        executable_path=chromium_path(),
        headless=headless,
        args=[*CHROMIUM_ARGS, *kwargs.pop("args", [])],
        timeout=kwargs.pop("timeout", 60_000),
        **kwargs,
    )


def _has_app(page: Any) -> bool:
    return bool(page.evaluate("() => Boolean(window.jupyterapp && window.jupyterapp.commands)"))


def wait_for_kernel_idle(page: Any, timeout: float = 60.0) -> None:
    """Wait until the current notebook's session is ready and its kernel idle."""
    if _has_app(page):
        page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const ctx = w && w.sessionContext;
                const k = ctx && ctx.session && ctx.session.kernel;
                return Boolean(ctx && ctx.isReady && k && k.status === 'idle');
            }""",
            timeout=timeout * 1000,
            polling=200,
        )
    else:
        page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(
            state="attached", timeout=timeout * 1000
        )


def open_notebook(page: Any, server_url: str, relpath: str | os.PathLike, timeout: float = 90.0) -> None:
    """Open ``relpath`` in JupyterLab and wait until its cells are shown and its kernel is idle."""
    page.goto(notebook_url(server_url, relpath), timeout=timeout * 1000)
    first_cell = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first
    first_cell.wait_for(state="visible", timeout=timeout * 1000)
    if _has_app(page):
        page.wait_for_function(
            "() => Boolean(window.jupyterapp.shell.currentWidget "
            "&& window.jupyterapp.shell.currentWidget.sessionContext)",
            timeout=timeout * 1000,
        )
    wait_for_kernel_idle(page, timeout)


def run_all_cells(page: Any, timeout: float = 120.0) -> bool:
    """Run every cell of the current notebook and wait (bounded) until execution ends.

    Uses the ``notebook:run-all-cells`` command when the app is exposed (its promise resolves once
    the last cell replied); otherwise the "Run > Run All Cells" menu plus waiting for every prompt
    to show a number. Returns False when a cell raised (execution stops there, as in the UI).
    """
    if _has_app(page):
        ok = page.evaluate(
            """async (ms) => {
                const run = window.jupyterapp.commands.execute('notebook:run-all-cells');
                const limit = new Promise((_, reject) =>
                    setTimeout(() => reject(new Error(`run-all-cells still running after ${ms} ms`)), ms));
                return await Promise.race([run, limit]);
            }""",
            timeout * 1000,
        )
    else:
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'));
            }""",
            timeout=timeout * 1000,
        )
        ok = page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
    wait_for_kernel_idle(page, timeout)
    return bool(ok)


def wait_for_output_text(page: Any, text: str | re.Pattern[str], timeout: float = 60.0) -> Any:
    """Wait until a cell output area shows ``text`` (substring or regex); return its Locator."""
    loc = page.locator(".jp-OutputArea-output", has_text=text).first
    loc.wait_for(state="visible", timeout=timeout * 1000)
    return loc


def click_widget_checkbox(page: Any, description: str, timeout: float = 30.0) -> bool:
    """Click the ipywidgets Checkbox whose description is exactly ``description``; return its new state.

    ipywidgets 8 renders ``<label><input type=checkbox><span>description</span></label>``, so the
    input's accessible name is the description; it is looked up inside output areas only.
    """
    box = page.locator(".jp-OutputArea").get_by_role("checkbox", name=description, exact=True).first
    box.wait_for(state="visible", timeout=timeout * 1000)
    before = box.is_checked()
    box.click(timeout=timeout * 1000)
    page.wait_for_function(
        "([el, before]) => el.checked !== before", arg=[box.element_handle(), before], timeout=timeout * 1000
    )
    return not before


@contextmanager
def screenshot_on_failure(page: Any, name: str) -> Iterator[None]:
    """On any exception inside the block, save ``<name>-failure.png`` before re-raising."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            save_screenshot(page, f"{name}-failure.png")
        raise


def save_screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save a PNG under test-output/browser/ (git-ignored) and return its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / (name if name.endswith(".png") else f"{name}.png")
    page.screenshot(path=str(path), full_page=full_page)
    return path
