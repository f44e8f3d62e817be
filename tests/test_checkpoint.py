"""mdanet_sdk.train.checkpoint: the file format, exact model rebuild, and every refusal as CheckpointError."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from mdanet_sdk import __version__
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.data.preprocess import PreprocessConfig
from mdanet_sdk.errors import CheckpointError
from mdanet_sdk.model import build_model
from mdanet_sdk.train import checkpoint as ck
from mdanet_sdk.train.checkpoint import FORMAT, load_checkpoint, resolve_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def config() -> MDANetConfig:
    return MDANetConfig.from_preset("small", "ctp", widths=(8, 16, 16, 32, 32))


@pytest.fixture
def saved(tmp_path: Path, config: MDANetConfig) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(config)
    model.train()
    model(torch.randn(4, 4, 32, 32))  # move the BatchNorm running statistics away from their init
    meta = {"epoch": 3, "fold": 1}
    path = save_checkpoint(tmp_path / "run" / "best.pt", model, config, PreprocessConfig(size=32), meta)
    return path, model.eval()


def test_plain_dict_format(saved) -> None:
    path, model = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1
    assert set(raw) == {"format", "format_version", "model_config", "preprocess", "state_dict", "meta", "integrity"}
    assert raw["integrity"] == {"algorithm": "sha256", "digest": ck.payload_digest(raw)}
    assert raw["meta"]["epoch"] == 3 and raw["meta"]["fold"] == 1
    assert raw["meta"]["package_version"] == __version__ and raw["meta"]["created"].endswith("+00:00")
    assert raw["state_dict"].keys() == model.state_dict().keys()
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary file left behind


def test_the_same_checkpoint_is_the_same_bytes(saved, config, tmp_path: Path) -> None:
    # The zip members are named below "archive/", not the temporary file's name (which held the host and pid).
    _, model = saved
    meta = {"created": "2026-01-01T00:00:00+00:00"}
    a, b = (save_checkpoint(tmp_path / n / "w.pt", model, config, PreprocessConfig(size=32), meta) for n in "ab")
    with zipfile.ZipFile(a) as archive:
        assert {name.split("/", 1)[0] for name in archive.namelist()} == {"archive"}
    assert a.read_bytes() == b.read_bytes()


def test_rebuilds_the_exact_model(saved, config) -> None:
    path, model = saved
    loaded = load_checkpoint(path)
    assert loaded.model_config == config and loaded.preprocess == PreprocessConfig(size=32)
    assert loaded.path == path and loaded.resume == {}
    rebuilt = loaded.build_model()
    assert not rebuilt.training
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
        # Another op implementation computes the same function with the same weights.
        reference = loaded.build_model(ops="reference")
        assert reference.ops == "reference" and reference.config == loaded.model_config.resolved()
        torch.testing.assert_close(reference(x), model(x), rtol=1e-4, atol=1e-5)


def test_wrapped_model_and_resume_state(tmp_path: Path, config) -> None:
    model = build_model(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4, 32, 32)).sum().backward()
    opt.step()
    wrapped = torch.nn.DataParallel(model)  # state-dict keys gain "module.", the file must not
    path = save_checkpoint(
        tmp_path / "last.pt",
        wrapped,
        config,
        PreprocessConfig(size=32),
        {},
        optimizer=opt.state_dict(),
        trainer={"state": {"epoch": 0, "history": [{"loss": 1.5}]}},
    )
    loaded = load_checkpoint(path)
    assert next(iter(loaded.state_dict)).startswith("stems.")
    fresh = torch.optim.Adam(build_model(config).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded.resume["optimizer"])
    assert fresh.state_dict()["state"][0]["step"] == 1
    assert loaded.resume["trainer"]["state"]["history"] == [{"loss": 1.5}]
    with pytest.raises(CheckpointError, match="unknown resume state"):
        save_checkpoint(tmp_path / "x.pt", model, config, PreprocessConfig(), {}, sampler={})
    with pytest.raises(CheckpointError, match="cannot store"):
        save_checkpoint(tmp_path / "x.pt", model, config, PreprocessConfig(), {"bad": object()})


def _rewrite(path: Path, **changes) -> Path:
    """A copy of ``path`` with ``changes``, sealed again (so the refusal tested is not the digest mismatch)."""
    raw = torch.load(path, weights_only=True)
    raw.update(changes)
    raw["integrity"] = {"algorithm": "sha256", "digest": ck.payload_digest(raw)}
    out = path.with_name("edited.pt")
    torch.save(raw, out)
    return out


def test_refusals(saved, tmp_path: Path) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an mdanet-sdk checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="newer than this mdanet-sdk"):
        load_checkpoint(_rewrite(path, format_version=2))
    raw = torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match="unknown fields"):
        load_checkpoint(_rewrite(path, model_config={**raw["model_config"], "future_switch": True}))
    with pytest.raises(CheckpointError, match="lacks state_dict"):
        load_checkpoint(_drop(path, "state_dict"))
    wrong = MDANetConfig.from_preset("small", "ctp").to_dict()  # other widths than the weights
    with pytest.raises(CheckpointError, match="do not fit its model config"):
        load_checkpoint(_rewrite(path, model_config=wrong))  # refused on load, before anything is built


def test_state_dict_is_stored_as_given(tmp_path: Path, saved, config) -> None:
    """A state dict (not a model) is written with its dtypes: the float16 bundled weights stay float16."""
    _, model = saved
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "half.pt", half, config, PreprocessConfig(size=32), {}))
    assert all(torch.equal(loaded.state_dict[k], v) and loaded.state_dict[k].dtype == v.dtype for k, v in half.items())
    built = loaded.build_model()  # load_state_dict casts to the parameters' float32
    assert all(p.dtype == torch.float32 for p in built.parameters())
    assert all(torch.equal(built.state_dict()[k], v.float()) for k, v in half.items() if v.is_floating_point())
    with pytest.raises(CheckpointError, match="dict of tensors"):
        save_checkpoint(tmp_path / "bad.pt", {"w": [1.0]}, config, PreprocessConfig(), {})


def _drop(path: Path, key: str) -> Path:
    raw = torch.load(path, weights_only=True)
    del raw[key]
    out = path.with_name("dropped.pt")
    torch.save(raw, out)
    return out


def test_bundled_names(monkeypatch, saved, tmp_path: Path) -> None:
    path, _ = saved
    monkeypatch.setitem(ck.BUNDLED, "default-mri", path)
    monkeypatch.setitem(ck.BUNDLED, "default-ctp", tmp_path / "absent.pt")
    assert resolve_checkpoint("default-mri") == path
    assert load_checkpoint("default-mri").meta["fold"] == 1
    with pytest.raises(CheckpointError, match="bundled checkpoint 'default-ctp' is missing"):
        load_checkpoint("default-ctp")
    assert set(ck.BUNDLED) == {"default-mri", "default-ctp"}


def _legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` named as before the head left the decoder."""
    return {("decoder." + k if k.startswith("head.") else k): v for k, v in state.items()}


def test_files_of_earlier_versions_load(saved) -> None:
    """Weights named ``decoder.head.*`` and configs with an ``ops`` field (the bundled weights have both)."""
    path, model = saved
    raw = torch.load(path, weights_only=True)
    old = _rewrite(path, state_dict=_legacy(raw["state_dict"]), model_config={**raw["model_config"], "ops": "native"})
    loaded = load_checkpoint(old)
    assert list(loaded.state_dict) == list(raw["state_dict"])  # today's names, in the same order
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(x), model(x))
    both = _rewrite(path, state_dict={**raw["state_dict"], **_legacy(raw["state_dict"])})
    with pytest.raises(CheckpointError, match=r"unexpected \['decoder\.head\.bias'"):
        load_checkpoint(both)  # a file with both names is inconsistent, not merged


@pytest.mark.parametrize("name", ["default-mri", "default-ctp"])
def test_bundled_weights_get_todays_names(name) -> None:
    if not ck.BUNDLED[name].is_file():
        pytest.skip("bundled weights not generated")
    raw = torch.load(ck.BUNDLED[name], weights_only=True)
    # default-ctp was written before the renaming, default-mri (retrained 2026-12-03) after it: both load alike.
    stored = "decoder.head.weight" if "decoder.head.weight" in raw["state_dict"] else "head.weight"
    loaded = load_checkpoint(name)
    assert "head.weight" in loaded.state_dict and not any(k.startswith("decoder.head") for k in loaded.state_dict)
    assert torch.equal(loaded.state_dict["head.weight"], raw["state_dict"][stored])
    assert loaded.build_model(ops="reference").ops == "reference"
