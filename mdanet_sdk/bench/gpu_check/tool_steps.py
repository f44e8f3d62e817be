"""Steps (a) and (b) of the GPU check, which drive tools: the CUDA build (pip + CMake) and the gpu-marked
tests (pytest). Each is ``fn(config, recorder)`` run in a child process (:mod:`.child`)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from mdanet_sdk.bench.gpu_check.child import Recorder, Skip
from mdanet_sdk.bench.gpu_check.config import CheckConfig

__all__ = ["build_command", "build", "gpu_test_files", "gpu_tests"]

#: What ``pip install --no-build-isolation`` needs importable besides torch (scripts/bootstrap.sh installs them).
_BUILD_MODULES = ("scikit_build_core", "pybind11", "cmake", "ninja")
#: Lines a pytest run prints per failing test in the record.
_MAX_FAILURES = 20


def build_command() -> list[str]:
    """The build: an editable install against the installed torch, no dependency changes."""
    return [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]


def _nvcc() -> str | None:
    """nvcc on PATH, from ``CUDACXX``, or in the usual toolkit folder."""
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _native_after_build() -> dict[str, object]:
    """The op library as a fresh interpreter sees it after the build (this process loaded the old one)."""
    probe = (
        "import json; from mdanet_sdk.ops import native; print(json.dumps({'loaded': native.available(), "
        "'cuda': native.cuda_built(), 'error': native.load_error(), 'build': native.build_info()}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"loaded": False, "cuda": False, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    import json

    return json.loads(lines[-1])


def build(config: CheckConfig, rec: Recorder) -> None:
    """(a) Build the native ops with the CUDA kernels (``MDANET_CUDA=ON``) for this GPU's architecture only."""
    import torch

    command = build_command()
    rec.put("command", "MDANET_CUDA=ON " + " ".join(command[2:]))
    if config.dry_run:
        raise Skip(
            "dry run: the build is not run (it would be: MDANET_CUDA=ON pip install --no-build-isolation --no-deps -e .)"
        )
    if torch.version.cuda is None or not torch.cuda.is_available():
        raise Skip(
            f"no usable CUDA: torch {torch.__version__} (CUDA {torch.version.cuda}), is_available()={torch.cuda.is_available()}; install a CUDA torch on a GPU machine"
        )
    missing = [m for m in _BUILD_MODULES if importlib.util.find_spec(m) is None]
    nvcc = _nvcc()
    if missing or nvcc is None:
        what = ", ".join([*missing, *([] if nvcc else ["nvcc (the CUDA toolkit; or set CUDACXX)"])])
        rec.finish("failed", f"failed: the build needs {what}; pip install scikit-build-core pybind11 cmake ninja")
        return
    major, minor = torch.cuda.get_device_capability()
    env = {**os.environ, "MDANET_CUDA": "ON", "MDANET_CUDA_ARCHS": f"{major}{minor}", "CUDACXX": nvcc}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 4))
    rec.put("cuda_archs", f"{major}{minor}")
    done = subprocess.run(command, cwd=config.repo, env=env, capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-20000:], sep="\n")  # into the step's log
    native = _native_after_build()
    rec.put("native", native)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        rec.finish("failed", f"failed: pip exited {done.returncode}: {last}")
    elif not native.get("cuda"):
        rec.finish("failed", f"failed: built, but the op library has no CUDA kernels ({native.get('error')})")
    else:
        rec.finish(
            "ok", f"CUDA kernels built for sm_{major}{minor} (torch {torch.__version__}, CUDA {torch.version.cuda})"
        )


def gpu_test_files(repo: Path) -> list[Path]:
    """The test files that carry ``pytest.mark.gpu`` somewhere (found by reading them: a new one counts too)."""
    return sorted(p for p in (repo / "tests").glob("test_*.py") if "mark.gpu" in p.read_text(errors="replace"))


def _junit_counts(path: Path) -> tuple[dict[str, int], list[str]]:
    """Counts (passed, failed, errors, skipped) and the failing tests with their first message line."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[str] = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
            continue
        key = {"failure": "failed", "error": "errors", "skipped": "skipped"}[outcome.tag]
        counts[key] += 1
        if key != "skipped" and len(failures) < _MAX_FAILURES:
            failures.append(f"{name}: {_first_line(outcome.get('message') or '')}")
    return counts, failures


def gpu_tests(config: CheckConfig, rec: Recorder) -> None:
    """(b) ``pytest -m gpu`` on the files that have gpu tests (in a dry run only collected, not run)."""
    import torch

    files = gpu_test_files(Path(config.repo))
    if not files:
        raise Skip(f"no tests/ folder with gpu-marked tests under {config.repo}")
    rec.put("files", [str(p.relative_to(config.repo)) for p in files])
    base = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", *map(str, files)]
    if config.dry_run:
        done = subprocess.run([*base, "--collect-only", "-q"], cwd=config.repo, capture_output=True, text=True)
        collected = [line for line in done.stdout.splitlines() if "::" in line]
        rec.put("collected", collected)
        status = "ok" if done.returncode == 0 and collected else "failed"
        rec.finish(status, f"dry run: {len(collected)} gpu tests collected in {len(files)} files, not run")
        return
    if not torch.cuda.is_available():
        raise Skip("no CUDA device: the gpu tests would all skip")
    junit = Path(config.workdir) / "gpu-tests.xml"
    done = subprocess.run([*base, "-q", "-rfE", f"--junitxml={junit}"], cwd=config.repo, capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
    if not junit.is_file():
        last = (done.stdout.strip().splitlines() or ["no output"])[-1]
        rec.finish("failed", f"failed: pytest exited {done.returncode} without a report: {last}")
        return
    counts, failures = _junit_counts(junit)
    rec.put("counts", counts)
    rec.put("failures", failures)
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    # on a GPU with the kernels built, a run that passes nothing has skipped what it came for
    good = counts["failed"] == counts["errors"] == 0 and counts["passed"] > 0
    rec.finish("ok" if good else "failed", summary or "no test ran")


def _first_line(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().splitlines()[0]) if text.strip() else ""
