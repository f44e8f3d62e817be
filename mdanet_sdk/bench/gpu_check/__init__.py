"""The one-command GPU check (issue 17): ``scripts/gpu_check.sh`` = ``python -m mdanet_sdk.bench.gpu_check``.

Sized for one short slot on one H100/H200 with a CUDA torch installed (under 8 minutes by default), it runs, each
step in its own child process with its own time limit:

(a) ``build``: ``pip install --no-build-isolation --no-deps -e .`` with ``MDANET_CUDA=ON`` (the CUDA kernels
    against the installed CUDA torch, for this GPU's architecture only);
(b) ``tests``: the ``gpu``-marked tests;
(c) ``ops``: the native CUDA ops against the reference at every call a paper-preset forward makes (captured
    from the model, not listed by hand): values (fp32, fp16, bf16, channels_last) and gradients;
(d) ``tensorrt``: Torch-TensorRT fp16 artefacts with the reference decomposition and with the plugins,
    exported, validated and loaded back;
(e) ``bench``: eager fp32 (native and reference ops) / eager bf16 + channels_last / ``torch.compile`` /
    TensorRT fp16 at batch 1, 16, 64 on 256² slices, timed round-robin;
(f) ``segment``: ``mdanet-sdk segment`` of a phantom set per modality kind, plus the Segmenter's cases/s;
(g) ``train``: a short training run of the ``small`` preset on MRI phantoms: seconds per optimizer step.

It writes one JSON beside one log per step (the machine from :func:`mdanet_sdk.info.collect_info`, each step's status, time, summary
and data), rewritten atomically as results arrive, so a run cut short still leaves what it measured, and prints
a summary table. A missing GPU, TensorRT or native build gives a one-line skip for the steps that need them.
``--dry-run`` runs the non-GPU parts of the whole pipeline on the CPU at tiny sizes.

Modules: :mod:`.config` (:class:`CheckConfig`, :data:`STEPS`), :mod:`.runner` (child processes, limits, the
JSON, the summary), :mod:`.child` (a step's :class:`Recorder`), :mod:`.tool_steps` (build, tests),
:mod:`.op_check` (ops), :mod:`.torch_steps` (tensorrt, bench, segment, train), :mod:`.cli` (the arguments).
"""

from __future__ import annotations

from mdanet_sdk.bench.gpu_check.child import Recorder, Skip
from mdanet_sdk.bench.gpu_check.cli import main, parse_args
from mdanet_sdk.bench.gpu_check.config import DEFAULT_BUDGET_S, DEFAULT_LIMITS, STEP_NAMES, STEPS, CheckConfig, Step
from mdanet_sdk.bench.gpu_check.runner import SCHEMA, SCHEMA_VERSION, exit_code, run_check, summary_lines

__all__ = [
    "CheckConfig",
    "Step",
    "STEPS",
    "STEP_NAMES",
    "DEFAULT_LIMITS",
    "DEFAULT_BUDGET_S",
    "Recorder",
    "Skip",
    "SCHEMA",
    "SCHEMA_VERSION",
    "run_check",
    "summary_lines",
    "exit_code",
    "parse_args",
    "main",
]
