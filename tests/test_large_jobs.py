"""Large jobs: resuming (``--skip-existing``), sharding (``--shard I/N`` and ``torchrun``), plain progress lines in
logs; and two input rules of segment planning (4D diffusion series, ``--brain-mask``).

Uses the random ``small`` stand-ins for the bundled weights of tests/test_segment_cli.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import mdanet_sdk
from mdanet_sdk.cli import app
from mdanet_sdk.data.nifti import PREDICTION_MARK
from mdanet_sdk.errors import InputError
from mdanet_sdk.inference import SegmentationResult
from mdanet_sdk.inference.resume import nifti_complete
from mdanet_sdk.inference.sharding import Shard, ShardsPending, current_shard, merge_reports, shard_report_path
from tests.test_segment_cli import bundled, cli_weights, error_lines, volumes, write  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("bundled")
runner = CliRunner()
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_torchrun(monkeypatch) -> None:
    """Tests run as one process, whatever the environment that started pytest."""
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def _cases(folder: Path, names: list[str]) -> list[Path]:
    return [write(folder / f"{name}.nii.gz", volumes(2, seed=i)) for i, name in enumerate(names)]


def _ids(report: dict, key: str) -> list[str]:
    return [entry.get("case_id", entry.get("case")) for entry in report[key]]


# -- resuming -------------------------------------------------------------------------------------------------


def test_skip_existing_keeps_complete_outputs_and_redoes_incomplete_ones(tmp_path) -> None:
    inputs = _cases(tmp_path / "in", ["a", "b", "c", "d"])
    out = tmp_path / "out"
    first = list(mdanet_sdk.segment(inputs, out, prob=True, device="cpu"))
    assert all(isinstance(r, SegmentationResult) for r in first)
    whole = (out / "b_seg.nii.gz").read_bytes()
    (out / "b_seg.nii.gz").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    (out / "c_prob.nii.gz").unlink()  # --prob asked, the probability map is missing
    stale = nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4))
    stale.header["descrip"] = PREDICTION_MARK  # an own output, whole, but of another grid
    nib.save(stale, out / "d_seg.nii.gz")
    kept = (out / "a_seg.nii.gz").stat()
    events: list[tuple[str, str]] = []
    second = list(
        mdanet_sdk.segment(
            inputs,
            out,
            prob=True,
            skip_existing=True,
            report=tmp_path / "run.json",
            device="cpu",
            progress=lambda event, case_id, n: events.append((event, case_id)),
        )
    )
    assert [(r.case_id, type(r).__name__) for r in second] == [
        ("a", "SkippedCase"),
        ("b", "SegmentationResult"),
        ("c", "SegmentationResult"),
        ("d", "SegmentationResult"),
    ]
    assert second[0].ok and second[0].outputs == {"mask": out / "a_seg.nii.gz", "prob": out / "a_prob.nii.gz"}
    after = (out / "a_seg.nii.gz").stat()
    assert (after.st_ino, after.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)  # not rewritten
    for name in ("b", "c", "d"):  # redone: whole files on the input's grid, equal to the first run's masks
        mask = np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj)
        np.testing.assert_array_equal(mask, first["abcd".index(name)].mask)
        assert nib.load(out / f"{name}_prob.nii.gz").shape == (37, 29, 5)
    assert ("skipped", "a") in events and [e for e in events if e[0] == "done"] == [("done", c) for c in "bcd"]
    report = json.loads((tmp_path / "run.json").read_text())
    assert _ids(report, "skipped") == ["a"] and _ids(report, "cases") == ["b", "c", "d"]
    assert report["skipped"][0]["outputs"]["mask"] == str(out / "a_seg.nii.gz")


def test_a_resumed_runs_report_keeps_the_volumes_of_the_cases_it_skipped(tmp_path) -> None:
    """The report of a resumed run used to list only the cases it ran (the others under ``skipped``, without
    volumes): it now carries the replaced report's entries of the kept cases, when the same settings made them."""
    inputs = _cases(tmp_path / "in", ["a", "b"])
    out, report = tmp_path / "out", tmp_path / "run.json"
    list(mdanet_sdk.segment(inputs, out, report=report, device="cpu"))
    before = {entry["case_id"]: entry for entry in json.loads(report.read_text())["cases"]}
    (out / "b_seg.nii.gz").unlink()
    second = list(mdanet_sdk.segment(inputs, out, skip_existing=True, report=report, device="cpu"))
    assert [type(r).__name__ for r in second] == ["SkippedCase", "SegmentationResult"]
    doc = json.loads(report.read_text())
    assert _ids(doc, "cases") == ["a", "b"] and _ids(doc, "skipped") == ["a"]
    assert doc["cases"][0] == before["a"] and doc["notices"]  # as it was, and its notice still in the header
    # The masks remade with another threshold: the report's entries, of the first threshold, are not theirs.
    list(mdanet_sdk.segment(inputs, out, threshold=0.9, device="cpu"))
    third = list(mdanet_sdk.segment(inputs, out, skip_existing=True, threshold=0.9, report=report, device="cpu"))
    assert [type(r).__name__ for r in third] == ["SkippedCase", "SkippedCase"]
    doc = json.loads(report.read_text())
    assert _ids(doc, "cases") == [] and _ids(doc, "skipped") == ["a", "b"]
    hostile = '{"cases": [{"case_id": "a", "lesion_volume_ml": "many"}, 7, {"case_id": ["b"]}], "failed": []}'
    report.write_text(hostile)  # a report's keys, not its entries: passed over, the run writes its own report
    again = list(mdanet_sdk.segment(inputs, out, skip_existing=True, threshold=0.9, report=report, device="cpu"))
    assert len(again) == 2 and _ids(json.loads(report.read_text()), "cases") == []
    for foreign in ('{"cases": ' + "[" * 100000 + "]" * 100000 + "}", "[]"):  # no report of ours: never replaced
        report.write_text(foreign)
        with pytest.raises(InputError, match="no earlier JSON report of mdanet-sdk"):
            list(mdanet_sdk.segment(inputs, out, skip_existing=True, threshold=0.9, report=report, device="cpu"))
        assert report.read_text() == foreign


def test_skip_existing_redoes_a_case_whose_input_moved_or_changed(tmp_path) -> None:
    """A kept mask used to be judged by its shape alone: an input moved 20 mm kept its old, misaligned mask, and
    a rerun with another threshold kept the masks of the first."""
    (case,) = _cases(tmp_path / "in", ["a"])
    out = tmp_path / "out"
    list(mdanet_sdk.segment(case, out, device="cpu"))
    image = nib.load(case)
    moved = image.affine.copy()
    moved[1, 3] += 20.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), moved), case)
    (redone,) = mdanet_sdk.segment(case, out, skip_existing=True, device="cpu")
    assert isinstance(redone, SegmentationResult)
    assert np.allclose(nib.load(out / "a_seg.nii.gz").affine, moved)
    (kept,) = mdanet_sdk.segment(case, out, skip_existing=True, device="cpu")
    assert type(kept).__name__ == "SkippedCase"
    (other,) = mdanet_sdk.segment(case, out, skip_existing=True, device="cpu", threshold=0.9)
    assert isinstance(other, SegmentationResult)  # another threshold makes another mask: not kept
    (kept,) = mdanet_sdk.segment(case, out, skip_existing=True, device="cpu", threshold=0.9)
    assert type(kept).__name__ == "SkippedCase"
    descrip = nib.load(out / "a_seg.nii.gz").header["descrip"].item().decode()
    assert descrip == f"{PREDICTION_MARK} {other.report.made_with}" and len(other.report.made_with) == 16
    later = (out / "a_seg.nii.gz").stat().st_mtime + 10
    os.utime(case, (later, later))  # the input replaced after its mask was written (same grid)
    (again,) = mdanet_sdk.segment(case, out, skip_existing=True, device="cpu", threshold=0.9)
    assert isinstance(again, SegmentationResult)
    brain = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(image.shape[:3], np.uint8), moved), brain)
    list(mdanet_sdk.segment(case, out, brain_mask=brain, device="cpu", threshold=0.9))
    later = (out / "a_seg.nii.gz").stat().st_mtime + 10
    os.utime(brain, (later, later))  # a brain mask replaced after the mask was written
    (masked,) = mdanet_sdk.segment(case, out, brain_mask=brain, skip_existing=True, device="cpu", threshold=0.9)
    assert isinstance(masked, SegmentationResult)


def test_skip_existing_from_the_cli_counts_the_skipped_cases(tmp_path) -> None:
    inputs = [str(p) for p in _cases(tmp_path / "in", ["a", "b"])]
    out = tmp_path / "out"
    assert runner.invoke(app, ["segment", *inputs, "-o", str(out), "--overlay", str(out)]).exit_code == 0
    overlay = out / "b_overlay.png"
    overlay.write_bytes(overlay.read_bytes()[:-20])  # a PNG without its end
    result = runner.invoke(
        app, ["segment", *inputs, "-o", str(out), "--overlay", str(out), "--skip-existing", "--json", "-"]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert _ids(report, "skipped") == ["a"] and _ids(report, "cases") == ["b"]
    assert overlay.read_bytes().endswith(b"IEND\xaeB`\x82")
    shown = runner.invoke(app, ["segment", *inputs, "-o", str(out), "--overlay", str(out), "--skip-existing"])
    assert shown.exit_code == 0 and "skipped 2 cases whose outputs are complete" in shown.stdout
    assert "model" not in shown.stdout  # nothing to run: no model is even loaded


def test_nifti_complete_judges_header_and_size(tmp_path) -> None:
    data = np.arange(37 * 29 * 5, dtype=np.float32).reshape(37, 29, 5)
    for name in ("m.nii.gz", "m.nii"):
        path = write(tmp_path / name, data)
        whole = path.read_bytes()
        assert nifti_complete(path) and nifti_complete(path, (37, 29, 5, 2))
        assert not nifti_complete(path, (37, 29, 6))
        for cut in (len(whole) - 1, len(whole) // 2, 200, 0):
            path.write_bytes(whole[:cut])
            assert not nifti_complete(path), (name, cut)
    assert not nifti_complete(write(tmp_path / "4d.nii.gz", volumes(2)))
    (tmp_path / "text.nii.gz").write_text("not a nifti")
    assert not nifti_complete(tmp_path / "text.nii.gz") and not nifti_complete(tmp_path / "absent.nii.gz")


# -- sharding -------------------------------------------------------------------------------------------------


def test_two_shards_by_hand_write_every_case_once_and_the_last_merges(tmp_path) -> None:
    """Sorted ids a..e: shard 1/2 gets a, c, e (c is broken), shard 2/2 gets b, d; inputs given out of order."""
    names = ["e", "b", "a", "d"]
    inputs = [str(p) for p in _cases(tmp_path / "in", names)]
    broken = tmp_path / "in" / "c.nii.gz"
    broken.write_bytes(b"not a nifti")
    inputs.insert(2, str(broken))  # e, b, c, a, d
    out, report = tmp_path / "out", tmp_path / "run.json"
    args = ["segment", *inputs, "-o", str(out), "--report", str(report)]

    one = runner.invoke(app, [*args, "--shard", "1/2"])
    assert one.exit_code == 1 and len(error_lines(one)) == 1 and "c:" in error_lines(one)[0]
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.nii.gz", "e_seg.nii.gz"]
    assert not report.exists() and "shard 1/2: 3 of 5 cases" in one.stdout
    assert "written by the last shard to finish" in one.stdout
    first = {p: p.stat().st_mtime_ns for p in out.iterdir()}

    two = runner.invoke(app, [*args, "--shard", "2/2"])
    assert two.exit_code == 0, two.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_seg.nii.gz" for n in "abde"]
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # shard 2 wrote none of shard 1's cases
    merged = json.loads(report.read_text())
    assert _ids(merged, "cases") == ["e", "b", "a", "d"] and _ids(merged, "failed") == ["c"]
    assert merged["shards"]["count"] == 2 and "shard" not in merged and f"merged report: {report}" in two.stdout
    parts = [json.loads(shard_report_path(report, i, 2).read_text()) for i in range(2)]
    assert [(_ids(p, "cases"), _ids(p, "failed")) for p in parts] == [(["e", "a"], ["c"]), (["b", "d"], [])]


def test_resumed_shards_merge_the_cases_they_skipped_and_carried(tmp_path) -> None:
    inputs = [str(p) for p in _cases(tmp_path / "in", ["a", "b", "c"])]
    out, report = tmp_path / "out", tmp_path / "run.json"
    args = ["segment", *inputs, "-o", str(out), "--json", str(report), "--skip-existing"]
    for shard in ("1/2", "2/2"):
        assert runner.invoke(app, [*args, "--shard", shard]).exit_code == 0
    (out / "b_seg.nii.gz").unlink()
    for shard in ("1/2", "2/2"):  # a and c kept, b redone; a case both skipped and carried is one case
        done = runner.invoke(app, [*args, "--shard", shard])
        assert done.exit_code == 0, done.stderr
    merged = json.loads(report.read_text())
    assert _ids(merged, "cases") == ["a", "b", "c"] and _ids(merged, "skipped") == ["a", "c"]


def test_a_shard_report_of_another_run_is_never_merged(tmp_path) -> None:
    inputs = [str(p) for p in _cases(tmp_path / "in", ["a", "b", "c"])]
    out, report = tmp_path / "out", tmp_path / "run.json"
    assert (
        runner.invoke(app, ["segment", *inputs, "-o", str(out), "--json", str(report), "--shard", "1/2"]).exit_code == 0
    )
    # Shard 2 of a run over other inputs (one case fewer) writes the same report names.
    other = runner.invoke(app, ["segment", *inputs[:2], "-o", str(out), "--json", str(report), "--shard", "2/2"])
    assert other.exit_code == 0 and not report.exists()
    # ... and says so: not "written by the last shard to finish", which no shard would ever do.
    assert f"warning: merged report {report} not written: " in other.stdout and "of another run" in other.stdout
    assert "written by the last shard" not in other.stdout
    with pytest.raises(InputError, match="report of another run"):
        run = json.loads(shard_report_path(report, 1, 2).read_text())["shard"]["run"]
        merge_reports(report, 2, run, ["a", "b"], strict=True)
    with pytest.raises(ShardsPending) as pending:  # by hand: a note, the shard itself succeeded
        merge_reports(report, 2, run, ["a", "b"], strict=False)
    assert pending.value.foreign and "report of another run" in pending.value.why
    # A shard report that lists a case twice is refused too (it would double a case in the merge).
    doc = json.loads(shard_report_path(report, 0, 2).read_text())
    doc["shard"]["run"] = run
    doc["cases"] = doc["cases"] * 2
    shard_report_path(report, 0, 2).write_text(json.dumps(doc))
    with pytest.raises(InputError, match="each case once"):
        merge_reports(report, 2, run, ["a", "b"], strict=False)
    assert not report.exists()


@pytest.mark.parametrize(
    "shard", ["0/2", "3/2", "1/0", "a/b", "2", "1/2/3", (0, 2), (1, 2, 3), "-1/2"], ids=lambda s: str(s)
)
def test_bad_shards_are_refused_in_one_line(tmp_path, shard) -> None:
    case = _cases(tmp_path, ["a"])[0]
    with pytest.raises(InputError, match=r"shard must be I/N with 1 <= I <= N"):
        mdanet_sdk.segment(case, tmp_path / "out", shard=shard, device="cpu")
    if isinstance(shard, str):
        result = runner.invoke(app, ["segment", str(case), "--shard", shard])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1


def test_torchrun_environment_gives_the_rank_its_shard_and_gpu(monkeypatch) -> None:
    import torch

    assert current_shard(None) is None and current_shard("1/1") is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(InputError, match="MASTER_ADDR"):
        current_shard(None)
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert current_shard(None) == Shard(2, 4, 1)
    with pytest.raises(InputError, match="use one of them"):
        current_shard("1/2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    shard = Shard(2, 4, 1)
    assert [shard.device(d) for d in ("auto", "cuda", "cuda:0", "cpu")] == ["cuda:1", "cuda:1", "cuda:0", "cpu"]
    assert Shard(0, 2).device("auto") == "auto"  # by hand: the job's own device choice
    with pytest.raises(InputError, match="nproc_per_node"):
        Shard(3, 4, 2).device("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert shard.device("auto") == "cpu"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError, match="RANK must be between"):
        current_shard(None)


def test_torchrun_two_processes_on_cpu_write_every_case_once_and_rank0_merges(tmp_path, cli_weights) -> None:  # noqa: F811
    inputs = [str(p) for p in _cases(tmp_path / "in", ["c", "a", "b"])]
    out, report = tmp_path / "out", tmp_path / "run.json"
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(sys.executable).parent / "mdanet-sdk"),
        "segment",
        *inputs,
        "-o",
        str(out),
        "--checkpoint",
        str(cli_weights["mri"]),
        "--report",
        str(report),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_seg.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"]
    parts = [json.loads(shard_report_path(report, i, 2).read_text()) for i in range(2)]
    assert [_ids(p, "cases") for p in parts] == [["c", "a"], ["b"]]  # sorted a, b, c: rank 0 gets a and c
    merged = json.loads(report.read_text())
    assert _ids(merged, "cases") == ["c", "a", "b"] and merged["failed"] == [] and merged["shards"]["count"] == 2
    assert all(case["device"] == "cpu" for case in merged["cases"])
    assert "shard 1/2: 2 of 3 cases" in done.stdout and "shard 2/2: 1 of 3 cases" in done.stdout


# -- plain lines in logs ----------------------------------------------------------------------------------------


def test_without_a_terminal_each_finished_case_is_one_plain_line(tmp_path) -> None:
    good = _cases(tmp_path / "in", ["a", "b"])
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    result = runner.invoke(app, ["segment", str(good[0]), str(broken), str(good[1]), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 3 and {line.split()[1] for line in lines} == {"a", "b", "broken"}
    assert [line.split("]")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"]
    assert all(re.fullmatch(r"\[\d/3\] (a|b) done in \d+\.\d s|\[\d/3\] broken failed", line) for line in lines)
    assert "\x1b" not in result.stderr  # no live bars, no cursor movements
    assert "a: reading dwi, adc (volumes 1, 2 of a.nii.gz)" in result.stdout
    quiet = runner.invoke(app, ["segment", str(good[0]), "-o", str(tmp_path / "q"), "-q"])
    assert quiet.exit_code == 0 and quiet.stdout == quiet.stderr == ""


# -- 4D diffusion series, brain masks -------------------------------------------------------------------------


@pytest.mark.parametrize("sidecar", ["dti.bval", "dti.bvec", "bvals", "dti.BVAL", "BVECS"])
def test_a_4d_file_with_a_diffusion_sidecar_needs_modalities(tmp_path, sidecar) -> None:
    series = write(tmp_path / "dti.nii.gz", volumes(2))
    (tmp_path / sidecar).write_text("0 1000\n")
    refused = runner.invoke(app, ["segment", str(series), "-o", str(tmp_path / "out")])
    assert refused.exit_code == 1
    (line,) = error_lines(refused)
    assert "diffusion series" in line and sidecar in line and "--modalities" in line
    assert not (tmp_path / "out").exists()
    told = runner.invoke(app, ["segment", str(series), "--modalities", "dwi,adc", "-o", str(tmp_path / "out")])
    assert told.exit_code == 0, told.stderr
    assert "dti: reading dwi, adc (volumes 1, 2 of dti.nii.gz)" in told.stdout
    plain = write(tmp_path / "other" / "mri.nii.gz", volumes(2))  # a sidecar of another stem does not count
    (tmp_path / "other" / "dti.bval").write_text("0 1000\n")
    assert runner.invoke(app, ["segment", str(plain), "-o", str(tmp_path / "o2")]).exit_code == 0
    from mdanet_sdk import Segmenter  # the Python API holds the same rule (it read the series as dwi, adc)

    seg = Segmenter.default("mri", tta=False)
    with pytest.raises(InputError, match=f"diffusion series \\({sidecar} beside it\\)"):
        seg.predict(series)
    assert seg.predict(series, modalities=("dwi", "adc")).mask.shape == (37, 29, 5)


def test_brain_mask_limits_the_lesions_of_the_single_case(tmp_path) -> None:
    case = write(tmp_path / "case.nii.gz", volumes(2))
    brain = np.zeros((37, 29, 5), np.uint8)
    brain[:18] = 1  # the patient's left half only (LPS: the first half of the stored X axis)
    mask_file = write(tmp_path / "brain.nii.gz", brain)
    low = ["--threshold", "0.01"]  # random weights: nearly every head voxel is lesion at this threshold
    free = runner.invoke(app, ["segment", str(case), "-o", str(tmp_path / "free.nii.gz"), *low])
    masked = runner.invoke(
        app, ["segment", str(case), "-o", str(tmp_path / "masked.nii.gz"), "--brain-mask", str(mask_file), *low]
    )
    assert free.exit_code == masked.exit_code == 0, masked.stderr
    assert "brain mask brain.nii.gz" in masked.stdout
    without = np.asarray(nib.load(tmp_path / "free.nii.gz").dataobj)
    within = np.asarray(nib.load(tmp_path / "masked.nii.gz").dataobj)
    assert without[18:].sum() > 100 and within[18:].sum() == 0 and within[:18].sum() > 100
    dwi, adc = (
        write(tmp_path / "x_dwi.nii.gz", volumes(2)[..., 0]),
        write(tmp_path / "x_adc.nii.gz", volumes(2)[..., 1]),
    )
    alias = runner.invoke(
        app,
        ["segment", "-m", f"dwi={dwi}", "-m", f"adc={adc}", "-m", f"mask={mask_file}", "-o", str(tmp_path / "m"), *low],
    )
    assert alias.exit_code == 0 and np.asarray(nib.load(tmp_path / "m" / "x_seg.nii.gz").dataobj)[18:].sum() == 0


def test_one_brain_mask_for_several_cases_or_twice_is_a_usage_error(tmp_path) -> None:
    a, b = _cases(tmp_path, ["a", "b"])
    mask_file = write(tmp_path / "brain.nii.gz", np.ones((37, 29, 5), np.uint8))
    several = runner.invoke(app, ["segment", str(a), str(b), "--brain-mask", str(mask_file), "-o", str(tmp_path / "o")])
    assert several.exit_code == 2 and "-m brain_mask=FILE" in several.stderr
    with pytest.raises(InputError, match="does not exist"):
        mdanet_sdk.segment(a, tmp_path / "o", brain_mask=tmp_path / "absent.nii.gz", device="cpu")
    twice = runner.invoke(
        app, ["segment", "-m", f"dwi={a}", "-m", f"brain_mask={mask_file}", "--brain-mask", str(mask_file)]
    )
    assert twice.exit_code == 2 and "given twice" in twice.stderr
    assert not (tmp_path / "o").exists()
