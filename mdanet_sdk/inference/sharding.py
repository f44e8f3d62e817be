"""Splitting one run of :func:`mdanet_sdk.segment` over several processes, and merging their reports.

A run is split into N shards: every process plans the same case list, sorts it by case id and keeps case ``i``
when ``i % N`` is its shard (0-based internally). Two ways to say which shard a process is:

- ``torchrun``: ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment; rank ``r`` is shard ``r + 1`` of
  ``WORLD_SIZE`` and runs on ``cuda:LOCAL_RANK`` when the device is ``auto``/``cuda`` and CUDA is present.
- by hand (SLURM arrays): ``shard="I/N"`` or ``(I, N)`` with ``I`` counted **from 1** to ``N``, as in
  ``--shard $SLURM_ARRAY_TASK_ID/N`` with ``#SBATCH --array=1-N``.

Each shard writes ``<report>.shard-I-of-N.json``: its cases plus ``"shard": {"index", "count", "run"}``, where
``run`` is a fingerprint of the whole run's plan (case ids, output paths, model and post-processing settings).
The merged ``<report>`` is written once all shards are done: under ``torchrun`` by rank 0 after a barrier; by
hand, by the shard that finds all N shard reports of the same run present (the write is atomic, so two shards
finishing together write the same file). Reports of another run (other N or fingerprint) are never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from mdanet_sdk._text import without_surrogates
from mdanet_sdk._files import write_json
from mdanet_sdk._env import env_int
from mdanet_sdk.errors import InputError
from mdanet_sdk.inference.planning import Job

__all__ = [
    "Shard",
    "ShardsPending",
    "current_shard",
    "select",
    "fingerprint",
    "shard_report_path",
    "merge_reports",
    "barrier",
]

#: The lists of a run report that a merge concatenates (the other top-level keys are taken from shard 1).
MERGED_LISTS = ("cases", "failed", "skipped")
#: How long ``torchrun`` ranks that finished wait for the slowest one before the merge gives up.
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Shard:
    """This process's part of a run.

    Attributes:
        index: 0-based shard index (shown 1-based: shard ``index + 1`` of ``count``).
        count: number of shards.
        local_rank: the GPU index on this node under ``torchrun``, else ``None`` (launched by hand).
    """

    index: int
    count: int
    local_rank: int | None = None

    @property
    def distributed(self) -> bool:
        """Whether the shards are ``torchrun`` ranks (merged after a barrier) rather than separate jobs."""
        return self.local_rank is not None

    @property
    def label(self) -> str:
        return f"shard {self.index + 1}/{self.count}"

    def device(self, device: str) -> str:
        """The device this shard runs on: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` under ``torchrun`` when CUDA
        is present, ``cpu`` for ``auto`` without CUDA; any other device (and every device by hand) as given."""
        if self.local_rank is None or str(device) not in ("auto", "cuda"):
            return device
        import torch

        if not torch.cuda.is_available():
            return "cpu" if str(device) == "auto" else device  # "cuda" without CUDA: resolve_device says why
        if self.local_rank >= torch.cuda.device_count():
            raise InputError(
                f"LOCAL_RANK {self.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; start "
                "torchrun with --nproc_per_node at most the number of GPUs per node."
            )
        return f"cuda:{self.local_rank}"


def _parse(shard: str | tuple[int, int]) -> tuple[int, int]:
    """``"I/N"`` or ``(I, N)``, 1-based, checked."""
    if isinstance(shard, str):
        first, sep, second = shard.partition("/")
        try:
            index, count = int(first), int(second)
        except ValueError:
            index = count = 0
        if not sep:
            index = count = 0
    elif isinstance(shard, tuple) and len(shard) == 2 and all(isinstance(n, int) for n in shard):
        index, count = int(shard[0]), int(shard[1])
    else:
        index = count = 0
    if not 1 <= index <= count:
        raise InputError(f"shard must be I/N with 1 <= I <= N (counted from 1, e.g. 1/4 ... 4/4); got {shard!r}.")
    return index - 1, count


def current_shard(shard: str | tuple[int, int] | None) -> Shard | None:
    """This process's shard: ``shard`` as given (``"I/N"``, counted from 1), else ``torchrun``'s ranks, else
    ``None`` (one process does every case).

    Raises:
        InputError: a malformed ``shard``, both ``shard`` and a ``torchrun`` environment, or a ``torchrun``
            environment without its rendezvous address (``MASTER_ADDR``/``MASTER_PORT``).
    """
    world = env_int("WORLD_SIZE", 1)
    if shard is not None:
        if world > 1:
            raise InputError("both --shard and torchrun (WORLD_SIZE > 1) split the cases; use one of them.")
        index, count = _parse(shard)
        return Shard(index, count) if count > 1 else None
    if world <= 1:
        return None
    rank = env_int("RANK", -1)
    if not 0 <= rank < world:
        raise InputError(f"RANK must be between 0 and WORLD_SIZE - 1 = {world - 1}; start the job with torchrun.")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise InputError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not; start the job with torchrun, or "
            "use --shard I/N for separate jobs."
        )
    local = env_int("LOCAL_RANK", 0)
    return Shard(rank, world, local)


def select(jobs: Sequence[Job], shard: Shard) -> list[Job]:
    """The jobs of ``shard``: case ``i`` of the list sorted by case id goes to shard ``i % count``, so every
    process that planned the same inputs agrees, whatever the input order; kept in input order."""
    ranked = sorted(range(len(jobs)), key=lambda i: jobs[i].case_id)
    mine = {i for position, i in enumerate(ranked) if position % shard.count == shard.index}
    return [job for i, job in enumerate(jobs) if i in mine]


def fingerprint(jobs: Sequence[Job], settings: Mapping[str, Any]) -> str:
    """A SHA-256 of the run's plan: every case id with its mask path, and ``settings`` (model, post-processing).

    Device and precision are left out: ranks of one run may run on different devices.
    """
    plan = sorted([job.case_id, str(job.outputs.get("mask", ""))] for job in jobs)
    text = json.dumps({"cases": plan, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shard_report_path(report: Path, index: int, count: int) -> Path:
    """``<report>.shard-I-of-N.json`` for the 0-based ``index`` (named 1-based)."""
    return report.with_name(f"{report.name}.shard-{index + 1}-of-{count}.json")


class ShardsPending(Exception):
    """Not every shard report of this run is there yet (:func:`merge_reports` by hand), so no merge now.

    Attributes:
        why: which report is missing, or of another run.
        foreign: a report is there but of another run (other cases, outputs, settings or shard count): a stale
            one that its shard will replace, or a shard run with other settings that must be rerun.
    """

    def __init__(self, why: str, foreign: bool) -> None:
        super().__init__(why)
        self.why, self.foreign = why, foreign


def _read(path: Path, index: int, count: int, run: str) -> dict[str, Any]:
    """A shard report of this run.

    Raises:
        ShardsPending: it is missing, unreadable or not this run's shard ``index``.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardsPending(f"the report of shard {index + 1}/{count} ({path}) is missing", foreign=False) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = f"the report of shard {index + 1}/{count} ({path}) is unreadable ({type(exc).__name__})"
        raise ShardsPending(why, foreign=True) from None
    info = doc.get("shard") if isinstance(doc, dict) else None
    if not isinstance(info, dict) or info.get("run") != run or info.get("count") != count:
        why = f"{path} is the report of another run (other cases, outputs, settings or shard count)"
        raise ShardsPending(why, foreign=True)
    if info.get("index") != index + 1 or not all(isinstance(doc.get(key, []), list) for key in MERGED_LISTS):
        raise ShardsPending(f"{path} is not the report of shard {index + 1}/{count}", foreign=True)
    return doc


def _case_ids(doc: Mapping[str, Any]) -> list[str]:
    """The cases a shard report lists; a skipped case also in ``cases`` (its entry carried from the report the
    run replaced: :func:`~mdanet_sdk.inference.resume.earlier_reports`) counts once."""
    listed = {key: [entry.get("case_id", entry.get("case")) for entry in doc.get(key, [])] for key in MERGED_LISTS}
    cases = set(listed["cases"])
    return [*listed["cases"], *listed["failed"], *(case for case in listed["skipped"] if case not in cases)]


def merge_reports(report: Path, count: int, run: str, order: Sequence[str], *, strict: bool) -> Path:
    """Merge the N shard reports of a run into ``report`` (written atomically).

    Args:
        report: the merged report's path; the shards' are :func:`shard_report_path`.
        count: the number of shards.
        run: this run's :func:`fingerprint`.
        order: every case id of the run, in input order (the merged lists follow it).
        strict: raise :class:`InputError` when a shard report is missing or from another run (``torchrun``,
            after the barrier); else :class:`ShardsPending` (by hand: another shard may still be running and will
            merge).

    Returns:
        ``report``.

    Raises:
        InputError: ``strict`` and a report is missing or foreign; or the reports together do not list every
            case of the run exactly once (the merge would hide or double cases).
        ShardsPending: not ``strict``, and a report is missing or foreign.
    """
    order = [without_surrogates(case) for case in order]  # as the shard reports write them
    try:
        docs = [_read(shard_report_path(report, index, count), index, count, run) for index in range(count)]
    except ShardsPending as pending:
        if strict:
            raise InputError(f"cannot merge the shard reports: {pending.why}; rerun that shard.") from None
        raise
    listed = Counter(case for doc in docs for case in _case_ids(doc))
    if set(listed) != set(order) or any(n != 1 for n in listed.values()):
        odd = sorted(set(order) ^ set(listed) | {case for case, n in listed.items() if n != 1}, key=str)
        raise InputError(
            f"cannot merge the shard reports of {report}: they do not list each case once ({', '.join(map(str, odd[:5]))}"
            "); delete the shard reports and rerun all shards."
        )
    position = {case: i for i, case in enumerate(order)}
    merged = {key: value for key, value in docs[0].items() if key != "shard"}
    for key, value in merged.items():
        if key in MERGED_LISTS:
            entries = [entry for doc in docs for entry in doc.get(key, [])]
            merged[key] = sorted(entries, key=lambda e: position[e.get("case_id", e.get("case"))])
        elif isinstance(value, list):  # run-level lists such as the notices: each item once
            items = [item for doc in docs for item in doc.get(key, [])]
            merged[key] = list({json.dumps(item, sort_keys=True): item for item in items}.values())
    merged["shards"] = {"count": count, "run": run}
    return write_json(report, merged, names_as_text=True)


def barrier() -> None:
    """Wait until every ``torchrun`` rank gets here (joining with Gloo unless a process group is running)."""
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        dist.barrier()
    finally:
        if owned:
            dist.destroy_process_group()
