"""Deployment artefacts: TorchScript, ExportedProgram and Torch-TensorRT writers, and the one loader.

An artefact is one file that carries the network *and* everything needed to use it: the model config, the
preprocessing config and metadata (format, precision, op implementation, input shape, batch range), stored
as JSON extra files under ``mdanet/`` inside the archive (``_extra_files`` of TorchScript, ``extra_files``
of ``torch.export``). :func:`read_metadata` reads them without loading the network; :func:`load_artifact`
returns an :class:`Artifact`, a callable ``(B, C, H, W) -> logits`` that the
:class:`~mdanet_sdk.inference.Segmenter` runs with the same pre- and post-processing as the eager model.

Formats:

* ``torchscript`` (``.ts``): the traced network inside a scripted
  :class:`~mdanet_sdk.pipeline.volume.VolumePipeline` (``forward``: the network; ``segment``: a whole case with
  the package's pre- and post-processing, for the C API). With the native ops (the default) the graph keeps
  ``mdanet::dasc_gate`` / ``mdanet::graph_conv`` as calls, so it runs from C (libmdanet, ``export/c``) with
  libtorch and the op library; with ``ops="reference"`` the reference math is inlined instead.
* ``exported`` (``.pt2``): a ``torch.export`` ExportedProgram with a dynamic batch dimension.
* ``tensorrt`` (``.pt2``, needs a CUDA GPU and the ``[trt]`` extra): the ExportedProgram compiled by
  Torch-TensorRT (dynamo) with a min/opt/max batch profile, saved with ``torch_tensorrt.save``. The custom
  ops are lowered to the reference decomposition (``ops="reference"``, the default) or run as TensorRT Quick
  Deployable Plugins (``ops="native"``; see :func:`register_trt_plugins`).

Note:
    ``C``, ``H`` and ``W`` are fixed at export: the GCFB space embedding pools the bottleneck to a fixed node
    grid only when the input size calls for it, so a graph is valid for the in-plane size it was captured at.
    Only the batch is dynamic, within ``[min_batch, max_batch]``; :class:`Artifact` splits larger batches and
    pads smaller ones. The stored preprocessing config resamples slices to exactly that grid.

Every export is validated before it is kept (:mod:`mdanet_sdk.export.writers`), and loading checks the file
before torch's loaders see it and the program before anything runs (:mod:`mdanet_sdk.export.artifact`,
:mod:`mdanet_sdk.artifact_safety`).

Modules: :mod:`~mdanet_sdk.export.artifact` (loading, :class:`Artifact`), :mod:`~mdanet_sdk.export.writers`
(:func:`export_model`, :func:`export_checkpoint`, validation), :mod:`~mdanet_sdk.export.programs` (tracing and
``torch.export`` capture, the probe batch, :class:`BatchRange`), :mod:`~mdanet_sdk.export.tensorrt`
(Torch-TensorRT compile, plugins, availability).
"""

from __future__ import annotations

from mdanet_sdk.artifact_safety import ARTIFACT_VERSION, FORMATS
from mdanet_sdk.export.artifact import PRECISIONS, Artifact, load_artifact, read_metadata
from mdanet_sdk.export.programs import BatchRange, probe_batch
from mdanet_sdk.export.tensorrt import register_trt_plugins, tensorrt_unavailable_reason
from mdanet_sdk.export.writers import TOLERANCES, ExportResult, export_checkpoint, export_model

__all__ = [
    "FORMATS",
    "PRECISIONS",
    "TOLERANCES",
    "ARTIFACT_VERSION",
    "BatchRange",
    "ExportResult",
    "Artifact",
    "export_checkpoint",
    "export_model",
    "load_artifact",
    "read_metadata",
    "probe_batch",
    "tensorrt_unavailable_reason",
    "register_trt_plugins",
]
