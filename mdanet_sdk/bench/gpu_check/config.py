"""What one GPU check does: :class:`CheckConfig` (sizes, time limits, where files go) and the step list
:data:`STEPS`. Nothing here imports torch: the parent process stays light and its clock honest."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Step", "STEPS", "STEP_NAMES", "CheckConfig", "DEFAULT_LIMITS", "DEFAULT_BUDGET_S"]


@dataclass(frozen=True)
class Step:
    """One step of the check: run in a child process ``target`` (``module:function``, called with the
    :class:`CheckConfig` and a :class:`~mdanet_sdk.bench.gpu_check.child.Recorder`)."""

    name: str
    title: str
    target: str


_TORCH_STEPS = "mdanet_sdk.bench.gpu_check.torch_steps"
_TOOL_STEPS = "mdanet_sdk.bench.gpu_check.tool_steps"
#: The steps, in order (issue 17's list (a)–(f), then (g) training); later steps use what earlier ones left (the build, the artefacts).
STEPS = (
    Step("build", "build the CUDA kernels against the installed CUDA torch", f"{_TOOL_STEPS}:build"),
    Step("tests", "the gpu-marked tests", f"{_TOOL_STEPS}:gpu_tests"),
    Step(
        "ops",
        "native CUDA ops against the reference at every paper-preset call",
        "mdanet_sdk.bench.gpu_check.op_check:compare_ops",
    ),
    Step(
        "tensorrt",
        "Torch-TensorRT fp16 artefacts (decomposition, plugin): export + validate",
        f"{_TORCH_STEPS}:tensorrt",
    ),
    Step("bench", "forward: eager fp32 / eager bf16+channels_last / compiled / TensorRT fp16", f"{_TORCH_STEPS}:bench"),
    Step("segment", "end-to-end `mdanet-sdk segment` of a phantom set", f"{_TORCH_STEPS}:segment"),
    Step("train", "a short training run: seconds per optimizer step, finite losses", f"{_TORCH_STEPS}:train"),
)
STEP_NAMES = tuple(s.name for s in STEPS)
#: Seconds each step may run on an H100/H200; together with the process start-ups they fit :data:`DEFAULT_BUDGET_S`
#: only when the build is quick, so the budget, not these, bounds the whole run.
DEFAULT_LIMITS = {"build": 150, "tests": 60, "ops": 45, "tensorrt": 100, "bench": 100, "segment": 45, "train": 90}
#: The whole run's wall-clock budget: under 8 minutes with room for the summary.
DEFAULT_BUDGET_S = 470


@dataclass
class CheckConfig:
    """Everything a step needs to know, written to a file for the child processes.

    Attributes:
        out: the JSON file of the run (rewritten atomically as results arrive); step logs go beside it.
        workdir: scratch folder for phantoms, artefacts and outputs.
        repo: the source tree (where ``pyproject.toml`` and ``tests/`` are), for the build and the tests.
        dry_run: run on the CPU at tiny sizes (no build, tests only collected): the pipeline's non-GPU parts.
        device: ``cuda`` (``cpu`` in a dry run).
        preset: network preset of the forward benchmark (the ops are always compared at ``paper`` shapes).
        size: slice side of the ops, TensorRT and benchmark steps.
        batch_sizes: benchmark batch sizes; the TensorRT artefacts' batch range spans them.
        ops_batches: batch sizes at which the op calls are captured and compared.
        repeats: timed rounds of the benchmark (after one warm-up round).
        kinds: modality kinds of the end-to-end phantom set.
        phantom_shape: ``(X, Y, Z)`` of the phantoms (None: the benchmark's ISLES-like volumes).
        n_cases: phantoms per kind.
        compile_backend: ``torch.compile`` backend (``eager`` in a dry run: traced by dynamo, no code generation).
        train_cases: MRI phantoms of the training step (fold 0 of 3 folds validates on a third of them).
        train_size: model grid of the training step (the bundled MRI recipe's 128).
        train_epochs, train_steps: epochs and optimizer steps per epoch of the training step (batch 16).
        budget_s: wall-clock budget of the whole run; a step's limit is cut to what is left of it.
        limits: step name → its own time limit in seconds.
    """

    out: str
    workdir: str
    repo: str
    dry_run: bool = False
    device: str = "cuda"
    preset: str = "paper"
    size: int = 256
    batch_sizes: tuple[int, ...] = (1, 16, 64)
    ops_batches: tuple[int, ...] = (1, 16)
    repeats: int = 5
    kinds: tuple[str, ...] = ("mri", "ctp")
    phantom_shape: tuple[int, int, int] | None = None
    n_cases: int = 4
    compile_backend: str = "inductor"
    train_cases: int = 6
    train_size: int = 128
    train_epochs: int = 2
    train_steps: int = 30
    budget_s: float = DEFAULT_BUDGET_S
    limits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LIMITS))

    @classmethod
    def dry(cls, **overrides: Any) -> "CheckConfig":
        """The ``--dry-run`` configuration: CPU, the small preset, 32² slices, one 48×40×3 MRI phantom."""
        base: dict[str, Any] = dict(
            dry_run=True,
            device="cpu",
            preset="small",
            size=32,
            batch_sizes=(1, 2),
            ops_batches=(1,),
            repeats=1,
            kinds=("mri",),
            phantom_shape=(48, 40, 3),
            n_cases=1,
            compile_backend="eager",
            train_cases=3,
            train_size=32,
            train_epochs=1,
            train_steps=4,
            # a CPU shared with other work: room for slow process starts, never the GPU run's tight limits
            budget_s=900.0,
            limits=dict.fromkeys(DEFAULT_LIMITS, 180.0),
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> "CheckConfig":
        """The config :meth:`save` wrote (lists back to tuples)."""
        raw = json.loads(path.read_text())
        tuples = {f.name for f in fields(cls) if "tuple" in str(f.type)}
        values: dict[str, Any] = {k: tuple(v) if k in tuples and v is not None else v for k, v in raw.items()}
        return cls(**values)
