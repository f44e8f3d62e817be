"""The networks and backends the benchmark times: a seeded network per preset, and each backend
(:data:`~mdanet_sdk.bench.records.BACKENDS`) as a :class:`Runner` with the eager network's weights, grouped into
the contenders of one forward comparison."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from mdanet_sdk import ops
from mdanet_sdk.bench.records import BACKENDS, BenchSettings, ForwardRecord
from mdanet_sdk.config import MODALITY_GROUPS, MDANetConfig
from mdanet_sdk.device import autocast
from mdanet_sdk.errors import BackendUnavailableError, InputError, MDANetError
from mdanet_sdk.model import SegmentationModel, build_model

__all__ = [
    "BACKEND_OPS",
    "Progress",
    "quiet",
    "kind_channels",
    "build_network",
    "count_flops",
    "Runner",
    "make_runner",
    "Contender",
    "contenders",
    "one_line",
]

#: The op implementation behind the eager and native backends.
BACKEND_OPS = {"eager": "reference", "native": "native"}
#: File suffix of each artefact backend (mdanet_sdk.export's conventions).
_SUFFIX = {"torchscript": ".ts", "exported": ".pt2", "tensorrt": ".pt2"}

#: A progress callback: called with one short line before each step.
Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """The default progress callback: say nothing."""


def kind_channels(kind: str) -> int:
    """Input channels of ``kind``: both modality groups stacked (ctp 4, mri 2)."""
    return sum(len(group) for group in MODALITY_GROUPS[kind])


def build_network(
    preset: str, kind: str = "ctp", ops_impl: str = "reference", seed: int = 0, size: int | None = None
) -> nn.Module:
    """A network in eval mode with seeded random weights.

    Args:
        preset: an :class:`MDANetConfig` preset (``paper``, ``small``, ``unet``, ``attention-unet``) or the
            peer ``monai-basicunet`` (MONAI ``BasicUNet`` at the paper's U-Net widths 64…1024, so it and our
            ``unet`` are the same architecture in two implementations).
        kind: the modality kind, ``ctp`` (4 input channels) or ``mri`` (2).
        ops_impl: implementation of the MDANet ops (``reference`` = eager composite, ``native``).
        seed: weight initialisation seed (the same seed gives every backend the same weights).
        size: the input side the network is built for: the GCFB node grid is its bottleneck (default 128).

    Raises:
        BackendUnavailableError: MONAI is asked for but not installed.
    """
    torch.manual_seed(seed)
    if preset == "monai-basicunet":
        try:
            from monai.networks.nets import BasicUNet
        except Exception as exc:  # noqa: BLE001 - a broken MONAI install is "unavailable" too
            raise BackendUnavailableError(
                f"MONAI is not installed ({type(exc).__name__}); `pip install monai` adds this peer."
            ) from None
        net = BasicUNet(
            spatial_dims=2, in_channels=kind_channels(kind), out_channels=2, features=(64, 128, 256, 512, 1024, 64)
        )
        return net.eval()
    return build_model(MDANetConfig.from_preset(preset, kind).resolved(size), ops=ops_impl).eval()


def count_flops(model: nn.Module, example: Tensor) -> float:
    """Forward FLOPs per slice of ``model`` on ``example`` ``(B, C, H, W)`` (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(example)
    return counter.get_total_flops() / example.shape[0]


@dataclass
class Runner:
    """A backend ready to run: ``fn(x (B, C, H, W)) → logits (B, 2, H, W)``.

    Attributes:
        fn: the callable.
        ops: the op implementation inside (``reference`` = eager composite, ``native``; None for peers).
        autocast: whether lower precisions come from ``torch.autocast`` around ``fn`` (eager and native);
            artefacts are instead exported in the precision they compute in.
    """

    fn: Callable[[Tensor], Tensor]
    ops: str | None
    autocast: bool = True

    def bind(self, x: Tensor, precision: str = "fp32") -> Callable[[], Tensor]:
        """A call without arguments running ``fn(x)`` under inference mode at ``precision``."""
        ctx_precision = precision if self.autocast else "fp32"

        def call() -> Tensor:
            with torch.inference_mode(), autocast(x.device, ctx_precision):
                return self.fn(x)

        return call


def make_runner(
    backend: str,
    eager: nn.Module,
    preset: str,
    kind: str,
    *,
    size: int | None = None,
    batch_sizes: Sequence[int] = (1,),
    precision: str = "fp32",
    workdir: Path | None = None,
) -> Runner:
    """``eager``'s weights on ``backend``.

    Args:
        backend: one of :data:`~mdanet_sdk.bench.records.BACKENDS`.
        eager: the baseline network (``ops="reference"``) on the target device, in eval mode.
        preset: its preset (names the artefact file).
        kind: the modality kind, ``ctp`` or ``mri``.
        size: slice side an artefact is exported for (artefact backends).
        batch_sizes: batch sizes an artefact must accept (its dynamic batch range spans them).
        precision: what an artefact computes in (``fp32``, ``fp16``, ``bf16``).
        workdir: where artefacts are written (artefact backends).

    Raises:
        BackendUnavailableError: the backend cannot run here; the message says why.
        InputError: unknown backend.
    """
    device = next(eager.parameters()).device
    if backend not in BACKENDS:
        raise InputError(f"Unknown backend {backend!r}: use one of {', '.join(BACKENDS)} or all.")
    if backend == "eager":
        return Runner(eager, "reference" if isinstance(eager, SegmentationModel) else None)
    if not isinstance(eager, SegmentationModel):  # a network of another library
        raise BackendUnavailableError(f"peers run eager only, not {backend}.")
    if backend == "native":
        return Runner(_native_twin(eager), "native")
    return _artifact_runner(backend, eager, preset, kind, size, batch_sizes, precision, workdir, device)


def _artifact_runner(
    backend: str,
    eager: SegmentationModel,
    preset: str,
    kind: str,
    size: int | None,
    batch_sizes: Sequence[int],
    precision: str,
    workdir: Path | None,
    device: torch.device,
) -> Runner:
    """``eager`` exported to an artefact of ``backend`` (``torchscript``, ``exported``, ``tensorrt``) in
    ``workdir``, loaded back on ``device`` (arguments: :func:`make_runner`).

    Raises:
        BackendUnavailableError: the export package, or TensorRT, is missing here.
    """
    try:
        from mdanet_sdk import export
    except ImportError:
        raise BackendUnavailableError("mdanet_sdk.export is missing from this installation.") from None
    if backend == "tensorrt" and (reason := export.tensorrt_unavailable_reason()):
        raise BackendUnavailableError(reason)
    if size is None or workdir is None:
        raise ValueError(f"the {backend} backend needs size and workdir")
    from mdanet_sdk.data.preprocess import PreprocessConfig

    # An artefact holds what deployment would ship: the native ops when built, else the composite inlined.
    source = _native_twin(eager) if ops.implementation("auto", device) == "native" else eager
    sizes = sorted(set(batch_sizes))
    result = export.export_model(
        source,
        backend,
        workdir / f"{preset}-{kind}-{size}-{precision}{_SUFFIX[backend]}",
        preprocess=PreprocessConfig(size=size).to_dict(),
        meta={"note": "benchmark: random weights"},
        precision=precision,
        batch=export.BatchRange(sizes[0], sizes[len(sizes) // 2], sizes[-1]),
        size=(size, size),
        device=device,
    )
    return Runner(export.load_artifact(result.path, device=device), result.ops, autocast=False)


def _native_twin(eager: SegmentationModel) -> SegmentationModel:
    """``eager`` rebuilt with the native ops (``build_model(config, ops="native")``) and the same weights.

    Raises:
        BackendUnavailableError: the native ops are not built.
    """
    device = next(eager.parameters()).device
    ops.implementation("native", device)  # raises, saying why, where the kernels cannot run
    twin = build_model(eager.config, ops="native").eval().to(device)
    twin.load_state_dict(eager.state_dict())
    return twin


@dataclass
class Contender:
    """One network on one backend, ready to time: a runner per precision."""

    section: str
    backend: str
    preset: str
    model: str
    flops: float
    runners: dict[str, Runner]


def forward_record(settings: BenchSettings, device: torch.device, **fields_: Any) -> ForwardRecord:
    """A forward record with the run's kind, channels, size and device filled in."""
    return ForwardRecord(
        kind=settings.kind, in_channels=kind_channels(settings.kind), size=settings.size, device=str(device), **fields_
    )


def one_line(exc: BaseException) -> str:
    """``exc`` as one line, ``Type: message`` (an error's first line, for a record's ``reason``)."""
    return (f"{type(exc).__name__}: {exc}".strip().splitlines() or [type(exc).__name__])[0]


def _failed(
    settings: BenchSettings,
    device: torch.device,
    section: str,
    backend: str,
    preset: str,
    model: str,
    status: str,
    reason: str,
    precisions: Sequence[str],
) -> list[ForwardRecord]:
    """``status`` records (``unavailable`` or ``error``, with ``reason``) for each of ``precisions`` and each
    batch size of the run."""
    return [
        forward_record(
            settings,
            device,
            section=section,
            backend=backend,
            preset=preset,
            model=model,
            batch=b,
            precision=p,
            status=status,
            reason=reason,
        )
        for p in precisions
        for b in settings.batch_sizes
    ]


def _backend_runners(
    section: str,
    backend: str,
    eager: nn.Module,
    preset: str,
    precisions: Sequence[str],
    settings: BenchSettings,
    device: torch.device,
    workdir: Path,
    progress: Progress,
) -> tuple[dict[str, Runner], list[ForwardRecord]]:
    """``eager`` on ``backend`` at each of ``precisions``: ``(runner per precision that can run, records of those
    that cannot)``. An autocast runner serves every precision, so it is made once."""
    model = type(eager).__name__
    runners: dict[str, Runner] = {}
    failed: list[ForwardRecord] = []
    for precision in precisions:
        progress(f"forward {preset}: preparing {backend} {precision}")
        try:
            runners[precision] = make_runner(
                backend,
                eager,
                preset,
                settings.kind,
                size=settings.size,
                batch_sizes=settings.batch_sizes,
                precision=precision,
                workdir=workdir,
            )
        except MDANetError as exc:
            failed += _failed(settings, device, section, backend, preset, model, "unavailable", str(exc), [precision])
        except Exception as exc:  # noqa: BLE001 - an artefact that fails to build is reported, not fatal
            failed += _failed(settings, device, section, backend, preset, model, "error", one_line(exc), [precision])
        else:
            if runners[precision].autocast:  # the same callable serves every precision
                runners.update(dict.fromkeys(precisions, runners[precision]))
                break
    return runners, failed


def contenders(
    section: str,
    preset: str,
    backends: Sequence[str],
    settings: BenchSettings,
    device: torch.device,
    workdir: Path,
    progress: Progress,
) -> tuple[list[Contender], list[ForwardRecord]]:
    """``preset`` on each backend that can run here, and ``unavailable``/``error`` records for the others.

    Args:
        section: ``forward`` or ``peers`` (the records' section).
        preset: an MDANet preset or a peer (:func:`build_network`).
        backends: backends to prepare (:data:`~mdanet_sdk.bench.records.BACKENDS`).
        settings, device, workdir, progress: of the run (artefacts are written to ``workdir``).
    """
    precisions = settings.resolved_precisions()
    try:
        eager = build_network(preset, settings.kind, size=settings.size).to(device)
    except BackendUnavailableError as exc:
        return [], _failed(settings, device, section, "eager", preset, preset, "unavailable", str(exc), precisions)
    model = type(eager).__name__
    flops = count_flops(
        eager, torch.zeros(1, kind_channels(settings.kind), settings.size, settings.size, device=device)
    )
    ready: list[Contender] = []
    failed: list[ForwardRecord] = []
    for backend in backends:
        runners, more = _backend_runners(
            section, backend, eager, preset, precisions, settings, device, workdir, progress
        )
        failed += more
        if runners:
            ready.append(Contender(section, backend, preset, model, flops, runners))
    return ready, failed
