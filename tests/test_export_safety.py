"""Artefacts that cannot run code and cannot fail quietly (issue 20).

Each attack is shown live first where torch's own loader falls for it (the payload makes a marker folder
under ``tmp_path``), then refused by :func:`mdanet_sdk.export.load_artifact` with the marker left absent.
Crafted files are re-sealed with a fresh integrity record, as an attacker would, so that the content checks
(not the integrity check) are what refuses them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from mdanet_sdk import ops
from mdanet_sdk.artifact_safety import seal
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import CheckpointError, ExportError
from mdanet_sdk.export import BatchRange, export_model, load_artifact, probe_batch, read_metadata
from mdanet_sdk.model import build_model

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit:DeprecationWarning")

SIZE = 32
OPS = "native" if ops.native_available() else "reference"
PREPROCESS = {"size": SIZE, "multiple": 16, "normalization": "relative"}
INTEGRITY = "extra/mdanet/integrity.json"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(MDANetConfig.from_preset("small", "mri"), ops=OPS).eval()


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small model at 32 x 32, batch 1..4, once per format."""
    out, model = tmp_path_factory.mktemp("safety"), _model()
    return {
        fmt: export_model(model, fmt, out / f"m{suffix}", preprocess=PREPROCESS, batch=BatchRange(1, 2, 4)).path
        for fmt, suffix in (("torchscript", ".ts"), ("exported", ".pt2"))
    }


# -- helpers ------------------------------------------------------------------------------------------------
def _members(path: Path) -> tuple[str, dict[str, bytes]]:
    """``(root, {name below root: content})`` in archive order."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        root = names[0].split("/", 1)[0]
        return root, {n[len(root) + 1 :]: archive.read(n) for n in names}


def _rewrite(src: Path, dst: Path, changes: dict[str, bytes | None], reseal: bool = True) -> Path:
    """Copy ``src`` with members replaced (``None``: removed) and, like an attacker would, a fresh integrity
    record (``reseal``) or none."""
    root, members = _members(src)
    members.pop(INTEGRITY)
    members.update(changes)
    with zipfile.ZipFile(dst, "w") as archive:
        for name, content in members.items():
            if content is not None:
                archive.writestr(f"{root}/{name}", content)
    if reseal:
        seal(dst)
    return dst


def _json_member(path: Path, name: str) -> dict:
    return json.loads(_members(path)[1][name])


class _Mkdir:
    """A pickle that makes a folder when unpickled: the stand-in for any code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _attempt(load: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # the attack has run (or not) by the time torch notices anything
        load()


# -- torch.export archives ----------------------------------------------------------------------------------
def _pickled_weight(src: Path, dst: Path, marker: Path) -> Path:
    config = _json_member(src, "data/weights/model_weights_config.json")
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    payload = io.BytesIO()
    torch.save(_Mkdir(marker), payload)
    changes = {
        "data/weights/model_weights_config.json": json.dumps(config).encode(),
        f"data/weights/{entry['path_name']}": payload.getvalue(),
    }
    return _rewrite(src, dst, changes)


def _evaluated_shape(src: Path, dst: Path, marker: Path) -> Path:
    program = _json_member(src, "models/model.json")
    values = program["graph_module"]["graph"]["tensor_values"]
    sizes = next(v["sizes"] for v in values.values() if v["sizes"] and "as_expr" in v["sizes"][0])
    sizes[0]["as_expr"]["expr_str"] = f"__import__('os').mkdir({str(marker)!r})"
    return _rewrite(src, dst, {"models/model.json": json.dumps(program).encode()})


def _compiled_name(src: Path, dst: Path, marker: Path) -> Path:
    """A parameter renamed so that GraphModule code generation pastes Python into forward's source, which runs
    on the first call (no dots: the name is split at them; the marker path travels hex-encoded)."""
    old = "stems.0.branches.0.0.0.weight"
    code = f'getattr(__import__("os"),"mkdir")(str(getattr(bytes,"fromhex")("{str(marker).encode().hex()}"),"utf8"))'
    new = json.dumps(f'stems.0.branches.0.0.0.w"+str({code})+"')
    _, members = _members(src)
    changes = {
        name: members[name].replace(json.dumps(old).encode(), new.encode())
        for name in ("models/model.json", "data/weights/model_weights_config.json")
    }
    return _rewrite(src, dst, changes)


@pytest.mark.parametrize(
    ("craft", "refusal"),
    [
        (_pickled_weight, "as a Python pickle"),
        (_evaluated_shape, "'expr_str'"),
        (_compiled_name, "not a plain name"),
    ],
    ids=["pickled-weight", "sympify-eval", "codegen-name"],
)
def test_exported_program_that_runs_code_on_load_is_refused(artefacts, tmp_path, craft, refusal):
    proof, marker = tmp_path / "proof-marker", tmp_path / "marker"
    shown = craft(artefacts["exported"], tmp_path / "shown.pt2", proof)
    _attempt(lambda: torch.export.load(io.BytesIO(shown.read_bytes())).module()(probe_batch(2, 2, SIZE, SIZE)))
    assert proof.is_dir(), "the crafted file should run its payload in torch.export.load or the first call"
    crafted = craft(artefacts["exported"], tmp_path / "crafted.pt2", marker)
    for trust in (False, True):  # trust skips only a missing integrity record, never these checks
        with pytest.raises(CheckpointError, match=refusal) as refused:
            load_artifact(crafted, trust=trust)
        assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_sample_inputs_are_never_unpickled(artefacts, tmp_path):
    """torch.export.load unpickles the sample inputs without restriction when the restricted unpickler fails;
    our exports store none, and the loader hands torch the archive without them."""
    payload = io.BytesIO()
    torch.save(_Mkdir(tmp_path / "proof-marker"), payload)
    shown = _rewrite(artefacts["exported"], tmp_path / "shown.pt2", {"data/sample_inputs/model.pt": payload.getvalue()})
    _attempt(lambda: torch.export.load(io.BytesIO(shown.read_bytes())))
    assert (tmp_path / "proof-marker").is_dir()
    payload = io.BytesIO()
    torch.save(_Mkdir(tmp_path / "marker"), payload)
    crafted = _rewrite(artefacts["exported"], tmp_path / "c.pt2", {"data/sample_inputs/model.pt": payload.getvalue()})
    artifact = load_artifact(crafted)
    assert artifact(probe_batch(2, 2, SIZE, SIZE)).shape == (2, 2, SIZE, SIZE)
    assert not (tmp_path / "marker").exists()


def test_guard_code_and_native_code_are_refused(artefacts, tmp_path):
    program = _json_member(artefacts["exported"], "models/model.json")
    program["guards_code"] = ["__import__('os').getpid() > 0"]  # exec'd by .module() when sample inputs exist
    guarded = _rewrite(artefacts["exported"], tmp_path / "g.pt2", {"models/model.json": json.dumps(program).encode()})
    with pytest.raises(CheckpointError, match="guard code"):
        load_artifact(guarded)
    aoti = _rewrite(artefacts["exported"], tmp_path / "a.pt2", {"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(CheckpointError, match=r"native code \(data/aotinductor/model/model.so\)"):
        load_artifact(aoti)


def test_our_exports_hold_nothing_that_is_unpickled(artefacts):
    _, members = _members(artefacts["exported"])
    config = json.loads(members["data/weights/model_weights_config.json"])["config"]
    assert config and all(entry["use_pickle"] is False for entry in config.values())
    assert json.loads(members["data/constants/model_constants_config.json"])["config"] == {}
    assert members.get("data/sample_inputs/model.pt", b"") == b""
    assert json.loads(members["models/model.json"])["guards_code"] == []
    for path in artefacts.values():  # and every member is in the integrity record
        _, members = _members(path)
        record = json.loads(members[INTEGRITY])
        assert record["algorithm"] == "sha256" and set(record["members"]) == set(members) - {INTEGRITY}


# -- TorchScript --------------------------------------------------------------------------------------------
class _Saver(nn.Module):
    """Segments (a 1x1 convolution) and, on the side, writes its input to a file with aten::save."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.head = nn.Conv2d(2, 2, 1)
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.target)
        return self.head(x)


class _Restorer(nn.Module):
    """Writes a file from ``__setstate__``, which torch.jit.load runs while loading."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return self.target, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target, self.training = state
        torch.save(torch.zeros(1), self.target)


def _scripted(artefact: Path, dst: Path, module: nn.Module) -> Path:
    """``module`` scripted and saved with the metadata of a real artefact, then sealed."""
    _, members = _members(artefact)
    files = {name[len("extra/") :]: members[name].decode() for name in members if name.startswith("extra/mdanet/")}
    files.pop("mdanet/integrity.json")
    torch.jit.save(torch.jit.script(module), str(dst), _extra_files=files)
    seal(dst)
    return dst


def test_torchscript_that_writes_files_when_run_is_refused(artefacts, tmp_path):
    x = probe_batch(1, 2, SIZE, SIZE)
    shown = _scripted(artefacts["torchscript"], tmp_path / "shown.ts", _Saver(str(tmp_path / "proof.pt")))
    torch.jit.load(str(shown))(x)
    assert (tmp_path / "proof.pt").is_file(), "the crafted module should write its file when run"
    crafted = _scripted(artefacts["torchscript"], tmp_path / "crafted.ts", _Saver(str(tmp_path / "marker.pt")))
    with pytest.raises(CheckpointError, match="calls aten::save, outside the operators"):
        load_artifact(crafted, trust=True)
    assert not (tmp_path / "marker.pt").exists()


def test_torchscript_that_writes_files_when_loaded_is_refused(artefacts, tmp_path):
    shown = _scripted(artefacts["torchscript"], tmp_path / "shown.ts", _Restorer(str(tmp_path / "proof.pt")))
    assert not (tmp_path / "proof.pt").exists()  # scripting and saving do not run __setstate__
    torch.jit.load(str(shown))
    assert (tmp_path / "proof.pt").is_file(), "torch.jit.load should run __setstate__"
    crafted = _scripted(artefacts["torchscript"], tmp_path / "crafted.ts", _Restorer(str(tmp_path / "marker.pt")))
    with pytest.raises(CheckpointError, match="__setstate__ method, which torch.jit.load runs"):
        load_artifact(crafted)
    assert not (tmp_path / "marker.pt").exists()


class _Raiser(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > -1e30):
            raise ValueError("error: forged\nerror: a second forged line")
        return x


def test_an_artefact_that_raises_while_it_runs_fails_its_cases_in_one_line(artefacts, tmp_path):
    """An error raised inside the TorchScript interpreter (an artefact's own raise, an out-of-bounds index, an
    allocation that fails) escaped as a 60-line traceback and stopped the whole batch."""
    from mdanet_sdk import segment
    from mdanet_sdk.data.phantom import write_dataset

    crafted = _scripted(artefacts["torchscript"], tmp_path / "raise.ts", _Raiser())
    data = write_dataset(tmp_path / "data", "isles22", 2, seed=0, shape=(32, 32, 3))
    outcomes = list(segment(data, tmp_path / "out", model=crafted, tta=False))
    assert len(outcomes) == 2 and all(not hasattr(o, "mask") for o in outcomes)
    for outcome in outcomes:
        assert outcome.error.startswith("the model failed while it ran (") and "re-export" in outcome.error
        assert isinstance(outcome.exception, CheckpointError) and "\n" not in outcome.error
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_our_torchscript_graph_passes_the_operator_allowlist(artefacts):
    from mdanet_sdk.artifact_safety import check_torchscript_ops

    check_torchscript_ops(artefacts["torchscript"], torch.jit.load(str(artefacts["torchscript"])))


# -- integrity ------------------------------------------------------------------------------------------------
def _flip_a_weight_byte(src: Path, dst: Path) -> Path:
    """One bit of the largest member (a weight) flipped in place: its stored CRC now disagrees."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    # the local header (30 bytes, then name and extra field, whose lengths it holds) precedes the data
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    data[start + info.compress_size // 2] ^= 0x10
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_changed_bytes_are_refused(artefacts, tmp_path, fmt):
    src = artefacts[fmt]
    with pytest.raises(CheckpointError, match="is damaged"):
        load_artifact(_flip_a_weight_byte(src, tmp_path / f"flipped{src.suffix}"))
    # the same change with a CRC to match: only the integrity record can tell
    root, members = _members(src)
    name = max((n for n in members if n != INTEGRITY), key=lambda n: len(members[n]))
    changed = bytearray(members[name])
    changed[len(changed) // 2] ^= 0x10
    edited = _rewrite(
        src, tmp_path / f"edited{src.suffix}", {name: bytes(changed), INTEGRITY: members[INTEGRITY]}, reseal=False
    )
    with pytest.raises(CheckpointError, match=rf"does not match its integrity record \(changed: {name}\)"):
        load_artifact(edited)
    extra = _rewrite(
        src, tmp_path / f"extra{src.suffix}", {"extra/x.txt": b"x", INTEGRITY: members[INTEGRITY]}, reseal=False
    )
    with pytest.raises(CheckpointError, match=r"\(added: extra/x.txt\)"):
        load_artifact(extra, trust=True)  # a record that is there is always checked


def test_no_integrity_record_needs_trust(artefacts, tmp_path):
    for fmt, src in artefacts.items():
        older = _rewrite(src, tmp_path / f"older{src.suffix}", {}, reseal=False)
        with pytest.raises(CheckpointError, match=r"no integrity record .* pass trust=True \(--trust\)") as refused:
            load_artifact(older)
        assert "\n" not in str(refused.value)
        with pytest.raises(CheckpointError, match="no integrity record"):
            read_metadata(older)
        assert read_metadata(older, trust=True)[2]["format"] == fmt
        assert load_artifact(older, trust=True)(probe_batch(3, 2, SIZE, SIZE)).shape == (3, 2, SIZE, SIZE)


def test_duplicate_members_are_refused(artefacts, tmp_path):
    root, members = _members(artefacts["exported"])
    target = tmp_path / "dup.pt2"
    target.write_bytes(artefacts["exported"].read_bytes())
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(target, "a") as archive:
        archive.writestr(f"{root}/models/model.json", members["models/model.json"])
    with pytest.raises(CheckpointError, match="lists a member twice"):
        load_artifact(target)


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_doctored_copy_before_the_sealed_artefact_is_refused(artefacts, tmp_path, fmt):
    """A doctored copy of the artefact followed by the sealed original: :mod:`zipfile` shifts the offsets and
    checks the original, torch's reader takes them as recorded and loads the copy."""
    src = artefacts[fmt]
    original = src.read_bytes()
    assert load_artifact(src)(probe_batch(1, 2, SIZE, SIZE)).shape == (1, 2, SIZE, SIZE)  # the original loads
    doctored = bytearray(original)
    with zipfile.ZipFile(src) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    name_length, extra_length = struct.unpack("<HH", doctored[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    doctored[start : start + info.compress_size] = bytes(info.compress_size)  # zeroed weights with a matching CRC
    struct.pack_into("<I", doctored, info.header_offset + 14, zlib.crc32(bytes(info.compress_size)))
    target = tmp_path / f"prefixed{src.suffix}"
    target.write_bytes(bytes(doctored) + original)
    with zipfile.ZipFile(target) as archive:  # the differential: zipfile sees only the original, intact
        assert archive.testzip() is None and len(archive.infolist()) == len(zipfile.ZipFile(src).infolist())
    with pytest.raises(CheckpointError, match=r"is not a well-formed archive \(.*\): the file was altered") as refused:
        load_artifact(target)
    assert "\n" not in str(refused.value)
    with pytest.raises(CheckpointError, match="not a well-formed archive"):
        read_metadata(target, trust=True)
    trailing = tmp_path / f"trailing{src.suffix}"
    trailing.write_bytes(original + b"\0" * 16)
    with pytest.raises(CheckpointError, match="not a well-formed archive"):
        load_artifact(trailing)


# -- metadata -------------------------------------------------------------------------------------------------
def _edit(name: str, change: Callable[[dict], object]) -> Callable[[dict[str, bytes]], bytes]:
    def edit(members: dict[str, bytes]) -> bytes:
        value = json.loads(members[f"extra/mdanet/{name}"])
        result = change(value)
        return json.dumps(value if result is None else result).encode()

    return edit


BAD_METADATA = {
    "meta-not-json": ("meta.json", lambda m: b"{format: torchscript", "damaged mdanet/meta.json"),
    "meta-nan": ("meta.json", lambda m: m["extra/mdanet/meta.json"].replace(b"0.0001", b"NaN"), "NaN is not JSON"),
    "meta-not-object": ("meta.json", _edit("meta.json", lambda m: [m]), "artifact_version = None"),
    "shape-type": ("meta.json", _edit("meta.json", lambda m: m.update(input_shape=["2", 32, 32])), "input_shape"),
    "shape-huge": ("meta.json", _edit("meta.json", lambda m: m.update(input_shape=[2, 4096, 32])), "input_shape"),
    "batch": ("meta.json", _edit("meta.json", lambda m: m.update(batch={"min": 0, "opt": 1, "max": 2})), "batch"),
    "precision": ("meta.json", _edit("meta.json", lambda m: m.update(precision="fp8")), "precision = 'fp8'"),
    "unknown-format": ("meta.json", _edit("meta.json", lambda m: m.update(format="onnx")), "format = 'onnx'"),
    "swapped-format": (
        "meta.json",
        _edit("meta.json", lambda m: m.update(format="exported")),
        "says its format is 'exported' but it is a TorchScript archive",
    ),
    "plugin-ops": ("meta.json", _edit("meta.json", lambda m: m.update(ops="plugin")), "ops = 'plugin'"),
    "version-type": ("meta.json", _edit("meta.json", lambda m: m.update(artifact_version="1")), "artifact_version"),
    "channels": ("meta.json", _edit("meta.json", lambda m: m.update(input_shape=[3, 32, 32])), "contradicts"),
    "inference": (
        "meta.json",
        _edit("meta.json", lambda m: m.update(checkpoint={"inference": {"threshold": 2}})),
        "post-processing threshold = 2",
    ),
    "config-type": (
        "model_config.json",
        _edit("model_config.json", lambda c: c.update(num_classes="two")),
        "model config this mdanet-sdk cannot use",
    ),
    "config-list": (
        "model_config.json",
        _edit("model_config.json", lambda c: [c]),
        "model config this mdanet-sdk cannot use",
    ),
    "preprocess-type": (
        "preprocess.json",
        _edit("preprocess.json", lambda p: p.update(size="big")),
        "preprocessing config this mdanet-sdk cannot use",
    ),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_is_one_checkpoint_error(artefacts, tmp_path, case):
    name, change, message = BAD_METADATA[case]
    src = artefacts["torchscript"]
    crafted = _rewrite(src, tmp_path / "bad.ts", {f"extra/mdanet/{name}": change(_members(src)[1])})
    with pytest.raises(CheckpointError, match=message) as refused:
        read_metadata(crafted)
    assert "\n" not in str(refused.value) and "Traceback" not in str(refused.value)


def test_swapped_format_tag_on_a_pt2_is_refused_by_the_loader(artefacts, tmp_path):
    src = artefacts["exported"]
    change = _edit("meta.json", lambda m: m.update(format="torchscript"))
    crafted = _rewrite(src, tmp_path / "bad.pt2", {"extra/mdanet/meta.json": change(_members(src)[1])})
    with pytest.raises(CheckpointError, match="says its format is 'torchscript' but it is a torch.export archive"):
        load_artifact(crafted)


# -- export ---------------------------------------------------------------------------------------------------
def test_export_refuses_a_model_with_non_finite_logits(tmp_path):
    model = _model()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # e.g. a diverged training run
    with pytest.raises(ExportError, match="non-finite logits") as refused:
        export_model(model, "torchscript", tmp_path / "nan.ts", preprocess=PREPROCESS, batch=BatchRange(1, 1, 2))
    assert "\n" not in str(refused.value)
    assert not list(tmp_path.iterdir())
