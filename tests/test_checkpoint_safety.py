"""Checkpoints that cannot fail quietly or exhaust memory (issue 20).

Each test reproduces a file that used to load (flipped bytes and NaN weights answered "0 lesions"; a config with
``size=100000`` or huge widths allocated terabytes) and checks that it is now refused with one CheckpointError
sentence. Every file is written under pytest's ``tmp_path``.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mdanet_sdk.config import MAX_PARAMETERS, MDANetConfig, estimate_parameters
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.errors import CheckpointError, InputError
from mdanet_sdk.inference import POSTPROCESSING_DEFAULTS
from mdanet_sdk.model import build_model
from mdanet_sdk.train import checkpoint as ck
from mdanet_sdk.train.checkpoint import BUNDLED, load_checkpoint, save_checkpoint
from mdanet_sdk.train.checkpoint_checks import INFERENCE_SETTINGS


@pytest.fixture(scope="module")
def config() -> MDANetConfig:
    return MDANetConfig.from_preset("small", "mri", widths=(8, 8, 16, 16, 32))


@pytest.fixture
def saved(tmp_path: Path, config: MDANetConfig, ckpt_random) -> Path:
    meta = {"epoch": 2, "inference": {"tta": False, "threshold": 0.4, "min_size": 5, "max_adc_ratio": 0.9}}
    return ckpt_random(tmp_path / "best.pt", config=config, preprocess=PreprocessConfig(size=32), meta=meta)


def _raw(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def _write(payload: dict[str, Any], path: Path, seal: bool = False) -> Path:
    """``payload`` written as it is (``seal``: with a fresh, matching integrity record)."""
    if seal:
        payload["integrity"] = {"algorithm": "sha256", "digest": ck.payload_digest(payload)}
    torch.save(payload, path)
    return path


def _refused(path: Path, match: str, **kwargs: Any) -> str:
    """The one-line message of the CheckpointError loading ``path`` raises."""
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and len(message) < 500, message
    return message


# -- damage ----------------------------------------------------------------------------------------------------
def test_flipped_bytes_in_the_bundled_weights_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "default-mri.pt"
    shutil.copyfile(BUNDLED["default-mri"], copy)
    with zipfile.ZipFile(copy) as archive:  # the largest tensor, stored uncompressed
        member = max(archive.infolist(), key=lambda info: info.file_size)
    assert member.compress_type == zipfile.ZIP_STORED and member.file_size > 16_384
    data = bytearray(copy.read_bytes())
    # Its data starts after the 30-byte local header, the name and the extra field; flip 4 KB in its middle.
    name_len = int.from_bytes(data[member.header_offset + 26 : member.header_offset + 28], "little")
    extra_len = int.from_bytes(data[member.header_offset + 28 : member.header_offset + 30], "little")
    middle = member.header_offset + 30 + name_len + extra_len + member.file_size // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    copy.write_bytes(bytes(data))
    assert torch.load(copy, weights_only=True)["state_dict"]  # torch itself reads it without a word
    _refused(copy, r"is damaged \(member .* fails its CRC check\); re-download or re-save it")
    _refused(copy, "is damaged", trust=True)


def test_truncated_file_is_damaged(saved: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    _refused(cut, "is damaged")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused(tmp_path: Path, config: MDANetConfig, value: float) -> None:
    model = build_model(config)
    with torch.no_grad():
        model.head.weight[0, 0] = value
    path = save_checkpoint(tmp_path / "nan.pt", model, config, PreprocessConfig(size=32), {})  # sealed as it is
    _refused(path, r"NaN or infinite weights in head\.weight", trust=True)


@pytest.mark.parametrize("value", [0.0, 0.25])
def test_blanked_weights_are_refused(tmp_path: Path, config: MDANetConfig, value: float) -> None:
    """A network whose kernels were overwritten with one value answered "no lesion" for every case, without a
    word, when its file was sealed as it was (or loaded with trust)."""
    model = build_model(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(value)
    path = save_checkpoint(tmp_path / "blank.pt", model, config, PreprocessConfig(size=32), {})
    _refused(path, rf"holds one value \({value:g}\) in every weight of .*; the file is blanked", trust=True)
    model = build_model(config)
    with torch.no_grad():
        model.head.weight.zero_()  # one layer is enough
    path = save_checkpoint(tmp_path / "head.pt", model, config, PreprocessConfig(size=32), {})
    _refused(path, r"in every weight of head\.weight", trust=True)


def test_weights_that_overflow_the_network_dtype_are_refused(saved: Path, tmp_path: Path) -> None:
    """1e300 is finite in a float64 file and inf once copied into the float32 network."""
    payload = _raw(saved)
    payload["state_dict"]["head.weight"] = torch.full_like(
        payload["state_dict"]["head.weight"], 1e300, dtype=torch.float64
    )
    path = _write(payload, tmp_path / "f64.pt", seal=True)
    _refused(path, r"NaN or infinite weights in head\.weight \(as torch\.float32\)", trust=True)
    payload["state_dict"]["head.weight"] = _raw(saved)["state_dict"]["head.weight"].double()  # fits: loads
    assert load_checkpoint(_write(payload, tmp_path / "f64ok.pt", seal=True)).state_dict


def test_impossible_statistics_and_modality_names_are_refused(saved: Path, tmp_path: Path) -> None:
    """A negative batch-norm variance loaded and failed each case later with "non-finite values"; modality
    names "dwi, dwi" or "../adc" loaded too."""
    payload = _raw(saved)
    name = next(k for k in payload["state_dict"] if k.endswith("running_var"))
    payload["state_dict"][name] = -payload["state_dict"][name].abs() - 1.0
    _refused(_write(payload, tmp_path / "var.pt", seal=True), "negative batch-norm variance", trust=True)
    for groups in ([["dwi"], ["dwi"]], [["dwi"], ["../adc"]], [["dwi"], ["adc/x"]]):
        payload = _raw(saved)
        payload["model_config"]["groups"] = groups
        _refused(_write(payload, tmp_path / "groups.pt", seal=True), "distinct modality names", trust=True)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("meta", _nested(3000), "nested more than 32 levels deep"),
        ("meta", _nested(40), "nested more than 32 levels deep"),
        ("preprocess", _nested(3000), "nested more than 32 levels deep"),
        ("meta", list(range(200_000)), "more than 100000 values"),
        ("meta", "x" * (17 << 20), "MiB of text"),
        ("meta", 2**2000, "integer of more than 1024 bits"),
    ],
    ids=["deep-3000", "deep-40", "deep-preprocess", "many-values", "long-text", "huge-int"],
)
def test_oversized_meta_is_refused(saved: Path, tmp_path: Path, key: str, value: Any, match: str) -> None:
    """A meta nested thousands deep used to end in a RecursionError while hashing it; any record will do, since
    the size is checked first."""
    payload = _raw(saved)
    payload[key] = {**payload[key], "blob": value}
    payload["integrity"] = {"algorithm": "sha256", "digest": "0" * 64}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # torch.save pickles recursively, as does torch.load at its own limit
    try:
        path = _write(payload, tmp_path / "deep.pt")
        payload.pop("integrity")
        trusted = _write(payload, tmp_path / "deep-trusted.pt")
        _refused(path, rf"holds a {key} that is .*{match}")
        _refused(trusted, match, trust=True)
    finally:
        sys.setrecursionlimit(limit)
    if key == "meta" and isinstance(value, dict):  # at the default limit, torch.load's RecursionError is refused
        _refused(path, "is not a readable mdanet-sdk checkpoint|nested more than")


def test_recursion_while_unpickling_is_a_checkpoint_error(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def deep_load(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ck.torch, "load", deep_load)
    _refused(saved, "is not a readable mdanet-sdk checkpoint")


class _RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("this ran while the checkpoint was loaded",))


def test_a_checkpoint_holding_code_is_refused_without_suggesting_to_run_it(saved: Path, tmp_path: Path) -> None:
    """torch's refusal, cut to its first line, read "Re-running torch.load with weights_only set to False..."."""
    payload = _raw(saved)
    payload["meta"] = {**payload["meta"], "hook": _RunsCode()}
    path = tmp_path / "code.pt"
    torch.save(payload, path)
    message = _refused(
        path, "damaged, or holds Python objects beyond weights and plain data, which may run code", trust=True
    )
    assert "weights_only" not in message


# -- integrity record ------------------------------------------------------------------------------------------
def test_missing_integrity_needs_trust(saved: Path, tmp_path: Path) -> None:
    raw = _raw(saved)
    del raw["integrity"]
    old = _write(raw, tmp_path / "old.pt")
    message = _refused(old, "has no integrity record")
    assert "trust=True" in message and "--trust" in message
    assert load_checkpoint(old, trust=True).meta["epoch"] == 2
    with pytest.raises(TypeError):
        load_checkpoint(old, "cpu", True)  # trust is keyword-only: a positional True must not slip through


@pytest.mark.parametrize("trust", [False, True])
def test_digest_mismatch_is_refused_even_with_trust(saved: Path, tmp_path: Path, trust: bool) -> None:
    raw = _raw(saved)
    name = "head.weight"
    raw["state_dict"][name] = raw["state_dict"][name].clone()
    raw["state_dict"][name].view(-1)[0] += 1.0  # one weight edited, the record kept
    _refused(_write(raw, tmp_path / "edited.pt"), "does not match its integrity record", trust=trust)
    raw = _raw(saved)
    raw["meta"]["inference"]["threshold"] = 0.9  # metadata is covered as well
    _refused(_write(raw, tmp_path / "meta.pt"), "does not match its integrity record", trust=trust)


def test_digest_is_canonical(saved: Path) -> None:
    """Independent of dict order, and the resume state is not part of it."""
    raw = _raw(saved)
    reordered = {
        **raw,
        "state_dict": dict(reversed(list(raw["state_dict"].items()))),
        "meta": dict(reversed(list(raw["meta"].items()))),
        "optimizer": {"state": {}},
    }
    assert ck.payload_digest(reordered) == ck.payload_digest(raw) == raw["integrity"]["digest"]


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ("sha256", "malformed integrity record"),
        ({"algorithm": "sha256", "digest": "xyz"}, "malformed integrity record"),
        ({"algorithm": "md5", "digest": "0" * 64}, "integrity record of an unknown kind"),
    ],
)
def test_malformed_integrity_record(saved: Path, tmp_path: Path, record: Any, match: str) -> None:
    raw = _raw(saved)
    raw["integrity"] = record
    _refused(_write(raw, tmp_path / "record.pt"), match, trust=True)


def test_crcs_are_written_even_when_torch_skips_them(tmp_path: Path, config: MDANetConfig) -> None:
    settings = torch.utils.serialization.config.save
    before = settings.compute_crc32
    settings.compute_crc32 = False
    try:
        path = save_checkpoint(tmp_path / "crc.pt", build_model(config), config, PreprocessConfig(size=32), {})
    finally:
        settings.compute_crc32 = before
    assert load_checkpoint(path).model_config == config


def test_bundled_weights_are_sealed() -> None:
    for name, path in BUNDLED.items():
        raw = _raw(path)
        assert raw["integrity"]["digest"] == ck.payload_digest(raw)
        assert {v.dtype for v in raw["state_dict"].values()} >= {torch.float16}  # compacted tensors kept as they were
        assert load_checkpoint(name).meta["name"] == name


# -- every field validated -------------------------------------------------------------------------------------
def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        target = raw
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _state(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw.__setitem__("state_dict", change(dict(raw["state_dict"])))


BAD_FIELDS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    # format tag
    "format swapped": (_set("format", value="mdanet-sdk-export"), "not an mdanet-sdk checkpoint"),
    "format not a string": (_set("format", value=1), "not an mdanet-sdk checkpoint"),
    "format_version string": (_set("format_version", value="1"), "invalid format_version"),
    "format_version bool": (_set("format_version", value=True), "invalid format_version"),
    "format_version 0": (_set("format_version", value=0), "invalid format_version"),
    "format_version newer": (_set("format_version", value=2), "upgrade mdanet-sdk"),
    # meta
    "meta list": (_set("meta", value=[1, 2]), "meta that is a list, not a dict"),
    "meta epoch string": (_set("meta", "epoch", value="three"), r"meta\['epoch'\].*not an integer"),
    "meta fold bool": (_set("meta", "fold", value=True), r"meta\['fold'\].*not an integer"),
    "meta val_cases": (_set("meta", "val_cases", value=[1, 2]), "not a list of strings"),
    "meta val_dsc string": (_set("meta", "val_dsc", value="0.8"), "not a number or null"),
    "meta int key": (_set("meta", 7, value="x"), "meta key 7 that is not a string"),
    # meta.inference
    "inference string": (_set("meta", "inference", value="fast"), r"meta\['inference'\].*not a dict"),
    "inference tta string": (_set("meta", "inference", "tta", value="yes"), r"\['tta'\].*true or false"),
    "inference threshold 1.5": (_set("meta", "inference", "threshold", value=1.5), "between 0 and 1"),
    "inference threshold nan": (_set("meta", "inference", "threshold", value=math.nan), "between 0 and 1"),
    "inference threshold bool": (_set("meta", "inference", "threshold", value=True), "between 0 and 1"),
    "inference min_size -1": (_set("meta", "inference", "min_size", value=-1), r"\['min_size'\]"),
    "inference min_size float": (_set("meta", "inference", "min_size", value=2.5), r"\['min_size'\]"),
    "inference max_adc_ratio": (_set("meta", "inference", "max_adc_ratio", value=-0.5), r"\['max_adc_ratio'\]"),
    "inference unknown key": (_set("meta", "inference", "turbo", value=True), r"\['turbo'\].*upgrade"),
    # state_dict
    "state_dict list": (_set("state_dict", value=[1.0]), "state_dict that is a list, not a dict"),
    "state_dict int key": (_state(lambda s: {**s, 3: torch.zeros(1)}), "under state_dict key 3"),
    "state_dict list value": (_state(lambda s: {**s, "head.bias": [0.0, 0.0]}), "holds a list under"),
    "state_dict complex": (
        _state(lambda s: {**s, "head.bias": torch.zeros(2, dtype=torch.complex64)}),
        "complex64 tensor",
    ),
    "state_dict wrong shape": (_state(lambda s: {**s, "head.bias": torch.zeros(3)}), "do not fit"),
    "state_dict int weights": (_state(lambda s: {**s, "head.bias": torch.zeros(2, dtype=torch.int64)}), "do not fit"),
    "state_dict missing key": (_state(lambda s: {k: v for k, v in s.items() if k != "head.bias"}), "do not fit"),
    "state_dict extra key": (_state(lambda s: {**s, "extra.weight": torch.zeros(1)}), "do not fit"),
    # model_config
    "model_config string": (_set("model_config", value="paper"), "model_config that is a str, not a dict"),
    "widths string": (_set("model_config", "widths", value="abc"), "widths must be 5 encoder widths"),
    "widths 4 levels": (_set("model_config", "widths", value=[8, 8, 16, 16]), "widths must be 5 encoder widths"),
    "widths bool": (_set("model_config", "widths", value=[True, 8, 16, 16, 32]), "widths must be 5"),
    "widths float": (_set("model_config", "widths", value=[8.0, 8, 16, 16, 32]), "widths must be 5"),
    "width too large": (_set("model_config", "widths", value=[8, 8, 16, 16, 100_000]), "from 4 to 4096"),
    "groups string": (_set("model_config", "groups", value="dwi"), "groups must be two lists"),
    "groups empty": (_set("model_config", "groups", value=[["dwi"], []]), "groups must be two lists"),
    "groups numbers": (_set("model_config", "groups", value=[[1], [2]]), "groups must be two lists"),
    "dasc int": (_set("model_config", "dasc", value=1), "dasc must be true or false"),
    "architecture int": (_set("model_config", "architecture", value=5), "architecture must be one of"),
    "space_grid 0": (_set("model_config", "space_grid", value=0), "space_grid must be an integer from 1 to 64"),
    "space_grid huge": (_set("model_config", "space_grid", value=1000), "space_grid must be an integer"),
    "space_grid string": (_set("model_config", "space_grid", value="8"), "space_grid must be an integer"),
    "gcn_nodes negative": (_set("model_config", "gcn_nodes", value=-1), "gcn_nodes must be an integer"),
    "num_classes bool": (_set("model_config", "num_classes", value=True), "num_classes must be an integer"),
    "model_config unknown": (_set("model_config", "future", value=1), "unknown fields"),
    # preprocess
    "preprocess string": (_set("preprocess", value="x"), "preprocess that is a str, not a dict"),
    "size string": (_set("preprocess", "size", value="128"), "size must be an integer from 16 to 1024"),
    "size bool": (_set("preprocess", "size", value=True), "size must be an integer from 16 to 1024"),
    "size 8": (_set("preprocess", "size", value=8), "size must be an integer from 16 to 1024"),
    "multiple huge": (_set("preprocess", "multiple", value=100_000), "multiple must be an integer from 1 to 256"),
    "clip string": (_set("preprocess", "clip_percentiles", value="ab"), "clip_percentiles must be"),
    "clip nan": (_set("preprocess", "clip_percentiles", value=[math.nan, 99.0]), "clip_percentiles must be"),
    "normalization int": (_set("preprocess", "normalization", value=3), "normalization must be one of"),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_every_field_is_validated(saved: Path, tmp_path: Path, case: str) -> None:
    change, match = BAD_FIELDS[case]
    raw = _raw(saved)
    change(raw)
    del raw["integrity"]  # trust lets the file through to the field checks, which trust never skips
    _refused(_write(raw, tmp_path / "bad.pt"), match, trust=True)


def test_sealed_bad_field_is_refused(saved: Path, tmp_path: Path) -> None:
    """A matching record does not vouch for the content: a sealed bad field is refused all the same."""
    raw = _raw(saved)
    raw["meta"]["inference"]["threshold"] = 7
    _refused(_write(raw, tmp_path / "sealed.pt", seal=True), "between 0 and 1")


def test_inference_keys_are_the_segmenter_settings() -> None:
    assert set(INFERENCE_SETTINGS) == set(POSTPROCESSING_DEFAULTS)


# -- memory ----------------------------------------------------------------------------------------------------
# The refused load runs in a child whose peak memory is its own: this process's peak (``ru_maxrss``) may already
# be far above what a refusal could allocate (another test built a 175 M-parameter network), and would hide it.
_CHILD_LOAD = """
import resource, sys, time
from mdanet_sdk.errors import CheckpointError
from mdanet_sdk.train.checkpoint import load_checkpoint
before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
try:
    load_checkpoint(sys.argv[1])
except CheckpointError as exc:
    message = str(exc)
else:
    message = "loaded"
seconds = time.perf_counter() - start
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, seconds, message, sep="\\n")
"""


@pytest.mark.parametrize(
    ("section", "field", "value", "match"),
    [
        ("preprocess", "size", 100_000, "size must be an integer from 16 to 1024"),  # was 2.7 TiB of slices
        ("model_config", "widths", [4096] * 5, r"about \d+ M parameters, more than the 200 M"),  # was 10.5 GB RSS
        ("model_config", "widths", [64, 128, 256, 2048, 4096], "more than the 200 M"),
        # Within the cap (~70 M parameters): the weights' shapes are compared with a network built on the meta device.
        ("model_config", "gcn_nodes", 4096, r"do not fit its model config \(bottleneck\.channel"),
    ],
)
def test_huge_configs_are_refused_without_allocating(saved: Path, tmp_path: Path, section, field, value, match):
    raw = _raw(saved)
    raw[section][field] = value
    path = _write(raw, tmp_path / "huge.pt", seal=True)  # the small weights stay: the config alone is refused
    _refused(path, match)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD_LOAD, str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    grown_mb, seconds, message = child.stdout.strip().split("\n")
    assert re.search(match, message) and float(seconds) < 2.0 and float(grown_mb) < 500, child.stdout


# -- the configs themselves (also what the export loader calls) --------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"widths": [4, 4, 4, 4, 5000]},
        {"widths": (64, 128, 256, 512)},
        {"space_grid": 65},
        {"space_grid": True},
        {"gcn_embed": 0},
        {"num_classes": 0},
        {"num_classes": 2.0},
        {"msc": "yes"},
        {"groups": [["dwi"], ["adc", 3]]},
        {"preset": 3},
    ],
)
def test_model_config_bounds(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        MDANetConfig.from_dict({**MDANetConfig.from_preset("small", "mri").to_dict(), **bad})


def test_config_from_dict_needs_a_dict() -> None:
    for cls in (MDANetConfig, PreprocessConfig):
        with pytest.raises(InputError, match="must be a dict"):
            cls.from_dict(["size", 128])
        with pytest.raises(InputError, match="unknown fields"):
            cls.from_dict({1: "x", "size2": 3})  # non-string keys do not crash the message


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 100_000},
        {"size": 15},
        {"size": 16.0},
        {"multiple": 257},
        {"multiple": False},
        {"clip_percentiles": (1, "99")},
        {"clip_percentiles": (1, math.inf)},
        {"normalization": None},
    ],
)
def test_preprocess_config_bounds(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), **bad})


def test_parameter_estimate_bounds_the_real_count() -> None:
    """The closed-form estimate is never below the real count, and the paper presets are far from the cap."""
    for preset in ("paper", "small", "unet", "attention-unet"):
        for bottleneck in ("gcfb", "nonlocal", "transformer", "none"):
            cfg = MDANetConfig.from_preset(preset, "ctp", bottleneck=bottleneck)
            with torch.device("meta"):
                real = sum(t.numel() for t in build_model(cfg).state_dict().values())
            assert real <= estimate_parameters(cfg) <= 1.6 * real < MAX_PARAMETERS / 2
    largest = MDANetConfig.from_preset("paper", "ctp", space_grid=64, bottleneck="gcfb")  # the bounds' corner
    assert estimate_parameters(largest) < MAX_PARAMETERS
