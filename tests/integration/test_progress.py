"""Progress bars: drawn on a terminal, silent with --json or when stderr is no terminal."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from adrizzle.progress import progress, wanted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SINGLE_STAGE = Path(__file__).resolve().parents[2] / "examples" / "single_stage.py"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_only_on_a_terminal_and_not_when_quiet() -> None:
    assert not wanted(stream=io.StringIO())
    assert not wanted(quiet=True, stream=FakeTerminal())
    assert wanted(stream=FakeTerminal())

    with progress(5, "steps", stream=io.StringIO()) as bar:
        bar.update(5)
        assert not bar.shown
    out = FakeTerminal()
    with progress(5, "steps", stream=out) as bar:
        assert bar.shown
        bar.update(2)
        bar.set_total_done(5)
    assert "steps" in out.getvalue()
    assert "/5" in out.getvalue()


def run_on_terminal(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run the example with stderr on a 100-column pseudo-terminal; (code, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(SINGLE_STAGE), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_example_draws_a_bar_on_a_terminal() -> None:
    code, out, err = run_on_terminal("300", "1", "--records", "10")
    assert code == 0, err
    assert "G=1" in err
    assert "/300" in err
    assert "ms per micro-batch" in out


def test_example_with_json_draws_no_bar() -> None:
    code, out, err = run_on_terminal("300", "1", "--records", "10", "--json")
    assert code == 0, err
    assert "/300" not in err
    assert json.loads(out.splitlines()[-1])["batches"] == 300
