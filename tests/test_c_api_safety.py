"""The C API's refusals and limits (libmdanet): damaged, crafted, unsealed and newer artefacts, memory that runs
out, files that are no artefact, affines and devices that are none, and the C example's NIfTI reader; the
fixtures and helpers are those of :mod:`test_c_api`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import test_c_api as capi

from mdanet_sdk.artifact_safety import seal
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.device import is_out_of_memory
from mdanet_sdk.errors import CheckpointError, MDANetError
from mdanet_sdk.export import load_artifact, probe_batch
from mdanet_sdk.export.engine import open_engine
from mdanet_sdk.model import build_model


# The C API's fixtures and helpers (module-scoped there, built again for this module).
root, lib, small_artefact, pytestmark = capi.root, capi.lib, capi.small_artefact, capi.pytestmark
CC, EXAMPLES, SIZE, _open, _error = capi.CC, capi.EXAMPLES, capi.SIZE, capi._open, capi._error
OK, INVALID_ARGUMENT, FILE_ERROR, INVALID_ARTIFACT = (
    capi.OK,
    capi.INVALID_ARGUMENT,
    capi.FILE_ERROR,
    capi.INVALID_ARTIFACT,
)
OUT_OF_MEMORY = capi.OUT_OF_MEMORY


AFFINE_PRINTER = """
#include <stdio.h>
#include "nifti1_io.h"
int main(int argc, char** argv) {
  nifti_volume v;
  char error[256];
  int k;
  if (argc != 2 || nifti_read(argv[1], &v, error, sizeof error) != 0) return 1;
  for (k = 0; k < 16; ++k) printf("%.6f ", v.affine[k]);
  nifti_free(&v);
  return 0;
}
"""


@pytest.mark.parametrize("codes", [(0, 0), (1, 0), (0, 2)])
def test_the_c_examples_reader_finds_nibabels_affine(codes, tmp_path):
    """The example's NIfTI reader orients a case as ``segment`` does, also with neither qform nor sform (nibabel's
    LAS base affine; the reader took the voxel sizes alone, so an un-flipped case met the model)."""
    (tmp_path / "print.c").write_text(AFFINE_PRINTER)
    binary = tmp_path / "print"
    command = [CC, "-std=c99", "-O1", f"-I{EXAMPLES}", str(tmp_path / "print.c"), str(EXAMPLES / "nifti1_io.c")]
    assert subprocess.run([*command, "-lm", "-o", str(binary)], capture_output=True, timeout=120).returncode == 0
    affine = np.array([[0.0, -2.0, 0.0, 40.0], [1.5, 0.0, 0.0, -20.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    image = nib.Nifti1Image(np.ones((5, 6, 7), np.float32), affine)
    image.set_qform(affine if codes[0] else None, code=codes[0])
    image.set_sform(affine if codes[1] else None, code=codes[1])
    nib.save(image, tmp_path / "v.nii")
    header = nib.load(tmp_path / "v.nii").header
    assert (int(header["qform_code"]), int(header["sform_code"])) == codes
    done = subprocess.run([str(binary), str(tmp_path / "v.nii")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    read = np.array([float(v) for v in done.stdout.split()]).reshape(4, 4)
    np.testing.assert_allclose(read, nib.load(tmp_path / "v.nii").affine, atol=1e-5)


def _rewrite(source: Path, target: Path, member: str, change) -> Path:
    """A copy of the archive ``source`` with ``member`` (a path ending) replaced by ``change(old bytes)``."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, change(data) if info.filename.endswith(member) else data)
    return target


def test_newer_and_crafted_artefacts_are_refused(lib, small_artefact, tmp_path):
    def newer(data: bytes) -> bytes:
        meta = json.loads(data)
        meta["artifact_version"] = 99
        return json.dumps(meta).encode()

    status, _ = _open(lib, _rewrite(small_artefact, tmp_path / "newer.ts", "extra/mdanet/meta.json", newer))
    assert status == INVALID_ARTIFACT and "newer than this libmdanet" in _error(lib)
    broken = _rewrite(small_artefact, tmp_path / "broken.ts", "extra/mdanet/meta.json", lambda d: d[:-5])
    assert _open(lib, broken)[0] == INVALID_ARTIFACT and "damaged" in _error(lib)
    # Weights changed after export (a flipped byte in a tensor file) are refused, never run.
    with zipfile.ZipFile(small_artefact) as z:
        weights = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size).filename
    flipped = _rewrite(small_artefact, tmp_path / "flipped.ts", weights, lambda d: bytes([d[0] ^ 0xFF]) + d[1:])
    assert _open(lib, flipped)[0] == INVALID_ARTIFACT and "changed since export" in _error(lib)

    class Talks(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            print("I run code")
            return x

    with zipfile.ZipFile(small_artefact) as z:
        files = {n.split("extra/", 1)[1]: z.read(n).decode() for n in z.namelist() if "/extra/mdanet/" in n}
    del files["mdanet/integrity.json"]
    crafted = tmp_path / "crafted.ts"
    torch.jit.save(torch.jit.script(Talks()), str(crafted), _extra_files=files)
    assert _open(lib, crafted)[0] == INVALID_ARTIFACT and "no integrity record" in _error(lib)
    seal(crafted)  # whoever crafts a file can seal it: the record detects damage, the operator check the rest
    assert _open(lib, crafted)[0] == INVALID_ARTIFACT and "prim::Print" in _error(lib)
    # An artefact of the network alone (no volume pipeline) still runs slices, but cannot segment volumes.
    old = tmp_path / "old.ts"
    traced = torch.jit.trace(
        build_model(MDANetConfig.from_preset("small", "mri"), ops="reference").eval(), probe_batch(1, 2, SIZE, SIZE)
    )
    torch.jit.save(traced, str(old), _extra_files=files)
    seal(old)
    status, model = _open(lib, old)
    assert status == OK, _error(lib)
    mask = np.zeros((8, 8, 8), np.uint8)
    volume, affine = np.ones((2, 8, 8, 8), np.float32), np.eye(4)
    args = (volume.ctypes.data, 2, 8, 8, 8, affine.ctypes.data, None, None, mask.ctypes.data, None)
    assert lib.mdanet_segment_volume(model, *args) == INVALID_ARTIFACT and "export it again" in _error(lib)
    lib.mdanet_close(model)


def _unsealed(path: Path) -> Path:
    """``path`` rewritten without its integrity record."""
    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            if not info.filename.endswith("extra/mdanet/integrity.json"):
                z.writestr(info, data)
    return path


def _sealed_program(artefact: Path, module: torch.nn.Module, target: Path) -> Path:
    """``module`` scripted with the metadata of ``artefact`` and sealed, as whoever crafts a file can."""
    with zipfile.ZipFile(artefact) as z:
        files = {n.split("extra/", 1)[1]: z.read(n).decode() for n in z.namelist() if "/extra/mdanet/" in n}
    del files["mdanet/integrity.json"]
    torch.jit.save(torch.jit.script(module), str(target), _extra_files=files)
    seal(target)
    return target


def test_a_damaged_version_is_a_damaged_artefact(lib, small_artefact, tmp_path):
    def version(value: object):
        def change(data: bytes) -> bytes:
            return json.dumps({**json.loads(data), "artifact_version": value}).encode()

        return change

    edited = _rewrite(small_artefact, tmp_path / "v0.ts", "extra/mdanet/meta.json", version(0))
    assert _open(lib, edited)[0] == INVALID_ARTIFACT and "changed since export" in _error(lib)
    resealed = _unsealed(_rewrite(small_artefact, tmp_path / "v1.ts", "extra/mdanet/meta.json", version("1")))
    seal(resealed)
    assert _open(lib, resealed)[0] == INVALID_ARTIFACT and "artifact_version must be an integer" in _error(lib)


def test_memory_that_runs_out_is_out_of_memory_in_one_sentence(lib, small_artefact, tmp_path):
    class Greedy(torch.nn.Module):  # 256 TB: more than any address space, refused at once
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.repeat(1, 2048, 2048, 2048)[:, :2].contiguous()

    status, model = _open(lib, _sealed_program(small_artefact, Greedy(), tmp_path / "greedy.ts"))
    assert status == OK, _error(lib)
    x, out = np.ones((1, 2, SIZE, SIZE), np.float32), np.zeros((1, 2, SIZE, SIZE), np.float32)
    assert lib.mdanet_run_slices(model, x.ctypes.data, 1, x.size, out.ctypes.data, out.size) == OUT_OF_MEMORY
    assert _error(lib).startswith("out of host memory; free memory, or run fewer slices per call")
    lib.mdanet_close(model)
    with pytest.raises(MDANetError) as info:  # from Python: a failure the Segmenter answers with smaller batches
        open_engine(tmp_path / "greedy.ts")(torch.from_numpy(x))
    assert is_out_of_memory(info.value)


def test_retaining_cpu_memory_keeps_the_logits(lib, small_artefact):
    x = probe_batch(2, 2, SIZE, SIZE, seed=3).numpy()
    expected = load_artifact(small_artefact)(torch.from_numpy(x)).numpy()
    assert lib.mdanet_retain_cpu_memory() == OK  # glibc here; the pytest process keeps its freed memory
    status, model = _open(lib, small_artefact)
    out = np.zeros((2, 2, SIZE, SIZE), np.float32)
    assert status == OK and lib.mdanet_run_slices(model, x.ctypes.data, 2, x.size, out.ctypes.data, out.size) == OK
    np.testing.assert_array_equal(out, expected)
    lib.mdanet_close(model)


def test_trust_does_not_open_an_unsealed_artefact_in_libmdanet(small_artefact, tmp_path):
    unsealed = _unsealed(Path(shutil.copy(small_artefact, tmp_path / "unsealed.ts")))
    assert load_artifact(unsealed, trust=True).input_shape == (2, SIZE, SIZE)  # the torch engine honours trust
    with pytest.raises(CheckpointError, match='libmdanet needs whatever trust says.*engine="torch"'):
        open_engine(unsealed, trust=True)
    with pytest.raises(CheckpointError, match="no integrity record"):
        open_engine(unsealed)


def test_a_fifo_and_an_affine_without_its_last_row_are_refused(lib, small_artefact, tmp_path):
    os.mkfifo(tmp_path / "model.ts")  # opening it for reading blocked until a writer came
    assert _open(lib, tmp_path / "model.ts")[0] == FILE_ERROR and "not a regular file" in _error(lib)
    assert _open(lib, small_artefact, "cpu:7")[0] == INVALID_ARGUMENT and "none of cpu" in _error(lib)
    status, model = _open(lib, small_artefact)
    volume, affine, mask = np.ones((2, 8, 8, 8), np.float32), np.eye(4), np.zeros((8, 8, 8), np.uint8)
    affine[3] = [5.0, -3.0, 2.0, 7.0]
    args = (volume.ctypes.data, 2, 8, 8, 8, affine.ctypes.data, None, None, mask.ctypes.data, None)
    assert lib.mdanet_segment_volume(model, *args) == INVALID_ARGUMENT and "last row must be 0 0 0 1" in _error(lib)
    lib.mdanet_close(model)
