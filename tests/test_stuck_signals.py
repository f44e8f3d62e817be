"""SIGTERM ends the command line even inside native code that never returns to Python (a crafted TorchScript
artefact's endless loop): the interpreter cannot act on the signal there, so a watcher thread ends the process
after a grace period, unless the handler ran (a long clean-up is left to finish). A forked worker's own SIGTERM
never counts as the command's."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A command registered on the real app (main() installs the SIGTERM handling), with a 1 s grace.
_CHILD = '''
import sys, time
import torch
import mdanet_sdk.cli._app as cli

cli.STUCK_GRACE_S = 1.0

ENDLESS = """
def endless(x: torch.Tensor) -> torch.Tensor:
    while bool(x.sum() > 0):
        x = x + 1
    return x
"""

@cli.app.command("stuck")
def stuck() -> None:
    endless = torch.jit.CompilationUnit(ENDLESS).endless  # runs in the TorchScript interpreter, never in Python
    print("ready", flush=True)
    endless(torch.ones(1))

@cli.command("cleanup")
def cleanup() -> None:
    try:
        print("ready", flush=True)  # inside the try: the signal may come at once
        time.sleep(60)
    finally:  # a clean-up longer than the grace (worker processes finishing their cases): left to finish
        time.sleep(3)

@cli.command("stuck-cleanup")
def stuck_cleanup() -> None:
    endless = torch.jit.CompilationUnit(ENDLESS).endless
    try:
        print("ready", flush=True)  # inside the try: the signal may come at once
        time.sleep(60)
    finally:  # a clean-up stuck in native code: only a second signal ends it
        endless(torch.ones(1))

@cli.app.command("pool")
def pool() -> None:
    import multiprocessing as mp
    worker = mp.get_context("fork").Process(target=time.sleep, args=(60,))
    worker.start()
    time.sleep(0.5)
    worker.terminate()  # SIGTERM to the worker alone
    worker.join()
    print("ready", flush=True)
    time.sleep(3.0)  # longer than the grace: the watcher must not have taken the worker's signal for ours
    print("done", flush=True)

sys.argv = ["mdanet-sdk", sys.argv[1]]
cli.main()
'''


def _start(command: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _ended(child: subprocess.Popen) -> tuple[int, str]:
    """The child's exit code and the last line it wrote to stderr (it is killed if it has not ended in 60 s)."""
    try:
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    return child.returncode, (err.strip().splitlines() or [""])[-1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_ends_a_command_stuck_in_native_code() -> None:
    child = _start("stuck")
    time.sleep(0.5)
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    code, line = _ended(child)
    assert 1.0 <= time.monotonic() - sent < 30
    assert (code, line) == (
        143,
        "error: still running 1 s after SIGTERM (native code that does not return); stopped without clean-up.",
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("sent", "code", "said"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_clean_up_longer_than_the_grace_is_left_to_finish(sent: int, code: int, said: str) -> None:
    child = _start("cleanup")
    started = time.monotonic()
    child.send_signal(sent)
    ended, line = _ended(child)
    assert ended == code and time.monotonic() - started >= 3 and line.startswith(f"error: {said}"), line


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_sigterm_ends_a_clean_up_stuck_in_native_code() -> None:
    child = _start("stuck-cleanup")
    child.send_signal(signal.SIGTERM)
    time.sleep(3)  # the handler ran; the clean-up is now stuck, and the first signal alone never ends it
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert _ended(child) == (143, "error: still running 1 s after a second SIGTERM; stopped without clean-up.")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_forked_workers_sigterm_is_not_the_commands() -> None:
    child = _start("pool")
    out, err = child.communicate(timeout=60)
    assert (child.returncode, out.strip()) == (0, "done"), err
