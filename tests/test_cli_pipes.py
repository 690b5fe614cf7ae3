"""A command whose reader has gone (``| head -1`` after its line; here ``| true``, which reads
nothing, so the pipe is closed before the command writes) stops quietly: no ``error: ... Broken
pipe`` line, exit 141 as a shell reports a tool stopped by a closed pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "pmtrec-lab"


@pytest.mark.parametrize("args", ["methods", "methods --markdown", "datasets list"])
def test_output_to_a_closed_pipe_is_not_an_error(args):
    proc = subprocess.run(
        f"set -o pipefail; {CLI} {args} | true",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
    )
    assert "error" not in proc.stderr and "Broken pipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
