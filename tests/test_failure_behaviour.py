"""``mdanet-sdk segment`` under faults and hostile names: outputs never clobber inputs or each other, a
report that cannot be written fails alone, names cannot forge terminal lines, SIGTERM and SIGKILL leave no
partial output behind (the latter once the next run has cleaned up)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mdanet_sdk import Segmenter
from mdanet_sdk._files import _HOST, remove_stale_temps
from mdanet_sdk.cli import app
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.errors import CheckpointError, InputError

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory, ckpt_random) -> Path:
    """A random ``small`` MRI checkpoint (these tests check files and messages, not segmentation quality)."""
    return ckpt_random(tmp_path_factory.mktemp("weights") / "mri.pt", preprocess=PreprocessConfig(size=32))


def case_4d(path: Path, seed: int = 0, slices: int = 3) -> Path:
    """A two-volume (DWI, ADC) 4D file: a noisy head ellipsoid, 24 x 20 x ``slices``."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in (24, 20, slices)], indexing="ij")
    head = (sum(g**2 for g in grid) < 0.9).astype(np.float32)
    data = np.stack([head * (100 + 30 * i) + head * rng.normal(0, 3, head.shape) for i in range(2)], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.5, 1.5, 3.0, 1.0])), path)
    return path


def segment(*args: str):
    return runner.invoke(app, ["segment", *args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_renamed_repeat_never_takes_the_id_of_another_case(weights, tmp_path) -> None:
    inputs = [
        case_4d(tmp_path / "a" / "sub-x.nii.gz"),
        case_4d(tmp_path / "b" / "sub-x.nii.gz", 1),
        case_4d(tmp_path / "c" / "sub-x-2.nii.gz", 2),
    ]
    out = tmp_path / "out"
    result = segment(*map(str, inputs), "-o", str(out), "-c", str(weights), "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sub-x-2_seg.nii.gz", "sub-x-3_seg.nii.gz", "sub-x_seg.nii.gz"]
    ids = [c["case_id"] for c in json.loads((tmp_path / "r.json").read_text())["cases"]]
    assert ids == ["sub-x", "sub-x-3", "sub-x-2"]


def test_an_output_that_names_an_input_is_refused_and_the_input_kept(weights, tmp_path) -> None:
    src = case_4d(tmp_path / "case7.nii.gz")
    before = src.read_bytes()
    result = segment(str(src), "-o", str(src), "-c", str(weights))
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "input file" in result.stderr
    assert src.read_bytes() == before
    link = tmp_path / "link.nii.gz"
    link.symlink_to(src)  # the same file under another name is still the input
    assert segment(str(src), "-o", str(link), "-c", str(weights)).exit_code == 1
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["case7.nii.gz", "link.nii.gz"]


def test_mask_and_probability_map_cannot_share_a_name(weights, tmp_path) -> None:
    src = case_4d(tmp_path / "in" / "case7.nii.gz")
    out = tmp_path / "out"
    result = segment(str(src), "-o", str(out / "case7_prob.nii.gz"), "--prob", "-c", str(weights))
    assert result.exit_code == 1 and "also the mask output" in " ".join(error_lines(result))
    assert not out.exists() or list(out.iterdir()) == []


def test_a_report_that_cannot_be_written_fails_alone(weights, tmp_path, monkeypatch) -> None:
    inputs = [case_4d(tmp_path / "in" / f"case{i}.nii.gz", i) for i in range(2)]
    out = tmp_path / "out"
    (tmp_path / "report.json").mkdir()  # a folder where the report should go: refused before anything runs
    result = segment(*map(str, inputs), "-o", str(out), "-c", str(weights), "--report", str(tmp_path / "report.json"))
    assert result.exit_code == 2 and "is a folder" in error_lines(result)[0] and not out.exists()

    def disk_full(path, obj, **options):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mdanet_sdk.inference.batch.write_json", disk_full)
    result = segment(*map(str, inputs), "-o", str(out), "-c", str(weights), "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["case0_seg.nii.gz", "case1_seg.nii.gz"]
    (line,) = error_lines(result)
    assert "cannot write the report" in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_control_characters_in_names_cannot_forge_lines_or_reach_the_terminal(weights, tmp_path) -> None:
    root = tmp_path / "data"
    good = root / "ok\x1b]0;owned\x07\x1b[2J"
    bad = root / "bad\nerror: forged line"
    for folder in (good, bad):
        folder.mkdir(parents=True)
        data = np.asarray(nib.load(case_4d(tmp_path / "src.nii.gz")).dataobj)
        nib.save(nib.Nifti1Image(data[..., 0], np.eye(4)), folder / "dwi.nii.gz")
    nib.save(nib.Nifti1Image(data[..., 1], np.eye(4)), good / "adc.nii.gz")  # `bad` lacks its ADC
    result = segment(str(good), str(bad), "-o", str(tmp_path / "out"), "-c", str(weights))
    text = result.stdout + result.stderr
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("error: forged") for line in text.splitlines())
    assert result.exit_code == 1 and len(error_lines(result)) == 1
    assert "\\n" in error_lines(result)[0] and "\\x1b" in result.stdout


_DIE_WHILE_WRITING = """
import os, signal, sys, time
import nibabel as nib

real_save = nib.save

def save(img, path):
    if "_prob" in str(path):  # the second output of the case, half-written
        with open(path, "wb") as fh:
            fh.write(b"partial")
        os.kill(os.getpid(), signal.{signal})
        time.sleep(60)
    real_save(img, path)

nib.save = save
sys.argv = ["mdanet-sdk", *sys.argv[1:]]
from mdanet_sdk.cli import main
main()
"""


def _run_dying(kind: str, weights: Path, src: Path, out: Path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(_DIE_WHILE_WRITING.replace("{signal}", kind))
    args = ["segment", str(src), "-o", str(out), "--prob", "-c", str(weights), "-q"]
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_sigterm_mid_write_leaves_nothing_behind(weights, tmp_path) -> None:
    out = tmp_path / "out"
    done = _run_dying("SIGTERM", weights, case_4d(tmp_path / "case7.nii.gz"), out)
    assert done.returncode == 143, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: terminated (SIGTERM); outputs not yet complete were removed."
    ]
    assert list(out.iterdir()) == []  # no mask without its probability map, no temporary file


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["segment", "x", "--min-size", "-5"], "error: Invalid value for '--min-size': Input should be greater than"),
        (["segment", "--bogus"], "error: No such option: --bogus"),
        (["nosuchcommand"], "error: No such command 'nosuchcommand'; see 'mdanet-sdk --help'."),
    ],
)
def test_usage_errors_of_the_command_are_one_line(args, line) -> None:
    """They were click's usage text and a boxed panel of several lines."""
    done = subprocess.run([sys.executable, "-c", _MAIN, *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and done.stdout == ""
    (printed,) = done.stderr.splitlines()
    assert printed.startswith(line), printed


_MAIN = "import sys; sys.argv[0] = 'mdanet-sdk'; from mdanet_sdk.cli import main; main()"


def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(weights, tmp_path) -> None:
    out = tmp_path / "out"
    src = case_4d(tmp_path / "case7.nii.gz")
    killed = _run_dying("SIGKILL", weights, src, out)
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert len(left) == 1 and left[0].startswith(".case7_prob.nii.gz.")  # SIGKILL cannot be cleaned up at once
    live = out / f".case7_seg.nii.gz.{_HOST}.{os.getpid()}.x.tmp.nii.gz"  # a concurrent run's: kept
    live.write_bytes(b"busy")
    result = segment(str(src), "-o", str(out), "--prob", "-c", str(weights))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, "case7_prob.nii.gz", "case7_seg.nii.gz"])
    live.unlink()


def test_stale_temp_files_of_other_hosts_are_kept(tmp_path) -> None:
    target = tmp_path / "x.json"
    other = tmp_path / ".x.json.otherhost.1.abc.tmp.json"
    other.write_text("{}")
    assert remove_stale_temps(target) == [] and other.exists()


def test_a_huge_header_and_a_fifo_fail_alone_among_good_cases(weights, tmp_path) -> None:
    good = [case_4d(tmp_path / "in" / f"good{i}.nii.gz", i) for i in range(2)]
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 2000, 2))  # 128 GB declared ...
    header.set_data_dtype(np.float32)
    huge = tmp_path / "in" / "huge.nii"
    huge.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 200)  # ... in a 200-byte body
    fifo = tmp_path / "in" / "fifo.nii.gz"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    result = segment(str(good[0]), str(huge), str(fifo), str(good[1]), "-o", str(out), "-c", str(weights))
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["good0_seg.nii.gz", "good1_seg.nii.gz"]
    lines = error_lines(result)
    assert len(lines) == 2 and lines[0].startswith("error: huge") and lines[1].startswith("error: fifo")
    assert "not a regular file" in lines[1]


def test_inputs_that_are_not_paths_fail_alone_in_the_python_api(weights, tmp_path) -> None:
    """A number, None or an array where a path was meant raised TypeError from os.fspath and stopped the other
    cases; a result saved where nothing can be written raised FileNotFoundError naming its temporary file."""
    from mdanet_sdk import Segmenter
    from mdanet_sdk import segment as segment_many
    from mdanet_sdk.errors import InputError

    good = case_4d(tmp_path / "in" / "good.nii.gz")
    seg = Segmenter.from_checkpoint(weights)
    for bad in (12345, None, np.zeros((3, 3, 3)), {"dwi": 7, "adc": str(good)}):
        with pytest.raises(InputError, match="is not a file or folder; give a path"):
            seg.predict(bad)
    outcomes = list(seg.predict_many([12345, str(good)], errors="yield"))
    assert [type(o).__name__ for o in outcomes] == ["FailedCase", "SegmentationResult"]
    outcomes = list(
        segment_many([12345, {"dwi": 7, "adc": str(good)}, str(good)], tmp_path / "out", checkpoint=weights)
    )
    assert [getattr(o, "case_id", None) for o in outcomes] == ["12345", "7", "good"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["good_seg.nii.gz"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match=r"cannot write .*/file/m\.nii\.gz \(.*\); check that its folder exists"):
        outcomes[2].save(blocker / "m.nii.gz")


def test_an_input_that_failed_planning_is_still_never_overwritten(weights, tmp_path) -> None:
    src = case_4d(tmp_path / "case.nii.gz")
    own = tmp_path / "case_seg.nii.gz"  # the user's own 3D file: refused as input, and must survive
    nib.save(nib.Nifti1Image(np.ones((24, 20, 3), np.float32), np.eye(4)), own)
    before = own.read_bytes()
    result = segment(str(src), str(own), "-o", str(tmp_path), "-c", str(weights))
    assert result.exit_code == 1 and len(error_lines(result)) == 2
    assert own.read_bytes() == before


def test_evaluate_prints_names_as_data_never_as_markup(tmp_path, monkeypatch) -> None:
    from mdanet_sdk.cli import _app

    # Wide enough that no name wraps, whatever COLUMNS the consoles read when they were made (pytest-xdist: 80).
    for shown in (_app.console, _app.err_console):
        monkeypatch.setattr(shown, "_width", 250)
    mask = np.zeros((24, 20, 3), np.uint8)
    mask[10:14, 8:12, 1] = 1
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    name = "c[link=mailto:x@evil.example]click[reverse]\x1b[2J"
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "pred" / f"{name}_seg.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "gt" / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "gt" / "[bold red]error: forged.nii.gz")
    result = runner.invoke(
        app,
        ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "m.json")],
    )
    text = result.stdout + result.stderr
    assert result.exit_code == 0, text
    assert "\x1b" not in text and "[bold red]error: forged" in text and "[link=mailto" in text


@pytest.mark.parametrize("dims", [(24, 20, 3, 2**32, 2**32), (24, 20, 3, -1, -3), (24, -20, 3, 1, 1)])
def test_headers_whose_dims_overflow_or_are_negative_fail_alone(weights, tmp_path, dims) -> None:
    import struct

    bad = tmp_path / "bad.nii"
    nib.save(nib.Nifti2Image(np.ones((24, 20, 3), np.float32), np.eye(4)), bad)
    raw = bytearray(bad.read_bytes())
    raw[16:80] = struct.pack("<8q", 5, *dims, 1, 1)  # NIfTI-2 dim[0..7], int64: the product wraps in numpy
    bad.write_bytes(bytes(raw))
    good = case_4d(tmp_path / "good.nii.gz")
    out = tmp_path / "out"
    result = segment(str(bad), str(good), "-o", str(out), "-c", str(weights))
    assert result.exit_code == 1 and [p.name for p in out.iterdir()] == ["good_seg.nii.gz"]
    (line,) = error_lines(result)
    assert line.startswith("error: bad") and ("negative" in line or "volumes" in line)


def test_a_report_never_replaces_a_scan_or_its_sidecar(weights, tmp_path) -> None:
    case = case_4d(tmp_path / "case.nii.gz")
    scan = case_4d(tmp_path / "other" / "scan.nii.gz", 1)
    sidecar = tmp_path / "other" / "scan.json"
    sidecar.write_text('{"EchoTime": 0.08}')
    scan_bytes = scan.read_bytes()
    weights_bytes = weights.read_bytes()
    for report, expected in ((scan, "like an image"), (sidecar, "sidecar"), (weights, "binary data")):
        result = segment(str(case), "-o", str(tmp_path / "out"), "-c", str(weights), "--report", str(report))
        assert result.exit_code == 2 and expected in error_lines(result)[0]
    assert scan.read_bytes() == scan_bytes and sidecar.read_text() == '{"EchoTime": 0.08}'
    assert weights.read_bytes() == weights_bytes  # the model being run used to become the report
    fresh = tmp_path / "other" / "case.json"  # named as the sidecar of an image beside it, before it exists too
    case_4d(tmp_path / "other" / "case.nii.gz", 2)
    result = segment(str(case), "-o", str(tmp_path / "out"), "-c", str(weights), "--report", str(fresh))
    assert result.exit_code == 2 and "case_report.json" in error_lines(result)[0] and not fresh.exists()
    assert not (tmp_path / "out").exists()  # refused before any model ran
    result = runner.invoke(app, ["benchmark", "--quick", "--json", str(weights)])  # refused before any timing
    assert result.exit_code == 2 and "binary data" in error_lines(result)[0]
    result = runner.invoke(app, ["info", "--json", str(sidecar)])  # every --json option has the same rule
    assert result.exit_code == 2 and "sidecar" in error_lines(result)[0]
    assert sidecar.read_text() == '{"EchoTime": 0.08}'


def test_a_report_replaces_only_an_earlier_report(weights, tmp_path) -> None:
    """``info --json README.md`` used to replace the README with JSON: a report may replace an earlier report of
    ours (or an empty file), never a user's document, script, dataset metadata or table."""
    from mdanet_sdk.evaluate import check_report_paths

    notes, script, bids = tmp_path / "NOTES.md", tmp_path / "tool.py", tmp_path / "dataset_description.json"
    notes.write_text("# notes\n")
    script.write_text("print('hi')\n")
    bids.write_text('{"Name": "stroke", "BIDSVersion": "1.8.0"}')  # JSON, but no report of ours
    for target in (notes, script, bids):
        result = runner.invoke(app, ["info", "--json", str(target)])
        assert result.exit_code == 2 and "is no earlier JSON report of mdanet-sdk" in error_lines(result)[0]
    result = segment(
        str(case_4d(tmp_path / "case.nii.gz")), "-o", str(tmp_path / "out"), "-c", str(weights), "--report", str(notes)
    )
    assert result.exit_code == 2 and not (tmp_path / "out").exists()  # refused before any model ran
    assert (notes.read_text(), script.read_text()) == ("# notes\n", "print('hi')\n")
    assert json.loads(bids.read_text())["Name"] == "stroke"
    table = tmp_path / "results.csv"  # evaluate --json results.json writes results.csv beside it
    for cohort in ("patient,age\np1,71\n", "case_id,age,nihss\na,71,12\n"):
        table.write_text(cohort)
        with pytest.raises(InputError, match="no earlier CSV report"):
            check_report_paths(tmp_path / "results.json", table)
    table.write_text("case_id,fold,dsc\na,0,0.5\n")  # an earlier evaluation's table may be replaced
    check_report_paths(tmp_path / "results.json", table)
    earlier, empty = tmp_path / "earlier.json", tmp_path / "tmp.XXXXXX"  # as `mktemp` makes it
    empty.touch()
    assert runner.invoke(app, ["summary", "--preset", "small", "--size", "32", "--json", str(earlier)]).exit_code == 0
    for target in (earlier, empty):  # another command's earlier report, an empty file: replaced
        assert runner.invoke(app, ["info", "--json", str(target)]).exit_code == 0
        assert json.loads(target.read_text())["python"] == sys.version.split()[0]


def test_a_report_never_replaces_a_training_runs_records(weights, tmp_path) -> None:
    """``evaluate RUN GT --json RUN/config.json`` used to replace the run's config, after which no fold could be
    added or resumed ("not a readable run config")."""
    run = tmp_path / "run"
    (run / "fold_0").mkdir(parents=True)
    (run / "config.json").write_text('{"epochs": 3}')
    (run / "fold_0" / "metrics.json").write_text("{}")
    (run / "fold_0" / "last.pt").write_bytes(weights.read_bytes())
    case = case_4d(tmp_path / "case.nii.gz")
    for record in (run / "config.json", run / "fold_0" / "metrics.json"):
        result = segment(str(case), "-o", str(tmp_path / "out"), "-c", str(weights), "--json", str(record))
        assert result.exit_code == 2 and "training run's own" in error_lines(result)[0]
    assert (run / "config.json").read_text() == '{"epochs": 3}' and not (tmp_path / "out").exists()
    result = runner.invoke(app, ["evaluate", str(run), str(tmp_path), "--json", str(run / "config.json")])
    assert result.exit_code == 2 and "training run's own config.json" in error_lines(result)[0]
    (tmp_path / "elsewhere").mkdir()
    # no run, and an earlier segment report of ours: a report may replace it
    (tmp_path / "elsewhere" / "config.json").write_text('{"cases": [], "failed": []}')
    result = segment(
        str(case),
        "-o",
        str(tmp_path / "out"),
        "-c",
        str(weights),
        "--json",
        str(tmp_path / "elsewhere" / "config.json"),
    )
    assert result.exit_code == 0 and "cases" in json.loads((tmp_path / "elsewhere" / "config.json").read_text())


def test_signals_are_held_while_renames_that_belong_together_run() -> None:
    """synth replaces a dataset by a few renames under this guard: Ctrl-C during them used to leave a folder
    without phantoms.json, which the next synth refused and training took for real data."""
    from mdanet_sdk._files import signals_deferred

    done = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever earlier tests installed
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)  # whichever thread the system hands it to
                done.append("after the signal")  # still runs: the interrupt waits for the block's end
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["after the signal"]


CUDA_OOM = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore torch text")
CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: 2147483648")


def _short_of_memory(model, most: int, calls: list[int], error: Exception = CUDA_OOM):
    """``model`` on a device that holds at most ``most`` slices per pass (``error`` beyond that)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if len(x) > most:
            raise error
        return model(x)

    return run


@pytest.mark.parametrize("error", [CUDA_OOM, CPU_OOM], ids=["cuda", "cpu"])
def test_a_batch_that_runs_out_of_memory_is_split_and_gives_the_same_masks(weights, tmp_path, caplog, error) -> None:
    """Three cases of 11 slices in batches of 8 on a device that holds 2 slices: a batch is halved until it fits,
    the batches after it (of that case and the next) are cut at the size that fitted, two warnings say so, and
    every case gets the probabilities of a device with room (they used to fail with "lower the batch size")."""
    cases = [case_4d(tmp_path / f"c{i}.nii.gz", seed=i, slices=11) for i in range(3)]
    reference = list(Segmenter.from_checkpoint(weights, batch_size=8).predict_many(cases))
    seg = Segmenter.from_checkpoint(weights, batch_size=8)
    calls: list[int] = []
    seg.predictor.models[0] = _short_of_memory(seg.predictor.models[0], 2, calls, error)
    with caplog.at_level(logging.WARNING, logger="mdanet_sdk"):
        results = list(seg.predict_many(cases))
    for result, expected in zip(results, reference, strict=True):
        np.testing.assert_allclose(result.probability_canonical, expected.probability_canonical, atol=1e-6)
        assert result.probability_canonical.max() > 0.1
    assert calls[:4] == [8, 4, 2, 2] and max(calls[4:]) == 2 and seg.batch_size == 2
    warned = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert warned == [
        "mdanet-sdk: the model ran out of memory on 8 slices at once; now 4.",
        "mdanet-sdk: the model ran out of memory on 4 slices at once; now 2.",
    ]
    calls.clear()
    list(seg.predict_many(cases))
    assert max(calls) == 2


def test_a_model_that_runs_out_of_memory_on_one_slice_says_so_in_one_line(weights) -> None:
    seg = Segmenter.from_checkpoint(weights, batch_size=4)
    calls: list[int] = []
    seg.predictor.models[0] = _short_of_memory(seg.predictor.models[0], 0, calls)
    with pytest.raises(
        CheckpointError,
        match=r"^the model ran out of memory on a single slice \(CUDA out of memory"
        r"\. Tried to allocate 2\.00 GiB\); free memory, or run on a device with more",
    ) as info:
        seg.probabilities(torch.zeros(4, 2, 32, 32))
    assert "\n" not in str(info.value) and calls == [4, 2, 1]


def test_undecodable_names_reach_reports_as_valid_utf8(weights, tmp_path) -> None:
    """A folder name with a byte that is no UTF-8 (0xff, as an old Latin-1 tool writes "ÿ") is a lone surrogate
    in Python; JSON readers other than Python's refuse its ``\\udcff`` escape, and a CSV could not be written."""
    root = tmp_path / "data"
    folder = Path(os.fsdecode(bytes(root) + b"/case\xff"))
    folder.mkdir(parents=True)
    data = np.asarray(nib.load(case_4d(tmp_path / "src.nii.gz")).dataobj)
    for i, modality in enumerate(("dwi", "adc")):
        nib.save(nib.Nifti1Image(data[..., i], np.diag([1.5, 1.5, 3.0, 1.0])), folder / f"{modality}.nii.gz")
    label = (data[..., 0] > data[..., 0].mean()).astype(np.uint8)
    nib.save(nib.Nifti1Image(label, np.diag([1.5, 1.5, 3.0, 1.0])), folder / "label.nii.gz")
    out = tmp_path / "out"
    result = segment(str(root), "-o", str(out), "-c", str(weights), "--json", str(tmp_path / "run.json"), "-q")
    assert result.exit_code == 0, result.stdout + result.stderr
    scored = runner.invoke(app, ["evaluate", str(out), str(root), "--json", str(tmp_path / "m.json")])
    assert scored.exit_code == 0, scored.stdout + scored.stderr
    for name in ("run.json", "m.json"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert "\\udc" not in text and '"case\\\\xff' in text, name  # the byte as text, JSON-escaped
    assert json.loads((tmp_path / "run.json").read_text())["cases"][0]["case_id"] == "case\\xff"
    again = segment(
        str(root), "-o", str(out), "-c", str(weights), "--json", str(tmp_path / "run.json"), "-q", "--skip-existing"
    )
    assert again.exit_code == 0, again.stdout + again.stderr  # the kept case's entry is carried over
    assert [c["case_id"] for c in json.loads((tmp_path / "run.json").read_text())["cases"]] == ["case\\xff"]
    assert "\ncase\\xff," in (tmp_path / "m.csv").read_bytes().decode("utf-8")


def test_an_output_that_cannot_be_written_is_named_as_given(weights, tmp_path) -> None:
    """The error named the temporary file beside the output (``/proc/.x.ts.<host>.<pid>...tmp.pt2``)."""
    result = runner.invoke(app, ["export", str(weights), "-o", "/proc/x.ts"])
    assert result.exit_code == 1 and error_lines(result) == [
        "error: /proc/x.ts: No such file or directory; check the path and its permissions, then run again."
    ]
