"""Model configuration: presets, modality groups and the paper's ablation switches.

A :class:`MDANetConfig` fully describes an MDANet (or baseline) network: checkpoints store it as a plain
dict (:meth:`MDANetConfig.to_dict`) and rebuild the exact model from it (:meth:`MDANetConfig.from_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mdanet_sdk.errors import InputError

__all__ = ["MDANetConfig", "MODALITY_GROUPS", "PRESETS", "ARCHITECTURES", "BOTTLENECK_STRIDE", "DEFAULT_MODEL_SIZE"]

#: Modality groups of the paper (section 4.2). The two groups show the lesion with opposite contrast, so their
#: difference (Eq. 1) highlights it: CTP, lesion dark in the perfusion maps CBF, CBV | bright in the delay maps
#: MTT, Tmax; MRI, lesion bright in DWI | dark in ADC (restricted diffusion).
MODALITY_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ctp": (("cbf", "cbv"), ("mtt", "tmax")),  # ISLES 2018
    "mri": (("dwi",), ("adc",)),  # ISLES 2022
}

#: Encoder widths per preset (5 levels, section 3 / Table 1).
PRESETS: dict[str, tuple[int, ...]] = {
    "paper": (64, 128, 256, 512, 1024),
    "small": (16, 32, 64, 128, 256),
}

ARCHITECTURES = ("mdanet", "unet", "attention-unet")
SKIP_FUSIONS = ("subtract", "add", "concat")
BOTTLENECKS = ("gcfb", "nonlocal", "transformer", "none")
#: Bottleneck side = input side / BOTTLENECK_STRIDE (4 poolings by 2).
BOTTLENECK_STRIDE = 16
#: Side of the model grid assumed when a network is built before its input size is known: the trainer's
#: default ``size`` (:class:`~mdanet_sdk.train.trainer.TrainConfig`), so an unresolved ``space_grid`` is 8.
DEFAULT_MODEL_SIZE = 128


@dataclass(frozen=True)
class MDANetConfig:
    """Everything needed to build a network.

    Attributes:
        groups: modality names of the two groups, e.g. ``(("cbf", "cbv"), ("mtt", "tmax"))``. The input
            tensor stacks them in this order along the channel axis: ``C = len(groups[0]) + len(groups[1])``.
        widths: channel widths of the 5 encoder levels.
        architecture: ``"mdanet"``, or a baseline of Table 1: ``"unet"``, ``"attention-unet"``.
        dasc: dual-path encoder with difference-aware skips (Table 3). ``False`` gives a single encoder on the
            stacked input with concatenation skips (the U-Net baseline plus whatever else is switched on).
        msc: multi-scale convolution encoder blocks (Fig. 3a) instead of plain double convolutions.
        skip_fusion: how the two groups' skip features are fused before the gate (Table 4).
        bottleneck: global fusion at the bottleneck (Table 5): ``"gcfb"`` (Figs. 5-7), ``"nonlocal"``,
            ``"transformer"`` or ``"none"`` (the groups' bottleneck features are subtracted directly).
        gcn_nodes: N, nodes per group in the GCFB channel embedding (default ``widths[-1] // 4``).
        gcn_embed: E, features per node in the GCFB channel embedding (default ``widths[-1] // 2``).
        space_grid: side of the node grid of the GCFB space embedding (nodes per group = side²). ``None``
            (default): the paper's ``N = H·W``, every bottleneck position a node, i.e. the side of the bottleneck
            of the model grid the network is trained on (``size // 16``); :meth:`resolved` fixes it once that
            size is known (the trainer does, so checkpoints store the integer). A network built while it is
            still ``None`` uses the bottleneck of the default :data:`DEFAULT_MODEL_SIZE` grid (128 → 8). An
            explicit side fixes the grid (inputs of another size are pooled to it and resized back), e.g.
            for export at other sizes.
        num_classes: output channels of the head (2: background, lesion).
        ops: implementation of the native ops: ``"auto"``, ``"native"`` or ``"reference"``.
    """

    groups: tuple[tuple[str, ...], tuple[str, ...]] = MODALITY_GROUPS["mri"]
    widths: tuple[int, ...] = PRESETS["paper"]
    architecture: str = "mdanet"
    dasc: bool = True
    msc: bool = True
    skip_fusion: str = "subtract"
    bottleneck: str = "gcfb"
    gcn_nodes: int | None = None
    gcn_embed: int | None = None
    space_grid: int | None = None
    num_classes: int = 2
    ops: str = "auto"
    preset: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        groups = tuple(tuple(str(m).lower() for m in g) for g in self.groups)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(groups) != 2 or not all(groups):
            raise InputError(f"groups must be two non-empty lists of modality names, got {self.groups!r}.")
        if len(self.widths) != 5 or any(w < 4 for w in self.widths):
            raise InputError(f"widths must be 5 encoder widths >= 4, got {self.widths!r}.")
        for name, value, allowed in (
            ("architecture", self.architecture, ARCHITECTURES),
            ("skip_fusion", self.skip_fusion, SKIP_FUSIONS),
            ("bottleneck", self.bottleneck, BOTTLENECKS),
            ("ops", self.ops, ("auto", "native", "reference")),
        ):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
        if self.space_grid is not None and self.space_grid < 1:
            raise InputError(f"space_grid must be >= 1, got {self.space_grid}.")

    # -- derived ---------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return len(self.groups[0]) + len(self.groups[1])

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in input-channel order."""
        return self.groups[0] + self.groups[1]

    @property
    def gcfb(self) -> bool:
        return self.bottleneck == "gcfb"

    @property
    def nodes(self) -> int:
        return self.gcn_nodes or max(1, self.widths[-1] // 4)

    @property
    def embed(self) -> int:
        return self.gcn_embed or max(1, self.widths[-1] // 2)

    @property
    def grid(self) -> int:
        """Side of the GCFB space-embedding node grid: ``space_grid``, or the bottleneck of the default grid."""
        return self.space_grid or DEFAULT_MODEL_SIZE // BOTTLENECK_STRIDE

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str = "paper", kind: str = "mri", **overrides: Any) -> "MDANetConfig":
        """A named configuration.

        Args:
            preset: ``"paper"`` (widths 64..1024), ``"small"`` (widths 16..256, for CPU demos and tests),
                ``"unet"`` / ``"attention-unet"`` (the baselines at paper width).
            kind: ``"mri"`` (ISLES 2022: DWI | ADC) or ``"ctp"`` (ISLES 2018: CBF, CBV | MTT, Tmax).
            overrides: any field, e.g. ``msc=False`` or ``groups=(("a",), ("b", "c"))``.
        """
        if kind not in MODALITY_GROUPS:
            raise InputError(f"kind must be one of {', '.join(MODALITY_GROUPS)}; got {kind!r}.")
        base: dict[str, Any] = {"groups": MODALITY_GROUPS[kind], "preset": preset}
        if preset in ("unet", "attention-unet"):
            base.update(architecture=preset, widths=PRESETS["paper"])
        elif preset in PRESETS:
            base.update(widths=PRESETS[preset])
        else:
            raise InputError(
                f"Unknown preset {preset!r}: use one of paper, small, unet, attention-unet."
            )
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes: Any) -> "MDANetConfig":
        return replace(self, **changes)

    def resolved(self, size: int | None = None) -> MDANetConfig:
        """This config with ``space_grid`` fixed for a ``size × size`` model grid.

        An explicit ``space_grid`` is kept; ``None`` becomes the bottleneck side ``size // 16`` (one graph node
        per bottleneck position, the paper's ``N = H·W``), or that of :data:`DEFAULT_MODEL_SIZE` when ``size``
        is ``None``.
        """
        if self.space_grid is not None:
            return self
        size = DEFAULT_MODEL_SIZE if size is None else size
        if size < BOTTLENECK_STRIDE or size % BOTTLENECK_STRIDE:
            raise InputError(f"size must be a positive multiple of {BOTTLENECK_STRIDE}, got {size}.")
        return replace(self, space_grid=size // BOTTLENECK_STRIDE)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = [list(g) for g in self.groups]
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MDANetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(
                f"Model config has unknown fields {sorted(unknown)}: it was written by a newer mdanet-sdk; "
                "upgrade the package to load it."
            )
        d = dict(d)
        if "groups" in d:
            d["groups"] = tuple(tuple(g) for g in d["groups"])
        return cls(**d)
