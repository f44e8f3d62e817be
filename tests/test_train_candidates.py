"""scripts/train_candidates.py (GPU-slot training of weight candidates): how many epochs fit before the deadline,
and the names it accepts. The training itself is the trainer's, tested in test_train.py."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    module = importlib.import_module("train_candidates")
    monkeypatch.setattr(module, "T0", time.time())
    yield module
    sys.modules.pop("train_candidates", None)


def _plan(script, steps: int = 200):
    return script.Plan(Path("data"), Path("run"), 0, steps, 0.06, "cuda", 4)


def test_epochs_fit_the_deadline(script) -> None:
    # probe: 0.1 s per loaded case, 60 steps of 0.02 s, then 2 inner cases validated in 0.3 s each
    probe = {"events": {"epoch-0": 1.2, "validated-0": 1.2 + 60 * 0.02 + 0.6}, "step_s": 0.02}
    # 420 cases: 23 inner ones -> an epoch of 200 steps is 200 * 0.02 * 1.15 + 23 * 0.3 = 11.5 s; loading
    # 1.2 * 0.1 * 420 = 50.4 s and 30 s for the end leave 459.6 s of 540: 39 epochs
    assert script.epochs_that_fit(probe, 60, _plan(script), 420, 540.0) == 39
    # twice the step time: epochs of 200 * 0.04 * 1.15 + 6.9 = 16.1 s, 28 of them; a deadline already passed
    # still gives the minimum of 2
    probe = {"events": {"epoch-0": 1.2, "validated-0": 1.2 + 60 * 0.04 + 0.6}, "step_s": 0.04}
    assert script.epochs_that_fit(probe, 60, _plan(script), 420, 540.0) == 28
    assert script.epochs_that_fit(probe, 60, _plan(script), 420, 10.0) == 2


def test_unknown_candidate_is_refused(script, capsys) -> None:
    with pytest.raises(SystemExit):
        script.main(["out", "--only", "finetune,bigger"])
    assert "unknown candidate(s) bigger" in capsys.readouterr().err
