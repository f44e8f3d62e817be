"""The arguments of ``python -m mdanet_sdk.bench.gpu_check`` (``scripts/gpu_check.sh``) and :func:`main`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

from mdanet_sdk.bench.gpu_check.config import DEFAULT_BUDGET_S, DEFAULT_LIMITS, STEP_NAMES, STEPS, CheckConfig
from mdanet_sdk.data.targets import check_report_file
from mdanet_sdk.errors import InputError

__all__ = ["parse_args", "main"]

_EPILOG = """\
exit status: 0 when no step failed, crashed or ran out of time (skipped steps, e.g. without TensorRT, are not
failures); 1 otherwise; 2 for wrong arguments. The JSON is rewritten as results arrive: a run stopped early
keeps what it measured. Step logs: <out stem>-logs/ beside the JSON (nothing else is written there).
"""


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in STEP_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown step {unknown[0] if unknown else value!r}; use {', '.join(STEP_NAMES)}"
        )
    return names


def _ints(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(n) for n in value.split(",") if n.strip())
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers like 1,16,64; got {value!r}")
    return numbers


def _limit(value: str) -> tuple[str, float]:
    name, _, seconds = value.partition("=")
    try:
        limit = float(seconds)
    except ValueError:
        limit = -1.0
    if name not in STEP_NAMES or limit <= 0:
        raise argparse.ArgumentTypeError(
            f"expected STEP=SECONDS with STEP one of {', '.join(STEP_NAMES)}; got {value!r}"
        )
    return name, limit


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_check",
        description="One-command GPU check of mdanet-sdk: build, gpu tests, ops, TensorRT, benchmark, segment.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default_out = Path(os.environ.get("OUT") or "build/gpu-check") / "gpu-check.json"
    parser.add_argument("--out", type=Path, default=default_out, help=f"the JSON to write (default {default_out})")
    parser.add_argument(
        "--workdir", type=Path, default=Path("build/gpu-check-work"), help="scratch: phantoms, artefacts"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the pipeline's non-GPU parts only")
    parser.add_argument("--steps", type=_names, default=STEP_NAMES, help=f"which steps ({','.join(STEP_NAMES)})")
    parser.add_argument("--skip", type=_names, default=(), help="steps to leave out, e.g. build when already built")
    parser.add_argument("--budget", type=float, default=None, help=f"whole-run seconds (default {DEFAULT_BUDGET_S})")
    parser.add_argument(
        "--limit", type=_limit, action="append", default=[], metavar="STEP=S", help=f"a step's limit ({DEFAULT_LIMITS})"
    )
    parser.add_argument("--batch-sizes", type=_ints, default=None, help="benchmark batch sizes (default 1,16,64)")
    parser.add_argument("--size", type=int, default=None, help="slice side, a multiple of 16 (default 256)")
    parser.add_argument("--repeats", type=int, default=None, help="timed benchmark rounds (default 5)")
    parser.add_argument("--preset", choices=("paper", "small"), default=None, help="benchmark preset (default paper)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[CheckConfig, tuple[str, ...]]:
    """The :class:`CheckConfig` and the step names to run; wrong arguments exit with status 2 and one line."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.size is not None and (args.size < 16 or args.size % 16):
        parser.error(f"--size must be a positive multiple of 16; got {args.size}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}")
    if args.budget is not None and args.budget <= 0:
        parser.error(f"--budget must be positive; got {args.budget}")
    try:  # the JSON is rewritten as results arrive: it replaces only an earlier report, as every report does
        check_report_file(args.out)
    except InputError as exc:
        parser.error(str(exc).rstrip("."))
    overrides = {
        "batch_sizes": args.batch_sizes,
        "size": args.size,
        "repeats": args.repeats,
        "preset": args.preset,
        "budget_s": args.budget,
    }
    paths: dict[str, Any] = {"out": str(args.out), "workdir": str(args.workdir), "repo": str(Path.cwd())}
    options: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    config = CheckConfig.dry(**paths, **options) if args.dry_run else CheckConfig(**paths, **options)
    config.limits.update(dict(args.limit))
    steps = tuple(n for n in args.steps if n not in args.skip)
    return config, steps


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check (or, with ``--run-step TARGET CONFIG RESULT``, one step as a child process)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--run-step"] and len(argv) == 4:
        from mdanet_sdk.bench.gpu_check.child import run_step

        return run_step(argv[1], Path(argv[2]), Path(argv[3]))
    from mdanet_sdk.bench.gpu_check.runner import exit_code, run_check, summary_lines

    config, names = parse_args(argv)
    print(f"mdanet-sdk GPU check{' (dry run: CPU, tiny sizes)' if config.dry_run else ''}: JSON -> {config.out}")
    report = run_check(config, [s for s in STEPS if s.name in names])
    print("\n".join(summary_lines(report)))
    print(f"JSON: {config.out} ({report['seconds']} s)")
    return exit_code(report)
