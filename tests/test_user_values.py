"""Values a user passes from Python, a config file or the environment: a wrong type or an impossible value is one
:class:`InputError` (or :class:`BackendUnavailableError`) sentence, never a ``TypeError``/``IndexError`` from
deep inside, and each setting has one rule wherever it is given."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mdanet_sdk.bench.records import BenchSettings
from mdanet_sdk.device import resolve_device
from mdanet_sdk.errors import InputError
from mdanet_sdk.evaluate.run import check_threshold
from mdanet_sdk.export import BatchRange
from mdanet_sdk.inference import segment
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.inference.predictor import check_run_options
from mdanet_sdk.metrics import aggregate, case_metrics
from mdanet_sdk.train.config import TrainConfig
from mdanet_sdk.train.distributed import Dist


def _train(**kwargs: object) -> TrainConfig:
    return TrainConfig("data", "out", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PostprocessConfig(threshold="abc"), "threshold must be a number, got 'abc'"),  # was ValueError
        (lambda: PostprocessConfig(threshold=None), "threshold must be a number, got None"),  # was TypeError
        (lambda: PostprocessConfig(min_size=float("inf")), "min_size must be a whole number"),  # was OverflowError
        (lambda: PostprocessConfig(min_size=2.5), "min_size must be a whole number"),
        (lambda: PostprocessConfig(max_adc_ratio=float("nan")), "max_adc_ratio must be 0"),
        (lambda: PostprocessConfig(tta="yes"), "tta must be true or false"),  # was taken as True
        (lambda: PostprocessConfig(tta=1), "tta must be true or false"),  # one rule with tta_screen
        (lambda: check_threshold(1j), "threshold must be a number"),
        (lambda: _train(betas=(0.9,)), r"betas must be two finite numbers"),  # was IndexError
        (lambda: _train(betas="ab"), r"betas must be two finite numbers"),
        (lambda: _train(model_overrides=None), "model_overrides must be a dict"),  # was TypeError
        (lambda: _train(fold=["x"]), "fold must be 'all', an index or a list"),  # was ValueError
        (lambda: _train(fold=True), "fold must be 'all', an index or a list"),
        (lambda: BenchSettings.from_env({"MDANET_BENCH_SIZE": ","}), "comma-separated integers"),  # was IndexError
        (lambda: BenchSettings(device="gpu"), "unknown device 'gpu'"),
        (lambda: resolve_device("cpu:7"), "unknown device 'cpu:7'"),  # was accepted and reported as cpu:7
        (lambda: check_threshold("0.5"), "threshold must be a number"),  # was TypeError
        (lambda: BatchRange("1", 0, 4), "batch sizes must be whole numbers"),  # was TypeError
        (lambda: BatchRange(1, 0, 1.5), "batch sizes must be whole numbers"),  # was accepted
        (lambda: check_run_options(2.5, 2, True), "batch_size must be a whole number >= 1, got 2.5"),
        (lambda: check_run_options("4", 2, True), "batch_size must be a whole number >= 1"),
        (lambda: check_run_options(None, "2", True), "prefetch must be a whole number >= 1"),
        (lambda: check_run_options(None, 2, 1), "tta_screen must be True or False"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_input_error(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_equal_settings_of_other_number_types_are_equal() -> None:
    assert PostprocessConfig(True, np.float32(0.25), np.int64(5), 1) == PostprocessConfig(True, 0.25, 5, 1.0)
    assert _train(fold=np.int64(1), betas=[0.5, 0.9]).fold_indices() == [1]
    assert _train(fold=np.array([0, 2]), betas=np.array([0.5, 0.9])).fold_indices() == [0, 2]
    assert _train(fold=range(2)).fold_indices() == [0, 1]
    check_run_options(np.int64(4), 2, np.True_)  # numpy's numbers and flags are numbers and flags
    assert _train(kind="isles22").kind == "mri" and _train(kind="isles18").kind == "ctp"  # as the CLI took them


def test_segment_and_the_segmenter_share_one_rule_for_their_options(tmp_path) -> None:
    with pytest.raises(InputError, match="batch_size must be a whole number >= 1, got 2.5"):
        segment([tmp_path / "case"], tmp_path, batch_size=2.5)  # was refused here, accepted by Segmenter()
    with pytest.raises(InputError, match="threshold must be a number"):
        segment([tmp_path / "case"], tmp_path, threshold="x")


def test_a_launchers_rank_that_is_no_number_is_one_sentence(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InputError, match="RANK='x' is not a whole number; start the job with torchrun"):
        Dist()  # was ValueError
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert Dist().rank == 1 and not Dist().main and Dist().enabled


def test_reports_saved_from_python_never_replace_an_image(tmp_path, io_write_nifti) -> None:
    from mdanet_sdk.bench.records import BenchmarkReport
    from mdanet_sdk.bench.render import write_json
    from mdanet_sdk.evaluate import EvaluationResult

    label = io_write_nifti(tmp_path / "case1_msk.nii", np.ones((4, 4, 2), np.uint8))
    before = label.read_bytes()
    scores = case_metrics(np.ones((2, 2), bool), np.ones((2, 2), bool))
    result = EvaluationResult(cases=[{"case_id": "a", **scores}], summary=aggregate([scores]), over="cases")
    with pytest.raises(InputError, match="named or stored like an image"):
        result.save(label)  # the CLI checked this; EvaluationResult.save wrote over the label
    with pytest.raises(InputError, match="would be overwritten by the CSV"):
        result.save(tmp_path / "report.csv", tmp_path / "report.csv")
    with pytest.raises(InputError, match="named or stored like an image"):
        write_json(BenchmarkReport.__new__(BenchmarkReport), label)
    assert label.read_bytes() == before
    assert [p.name for p in result.save(tmp_path / "e.json", tmp_path / "e.csv")] == ["e.json", "e.csv"]


def test_model_settings_are_checked_where_python_meets_them() -> None:
    from mdanet_sdk.config import MODALITY_GROUPS, MDANetConfig
    from mdanet_sdk.model import model_summary

    with pytest.raises(InputError, match="space_grid sets MDANet's GCFB, which the unet baseline has not"):
        MDANetConfig.from_preset("unet", space_grid=4)  # was accepted and ignored (the CLI alone refused it)
    with pytest.raises(
        InputError, match=r"size must be from 16 to 1024 pixels \(the model grids mdanet-sdk reads\), got 4096"
    ):
        model_summary(MDANetConfig.from_preset("small"), 4096)  # was an error about a space grid never given
    assert MDANetConfig.groups_of_sizes(2, 2) == MODALITY_GROUPS["ctp"]
    assert MDANetConfig.groups_of_sizes(1, 1) == MODALITY_GROUPS["mri"]
    assert MDANetConfig.groups_of_sizes(1, 3) == (("a0",), ("b0", "b1", "b2"))
    with pytest.raises(InputError, match="at least one channel"):
        MDANetConfig.groups_of_sizes(0, 2)


def test_pictures_never_replace_a_mask_or_a_model(tmp_path, io_write_nifti) -> None:
    from typer.testing import CliRunner

    from mdanet_sdk.cli import app
    from mdanet_sdk.data.targets import check_picture_file

    mask = io_write_nifti(tmp_path / "gt.nii", np.ones((4, 4, 2), np.uint8))
    (tmp_path / "best.pt").write_bytes(b"PK\x03\x04weights")
    (tmp_path / "renamed.png").write_bytes(mask.read_bytes())
    (tmp_path / "old.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16)
    for path, message in (("gt.nii", "must be a .png"), ("best.pt", "must be a .png"), ("renamed.png", "is no PNG")):
        with pytest.raises(InputError, match=message):
            check_picture_file(tmp_path / path, "plot")
    assert check_picture_file(tmp_path / "old.png") == tmp_path / "old.png"  # an earlier plot may be replaced
    # `benchmark --plot` checks before minutes of timing (it wrote a PNG over gt.nii and best.pt after the run).
    result = CliRunner().invoke(app, ["benchmark", "--quick", "--sections", "forward", "--plot", str(mask)])
    assert result.exit_code == 2 and "--plot" in result.output and "must be a .png" in result.output
    assert mask.read_bytes()[:4] != b"\x89PNG"
