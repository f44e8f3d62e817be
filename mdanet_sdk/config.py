"""Model configuration: presets, modality groups and the paper's ablation switches.

A :class:`MDANetConfig` fully describes an MDANet (or baseline) network: checkpoints store it as a plain
dict (:meth:`MDANetConfig.to_dict`) and rebuild the exact model from it (:meth:`MDANetConfig.from_dict`). How
the network computes its two custom ops (native kernels or the PyTorch reference) is no part of it: that is
chosen when the network is built (``build_model(config, ops=...)``).
"""

from __future__ import annotations

import re

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral
from typing import Any

from mdanet_sdk.errors import InputError

__all__ = [
    "MDANetConfig",
    "MODALITY_GROUPS",
    "PRESETS",
    "ARCHITECTURES",
    "BASELINE_PRESETS",
    "BOTTLENECK_STRIDE",
    "DEFAULT_MODEL_SIZE",
    "MAX_PARAMETERS",
    "estimate_parameters",
]

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

ARCHITECTURES = ("mdanet", "unet", "attention-unet", "unetpp", "msnet", "transunet", "swin-unet")
#: The baselines of Tables 1-2: each preset of that name builds the architecture of that name at paper width.
#: How each network reads ``widths`` is in its class docstring (``mdanet_sdk.model``).
BASELINE_PRESETS = ARCHITECTURES[1:]
SKIP_FUSIONS = ("subtract", "add", "concat")
BOTTLENECKS = ("gcfb", "nonlocal", "transformer", "none")
#: Bottleneck side = input side / BOTTLENECK_STRIDE (4 poolings by 2).
BOTTLENECK_STRIDE = 16
#: Side of the model grid assumed when a network is built before its input size is known: the trainer's
#: default ``size`` (:class:`~mdanet_sdk.train.trainer.TrainConfig`), so an unresolved ``space_grid`` is 8.
DEFAULT_MODEL_SIZE = 128

# Bounds of the config fields. A config comes from a checkpoint or an export artefact as much as from code, so
# a damaged or hostile file must be refused here, before a network is built: unbounded widths or graph sizes
# make ``build_model`` allocate tens of GB. The paper preset is ~26 M parameters, its transformer variant 61 M.
#: Encoder levels (4 poolings by 2 between them).
LEVELS = 5
_WIDTH_RANGE = (4, 4096)
#: Modalities per group, and characters per modality name.
_GROUP_RANGE = (1, 16)
_NAME_MAX = 64
#: A modality name: it becomes a file name part (``-m dwi=...``, ``*_dwi.nii.gz``), so no path characters.
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{_NAME_MAX - 1}}}")
#: GCFB channel-embedding nodes N and features E.
_GCN_RANGE = (1, 4096)
#: GCFB space grid side: the bottleneck of the largest model grid a preprocessing config allows (1024 / 16).
_SPACE_GRID_RANGE = (1, 64)
_CLASSES_RANGE = (1, 64)
#: Networks whose estimated parameter count (:func:`estimate_parameters`) exceeds this are refused.
MAX_PARAMETERS = 200_000_000
#: Fields earlier versions wrote and :meth:`MDANetConfig.from_dict` drops: ``ops``, the op implementation, is
#: chosen when a network is built (it changes how the network computes, never its weights).
_RETIRED_FIELDS = frozenset({"ops"})


@dataclass(frozen=True)
class MDANetConfig:
    """Everything needed to build a network.

    Attributes:
        groups: modality names of the two groups, e.g. ``(("cbf", "cbv"), ("mtt", "tmax"))``. The input
            tensor stacks them in this order along the channel axis: ``C = len(groups[0]) + len(groups[1])``.
        widths: channel widths of the 5 encoder levels.
        architecture: ``"mdanet"``, or a baseline of Tables 1-2: ``"unet"``, ``"attention-unet"``,
            ``"unetpp"`` (U-Net++), ``"msnet"``, ``"transunet"``, ``"swin-unet"``. The ablation switches below
            (``dasc``, ``msc``, ``skip_fusion``, ``bottleneck``, ``gcn_*``) apply to ``"mdanet"`` only; a
            baseline is the same network whatever they say. The transformers size their position embeddings
            by ``space_grid`` (below).
        dasc: dual-path encoder with difference-aware skips (Table 3). ``False`` gives a single encoder on the
            stacked input with concatenation skips (the U-Net baseline plus whatever else is switched on).
        msc: multi-scale convolution encoder blocks (Fig. 3a) instead of plain double convolutions.
        skip_fusion: how the two groups' skip features are fused before the gate (Table 4).
        bottleneck: global fusion at the bottleneck (Table 5): ``"gcfb"`` (Figs. 5-7), ``"nonlocal"``,
            ``"transformer"`` or ``"none"`` (the groups' bottleneck features are subtracted directly).
        gcn_nodes: N, nodes per group in the GCFB channel embedding (default ``widths[-1] // 4``).
        gcn_embed: E, features per node in the GCFB channel embedding (default ``widths[-1] // 2``).
        space_grid: side of the node grid of the GCFB space embedding (nodes per group = side²); for TransUNet
            and Swin-UNet, the model grid's side / 16 their position embeddings are built for. ``None``
            (default): the paper's ``N = H·W``, every bottleneck position a node, i.e. the side of the bottleneck
            of the model grid the network is trained on (``size // 16``); :meth:`resolved` fixes it once that
            size is known (the trainer does, so checkpoints store the integer). A network built while it is
            still ``None`` uses the bottleneck of the default :data:`DEFAULT_MODEL_SIZE` grid (128 → 8). An
            explicit side fixes the grid (inputs of another size are pooled to it and resized back), e.g.
            for export at other sizes.
        num_classes: output channels of the head (2: background, lesion).

    Bounds (checked on construction, so a config read from a file is refused before a network is built):
    widths 4-4096, 1-16 modalities per group, gcn_nodes and gcn_embed 1-4096, space_grid 1-64, num_classes 1-64,
    and at most :data:`MAX_PARAMETERS` (200 M) parameters by :func:`estimate_parameters`; ints must be ints (not
    bools), switches bools.
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
    preset: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", _checked_groups(self.groups))
        object.__setattr__(self, "widths", _checked_widths(self.widths))
        for name, value, allowed in (
            ("architecture", self.architecture, ARCHITECTURES),
            ("skip_fusion", self.skip_fusion, SKIP_FUSIONS),
            ("bottleneck", self.bottleneck, BOTTLENECKS),
        ):
            if not isinstance(value, str) or value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r:.80}.")
        for name in ("dasc", "msc"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r:.80}.")
        if not isinstance(self.preset, str):
            raise InputError(f"preset must be a name (a string), got {self.preset!r:.80}.")
        for name, bounds, optional in (
            ("gcn_nodes", _GCN_RANGE, True),
            ("gcn_embed", _GCN_RANGE, True),
            ("space_grid", _SPACE_GRID_RANGE, True),
            ("num_classes", _CLASSES_RANGE, False),
        ):
            object.__setattr__(self, name, _bounded_int(name, getattr(self, name), bounds, optional))
        params = estimate_parameters(self)
        if params > MAX_PARAMETERS:
            raise InputError(
                f"this model config describes a network of about {params / 1e6:.0f} M parameters, more than the "
                f"{MAX_PARAMETERS // 1_000_000} M mdanet-sdk builds; use smaller widths, gcn_nodes, gcn_embed or "
                "space_grid."
            )

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
            preset: ``"paper"`` (widths 64..1024), ``"small"`` (widths 16..256, for CPU demos and tests), or a
                baseline of Tables 1-2 at paper width (:data:`BASELINE_PRESETS`: ``"unet"``,
                ``"attention-unet"``, ``"unetpp"``, ``"msnet"``, ``"transunet"``, ``"swin-unet"``); pass
                ``widths=PRESETS["small"]`` for a small baseline.
            kind: ``"mri"`` (ISLES 2022: DWI | ADC) or ``"ctp"`` (ISLES 2018: CBF, CBV | MTT, Tmax).
            overrides: any field, e.g. ``msc=False`` or ``groups=(("a",), ("b", "c"))``.
        """
        if kind not in MODALITY_GROUPS:
            hint = " (that is a folder layout: pass it as the layout)" if kind in ("isles22", "isles18") else ""
            raise InputError(f"kind must be one of {', '.join(MODALITY_GROUPS)}; got {kind!r}{hint}.")
        base: dict[str, Any] = {"groups": MODALITY_GROUPS[kind], "preset": preset}
        if preset in BASELINE_PRESETS:
            base.update(architecture=preset, widths=PRESETS["paper"])
        elif preset in PRESETS:
            base.update(widths=PRESETS[preset])
        else:
            names = ", ".join((*PRESETS, *BASELINE_PRESETS))
            raise InputError(f"Unknown preset {preset!r:.80}: use one of {names}.")
        if preset in BASELINE_PRESETS and overrides.get("space_grid") is not None:
            raise InputError(f"space_grid sets MDANet's GCFB, which the {preset} baseline has not; drop it.")
        base.update(overrides)
        return cls(**base)

    @staticmethod
    def groups_of_sizes(first: int, second: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Modality groups of ``first`` and ``second`` channels: the MRI or CTP modalities where the sizes are
        theirs (1, 1 and 2, 2), generic names ``a0.., b0..`` otherwise."""
        if first < 1 or second < 1:
            raise InputError(f"each modality group needs at least one channel; got {first} and {second}.")
        for groups in MODALITY_GROUPS.values():
            if (len(groups[0]), len(groups[1])) == (first, second):
                return groups
        return tuple(f"a{i}" for i in range(first)), tuple(f"b{i}" for i in range(second))

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
    def from_dict(cls, d: Mapping[str, Any]) -> "MDANetConfig":
        """Inverse of :meth:`to_dict`.

        A dict written before the op implementation left the config (mdanet-sdk checkpoints and export
        artefacts carry an ``ops`` key) loads too: the key is dropped, the op implementation being chosen when
        the network is built.

        Raises:
            InputError: ``d`` is not a dict, has fields this version does not know (written by a newer
                mdanet-sdk), or a value of the wrong type or out of bounds.
        """
        if not isinstance(d, Mapping):
            raise InputError(f"the model config must be a dict of fields, got a {type(d).__name__}.")
        known = {f.name for f in fields(cls)} | _RETIRED_FIELDS
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise InputError(
                f"Model config has unknown fields {unknown}: it was written by a newer mdanet-sdk; "
                "upgrade the package to load it."
            )
        d = {k: v for k, v in d.items() if k not in _RETIRED_FIELDS}
        groups = d.get("groups")
        if isinstance(groups, (list, tuple)) and all(isinstance(g, (list, tuple)) for g in groups):
            d["groups"] = tuple(tuple(g) for g in groups)  # anything else is refused by __post_init__
        return cls(**d)


def _bounded_int(name: str, value: Any, bounds: tuple[int, int], optional: bool = False) -> int | None:
    """``value`` as an int within ``bounds`` (inclusive); ``None`` passes when ``optional``. A bool is refused:
    ``True`` is an int to Python but never a width or a count in a config."""
    if value is None and optional:
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= int(value) <= high:
        unset = " or null" if optional else ""
        raise InputError(f"{name} must be an integer from {low} to {high}{unset}, got {value!r:.80}.")
    return int(value)


def _checked_groups(groups: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The two modality groups as tuples of lower-case names; anything else is refused."""
    low, high = _GROUP_RANGE
    ok = (
        isinstance(groups, (list, tuple))
        and len(groups) == 2
        and all(
            isinstance(g, (list, tuple))
            and low <= len(g) <= high
            and all(isinstance(m, str) and _NAME.fullmatch(m) for m in g)
            for g in groups
        )
    )
    names = [m.lower() for g in groups for m in g] if ok else []
    if not ok or len(set(names)) != len(names):
        raise InputError(
            f"groups must be two lists of {low} to {high} distinct modality names (letters, digits, _ or -), got "
            f"{groups!r:.200}."
        )
    return tuple(tuple(m.lower() for m in g) for g in groups)  # type: ignore[return-value]


def _checked_widths(widths: Any) -> tuple[int, ...]:
    low, high = _WIDTH_RANGE
    if (
        isinstance(widths, (list, tuple))
        and len(widths) == LEVELS
        and all(isinstance(w, Integral) and not isinstance(w, bool) and low <= int(w) <= high for w in widths)
    ):
        return tuple(int(w) for w in widths)
    raise InputError(f"widths must be {LEVELS} encoder widths, integers from {low} to {high}, got {widths!r:.200}.")


def estimate_parameters(config: MDANetConfig) -> int:
    """An upper estimate of the parameter count of the network ``config`` describes, from the config alone.

    Computed in closed form (no tensor is allocated), so a config of a huge network is refused before it is
    built. For MDANet and the U-Nets it counts every block as the U-Net double convolution (the MSC block has
    fewer parameters) and is within ~1.5x of the real count for the presets (paper: ~26 M real); for the other
    baselines of Tables 1-2 it counts their layers: exact for U-Net++, MSNet and TransUNet, and for Swin-UNet
    with its relative position tables at one column per feature instead of one per head (2 % above the real
    count at paper width, at most 25 % for the smallest widths).
    """
    if config.architecture in _BASELINE_ESTIMATES:
        return _BASELINE_ESTIMATES[config.architecture](config)
    w, classes = config.widths, config.num_classes
    if config.architecture != "mdanet":  # the U-Nets ignore the switches (mdanet_sdk.model.unet)
        dasc, bottleneck = False, "none"
    else:
        dasc, bottleneck = config.dasc, config.bottleneck
    paths = 2 if dasc else 1
    total = paths * _double_conv(config.in_channels, w[0])  # stems
    total += sum(_double_conv(w[i], w[i + 1]) for i in range(LEVELS - 1))  # shared encoder
    total += sum(4 * w[i + 1] * w[i] + w[i] + _double_conv(2 * w[i], w[i]) for i in range(LEVELS - 1))  # decoder
    total += w[0] * classes + classes  # head
    total += sum(4 * w[i] * w[i] + 4 * w[i] for i in range(LEVELS - 1))  # skips (gates, concat merges)
    c = w[-1]
    if bottleneck == "gcfb":
        n, e, cells = config.nodes, config.embed, config.grid**2
        total += c * (n + e) + (paths * n) ** 2 + e * e + e * c + 4 * c + 2 * (paths * n + e)  # channel graph
        total += cells * c + (paths * cells) ** 2 + c * c + 2 * (paths * cells + c)  # space graph
    elif bottleneck == "nonlocal":
        total += 2 * (4 * c * c + 8 * c)
    elif bottleneck == "transformer":
        total += (paths + 1) * (12 * c * c + 20 * c) + config.grid**2 * c  # per-group self, cross, position
    return total


def _double_conv(c_in: int, c_out: int) -> int:
    """Parameters of a double 3x3 convolution without bias and its two batch norms."""
    return 9 * (c_in * c_out + c_out * c_out) + 4 * c_out


def _unet_encoder(config: MDANetConfig) -> int:
    """The U-Net encoder (stem and four levels) U-Net++ and MSNet share."""
    w = config.widths
    return _double_conv(config.in_channels, w[0]) + sum(_double_conv(w[i], w[i + 1]) for i in range(LEVELS - 1))


def _estimate_unetpp(config: MDANetConfig) -> int:
    """U-Net++ (mdanet_sdk.model.unetpp): encoder, node X^{i,j} = transposed conv + double conv, head."""
    w, k = config.widths, config.num_classes
    nodes = sum(
        _double_conv((j + 1) * w[i], w[i]) + 4 * w[i + 1] * w[i] + w[i]
        for i in range(LEVELS - 1)
        for j in range(1, LEVELS - i)
    )
    return _unet_encoder(config) + nodes + w[0] * k + k


def _estimate_msnet(config: MDANetConfig) -> int:
    """MSNet (mdanet_sdk.model.msnet): encoder, reductions to C = widths[0], 18 C->C convs, 3x3 head."""
    w, k, c = config.widths, config.num_classes, config.widths[0]
    reductions = sum(9 * width * c + 2 * c for width in (*w[1:], w[-1]))  # levels 1-4 and the decoder's entry
    units = 10 + 4 + 4  # subtraction pyramid, complementary enhancement, decoder
    return _unet_encoder(config) + reductions + units * (9 * c * c + 2 * c) + 9 * c * k + k


def _transformer_layer(d: int) -> int:
    """A ViT or Swin layer of width d: attention (4 d x d), MLP (d -> 4d -> d), two LayerNorms, biases."""
    return 12 * d * d + 13 * d


def _estimate_transunet(config: MDANetConfig) -> int:
    """TransUNet (mdanet_sdk.model.transunet): ResNet-50 stages, ViT on the 1/16 map, cascaded upsampler."""
    w, k, d = config.widths, config.num_classes, config.widths[-1]
    total, c_in = 49 * config.in_channels * w[0] + 2 * w[0], w[0]  # root
    for mid, units in zip(w[:3], (3, 4, 9)):  # mdanet_sdk.model.transunet.RESNET_UNITS
        out = 4 * mid
        total += c_in * out + 2 * out  # projected residual of the first unit
        total += units * (2 * mid * out + 9 * mid * mid + 4 * mid + 2 * out) + (c_in - out) * mid
        c_in = out
    total += 4 * w[2] * d + d + config.grid**2 * d  # patch and position embeddings
    total += 12 * _transformer_layer(d) + 2 * d  # mdanet_sdk.model.transunet.VIT_LAYERS, final norm
    outs = (w[2], w[1], w[0], max(1, w[0] // 4))
    ins, skips = (w[3], *outs[:3]), (4 * w[1], 4 * w[0], w[0], 0)
    total += 9 * d * w[3] + 2 * w[3]  # conv_more
    total += sum(9 * (i + s) * o + 9 * o * o + 4 * o for i, s, o in zip(ins, skips, outs))
    return total + 9 * outs[-1] * k + k


def _estimate_swin_unet(config: MDANetConfig) -> int:
    """Swin-UNet (mdanet_sdk.model.swinunet): dims 3 * widths[0..3], two blocks per stage on either side."""
    d, k = [3 * width for width in config.widths[:4]], config.num_classes
    grid = 4 * config.grid  # patch size 4: tokens at 1/4

    def stage(dim: int) -> int:  # two Swin blocks; relative position table of 15 x 15 offsets, <= dim heads
        return 2 * (_transformer_layer(dim) + 225 * dim)

    total = 16 * config.in_channels * d[0] + 3 * d[0] + grid * grid * d[0]  # patch and position embeddings
    total += sum(stage(dim) for dim in d) + 2 * d[3]  # encoder, bottleneck norm
    total += sum(8 * d[s] + 4 * d[s] * d[s + 1] for s in range(3))  # patch merging
    total += sum(4 * d[s] * d[s + 1] + 2 * d[s] + 2 * d[s] * d[s] + d[s] + stage(d[s]) for s in range(3))  # decoder
    return total + 2 * d[0] + 16 * d[0] * d[0] + 2 * d[0] + d[0] * k  # norm, final x4 expand, head


_BASELINE_ESTIMATES = {
    "unetpp": _estimate_unetpp,
    "msnet": _estimate_msnet,
    "transunet": _estimate_transunet,
    "swin-unet": _estimate_swin_unet,
}
