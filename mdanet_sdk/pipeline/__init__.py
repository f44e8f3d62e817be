"""The one implementation of pre- and post-processing, in TorchScript-compatible torch.

Python calls these functions through :mod:`mdanet_sdk.data.preprocess`, :mod:`mdanet_sdk.data.normalize`,
:mod:`mdanet_sdk.data.nifti` and :mod:`mdanet_sdk.inference.postprocess` (numpy in, numpy out, plus the checks and
warnings a user sees); TorchScript artefacts carry them scripted in :class:`~mdanet_sdk.pipeline.volume.VolumePipeline`,
so that the C API (libmdanet, ``mdanet_segment_volume``) segments a case exactly as ``mdanet-sdk segment`` does,
without Python. Nothing here knows files or the network's internals.

Modules: :mod:`.stats` (quantiles as numpy computes them), :mod:`.morphology` (components, hole filling,
dilation), :mod:`.intensity` (head mask, normalisation), :mod:`.slicing` (model grid and back), :mod:`.lesions`
(threshold, lesion size, ADC gate), :mod:`.orientation` (stored voxel order ↔ RAS+), :mod:`.volume` (the whole
case, for export).
"""

__all__ = ["PIPELINE_REVISION"]

#: Raised whenever a change here changes what mask a case gets; exported artefacts record it (``meta.json``
#: ``pipeline_revision``), since they carry the pipeline of their export. 6: perfusion maps whose median Tmax is
#: 2.5x that of the head's left or right half are normalised by that half's medians, and noise
#: around 0 (maps not clipped at 0) keeps the relative normalisation instead of z-scores (2026-12-06);
#: 5: the ADC gate takes its tissue ADC in revision 4's parenchyma too (2026-12-06); 4: a textured slice border that
#: what stands out lies below is tissue, and the head fills the field; a head under 70 % parenchyma in DWI is
#: normalised by the parenchyma's medians (2026-12-05); 3: a noisy background whose spread reaches tissue level is
#: still told from tissue on the border (2026-12-05); 2: perfusion maps' head mask hysteresis and transit times set to
#: 0 where no blood flows (2026-12-05); 1: everything before (artefacts without the field).
PIPELINE_REVISION = 6
