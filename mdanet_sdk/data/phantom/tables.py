"""The physics and geometry of the phantoms, as named parameter tables.

Every number the generator draws from or builds with lives here, named, with its unit; the modules that
build a phantom only combine them. A pair ``(low, high)`` is the range of a uniform draw (``rng.uniform``, or
``rng.integers`` for counts, ``high`` excluded). These are the *classic* values that stay fixed in every
domain; the ranges that domain randomisation widens are in :mod:`mdanet_sdk.data.phantom.domain`.

Sources of the values: the real ISLES'22 case (DWI/ADC of tissue, CSF and lesion, see the package docstring),
the diffusion literature (ADC of white and grey matter, CSF), and the perfusion literature (CBF/CBV of grey
and white matter; the ISLES'18 definition of the core).

The values are Python floats on purpose: NumPy (NEP 50) keeps ``float32`` arrays ``float32`` when multiplied
by one, so the phantoms stay bit for bit what they were when these numbers were written inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Range",
    "GeometryTable",
    "AnatomyTable",
    "LesionTable",
    "LesionPattern",
    "MriTable",
    "MriMimicTable",
    "PerfusionTable",
    "CtTable",
    "BackgroundTable",
    "GEOMETRY",
    "ANATOMY",
    "LESION",
    "LESION_PATTERNS",
    "PATTERN_P",
    "MRI",
    "MRI_MIMICS",
    "PERFUSION",
    "CT",
    "BACKGROUND",
]

Range = tuple[float, float]


@dataclass(frozen=True)
class GeometryTable:
    """Head size, grid and voxel size of a case (the voxel sides of each domain are in ``Domain``).

    Attributes:
        head_scale: one factor on all three cerebrum semi-axes (head size).
        cerebrum_mm: semi-axes of the cerebrum before ``head_scale``: left-right, front-back, up-down.
        mri_matrix: in-plane matrix sizes of ISLES'22-like cases.
        mri_non_square_p: probability that the second in-plane axis is longer; by ``mri_non_square_rows``
            voxels on the classic grid, ``mri_non_square_rows_fitted`` when the matrix follows the voxel size.
        mri_slices: slice count (``rng.integers``).
        mri_slice_mm: slice thickness on the classic grid.
        mri_centre_z: brain-centre height above the grid centre, share of the cerebrum's height semi-axis.
        mri_cover_z: the Z extent that must hold the head: ``[0] * height semi-axis + [1]`` mm.
        ctp_matrix, ctp_slices: the CTP slab's in-plane matrix and slice count (``rng.integers``).
        ctp_rim_mm: skull-and-scalp rim width around the brain.
        ctp_centre_z: brain-centre depth *below* the slab centre, share of the cerebrum's height semi-axis.
        fit_margin, fit_pad_mm: the in-plane field of view that must hold the head is
            ``2 * (largest in-plane semi-axis + rim) * fit_margin + fit_pad_mm``.
        affine_tilt_deg: largest obliquity of an MRI affine per axis.
        affine_shift_sd_mm, affine_centre_mm: world position of the grid centre: normal around the centre.
    """

    head_scale: Range = (0.9, 1.08)
    cerebrum_mm: tuple[Range, Range, Range] = ((62, 72), (78, 90), (58, 66))
    mri_matrix: tuple[int, ...] = (96, 104, 112, 120, 128)
    mri_non_square_p: float = 0.3
    mri_non_square_rows: int = 16
    mri_non_square_rows_fitted: int = 8
    mri_slices: tuple[int, int] = (40, 81)
    mri_slice_mm: float = 2.0
    mri_centre_z: Range = (-0.1, 0.05)
    mri_cover_z: tuple[float, float] = (2.1, 4.0)
    ctp_matrix: int = 256
    ctp_slices: tuple[int, int] = (2, 9)
    ctp_rim_mm: Range = (9.0, 16.0)
    ctp_centre_z: Range = (-0.15, 0.45)
    fit_margin: float = 1.06
    fit_pad_mm: float = 8.0
    affine_tilt_deg: tuple[float, float, float] = (2.5, 2.5, 2.5)
    affine_shift_sd_mm: float = 5.0
    affine_centre_mm: tuple[float, float, float] = (0.0, -18.0, 10.0)


@dataclass(frozen=True)
class AnatomyTable:
    """Shape of the brain and its compartments, in mm (or as a share of the cerebrum semi-axes a, b, c).

    Attributes:
        offset_sd_mm: random shift of the brain centre per axis (normal sd).
        tilt_deg: largest random head rotation per axis.
        frontal_taper: the cerebrum narrows by this share towards the front.
        base_flattening: height factor of the cerebrum below its centre.
        cerebellum_centre, cerebellum_semi: behind/below the cerebrum centre (share of b, c) and its
            semi-axes (share of a, b, c).
        stem_centre, stem_semi_mm, stem_height: brainstem centre (share of b, c), in-plane semi-axes (mm)
            and height semi-axis (share of c).
        surface_wave_mm, surface_wave_scale_mm: amplitude and correlation length of the wavy brain surface.
        cortex_band_mm: depth below the surface where cortex folds.
        fold_scale_mm: correlation length of the folding field (sulci ~4.5x that apart, ~11 mm).
        fold_lattice_mm, fold_push: lattice of the folding field and how strongly a voxel is pushed out to
            the surface before reading it (sulci run inwards).
        sulcus_depth_mm, sulcus_depth_sd_mm, sulcus_depth_scale_mm: sulcal depth, its smooth variation and
            that variation's correlation length.
        atrophy: factor that widens sulci, subarachnoid space, fissure and ventricles.
        sulcus_opening: half-width of an open sulcus in fold units per unit of atrophy.
        ribbon_mm: thickness of the cortical grey-matter ribbon; ``sulcus_ribbon_mm`` below the fundus.
        fissure_reach: the interhemispheric fissure reaches down where ``w > [0] c`` or ``|v| > [1] b``.
        fissure_wave_mm, fissure_wave_scale_mm: its sideways waviness.
        fissure_width, fissure_gm_mm: its CSF half-width per unit of atrophy, and its grey-matter lining.
        ventricle_width_mm: lateral-ventricle half-width ``[0] + [1] * atrophy``; ``ventricle_height_mm``
            likewise; ``ventricle_septum_mm`` between them; ``ventricle_length_mm`` front-back semi-axis.
        ventricle_arch: the bodies arch: top at ``[0] c`` dropping ``[1]`` per mm² of ``(v + [2])``.
        third_ventricle_centre: (v mm, share of c) of the third ventricle; ``third_ventricle_semi``: width
            per unit of atrophy, length mm, height share of c.
        deep_nuclei: (centre, semi-axes) of the lentiform nucleus and the thalamus of one side: centre as
            (mm lateral, mm anterior, share of c up), semi-axes in mm.
    """

    offset_sd_mm: tuple[float, float, float] = (2.0, 3.0, 1.5)
    tilt_deg: tuple[float, float, float] = (6.0, 5.0, 8.0)
    frontal_taper: float = 0.07
    base_flattening: float = 0.82
    cerebellum_centre: tuple[float, float] = (0.52, 0.68)
    cerebellum_semi: tuple[float, float, float] = (0.72, 0.36, 0.32)
    stem_centre: tuple[float, float] = (0.12, 0.7)
    stem_semi_mm: tuple[float, float] = (12.0, 14.0)
    stem_height: float = 0.45
    surface_wave_mm: Range = (1.2, 2.8)
    surface_wave_scale_mm: float = 18.0
    cortex_band_mm: float = 26.0
    fold_scale_mm: Range = (2.3, 2.9)
    fold_lattice_mm: float = 1.2
    fold_push: float = -0.7
    sulcus_depth_mm: Range = (13.0, 19.0)
    sulcus_depth_sd_mm: float = 3.0
    sulcus_depth_scale_mm: float = 20.0
    atrophy: Range = (0.7, 1.5)
    sulcus_opening: float = 0.3
    ribbon_mm: float = 3.0
    sulcus_ribbon_mm: float = 2.5
    fissure_reach: tuple[float, float] = (0.3, 0.45)
    fissure_wave_mm: float = 1.5
    fissure_wave_scale_mm: float = 12.0
    fissure_width: float = 0.9
    fissure_gm_mm: float = 3.5
    ventricle_width_mm: tuple[float, float] = (3.0, 3.5)
    ventricle_height_mm: tuple[float, float] = (3.0, 5.0)
    ventricle_septum_mm: float = 1.2
    ventricle_length_mm: float = 32.0
    ventricle_arch: tuple[float, float, float] = (0.3, 0.008, 4.0)
    third_ventricle_centre: tuple[float, float] = (8.0, 0.02)
    third_ventricle_semi: tuple[float, float, float] = (1.3, 11.0, 0.16)
    deep_nuclei: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
        ((18.0, 4.0, 0.02), (7.0, 14.0, 10.0)),  # lentiform nucleus (and caudate)
        ((9.5, -14.0, 0.06), (7.0, 10.0, 9.0)),  # thalamus
    )


@dataclass(frozen=True)
class LesionTable:
    """What every lesion shares.

    Attributes:
        irregularity: amplitude of the smooth displacement of a blob's surface (share of its radius).
        axis_spread: log-normal sd of a blob's three semi-axes around its radius.
        severity: per-lesion strength of the ADC drop (0..1 scale on top of the domain's drop).
        tissue_max_csf, tissue_min_depth_mm: where a lesion may be centred: CSF fraction below, depth below the
            brain surface above.
        cerebrum_floor: the cerebrum is above ``-cerebrum_floor * c``.
        fallback_radius_mm: the lesion drawn anywhere in tissue when a grid is too small for the pattern.
    """

    irregularity: Range = (0.2, 0.45)
    axis_spread: float = 0.25
    severity: Range = (0.6, 1.0)
    tissue_max_csf: float = 0.2
    tissue_min_depth_mm: float = 1.0
    cerebrum_floor: float = 0.45
    fallback_radius_mm: dict[str, float] = field(default_factory=lambda: {"isles22": 4.0, "isles18": 6.0})


@dataclass(frozen=True)
class LesionPattern:
    """Size, number and place of the lesions of one pattern.

    Attributes:
        radius_mm: radius of each (main) lesion.
        extra_p: probability of more than one lesion (territorial: of satellites; core: of a second core).
        count: number of lesions (``rng.integers``; territorial: of satellites). ``None``: see ``extra_p``
            (embolic: the domain's ``embolic_count``).
        min_offset_mm: the centre is at least this far from the midline (one hemisphere).
        min_depth_mm, max_depth_mm: depth range of the centre below the brain surface (``None``: no bound).
        spread_mm: satellites / emboli lie within this distance of the first lesion / the cluster centre.
        satellite_radius_mm, satellite_max_depth_mm: satellites' size and depth limit (emboli's depth limit).
        max_csf: lacunes only where CSF fraction is below this (deep, away from the ventricles).
        penumbra_scale, penumbra_irregularity: CTP penumbra radius as a multiple of its core's, and its
            surface irregularity.
    """

    radius_mm: Range
    extra_p: float = 0.0
    count: tuple[int, int] | None = None
    min_offset_mm: float | None = None
    min_depth_mm: float | None = None
    max_depth_mm: float | None = None
    spread_mm: float | None = None
    satellite_radius_mm: Range | None = None
    satellite_max_depth_mm: float | None = None
    max_csf: float | None = None
    penumbra_scale: Range | None = None
    penumbra_irregularity: Range | None = None


#: Lesion patterns of ISLES'22 (territorial ... multiple) and the ISLES'18 infarct core.
LESION_PATTERNS: dict[str, LesionPattern] = {
    "territorial": LesionPattern(
        (12.0, 35.0),
        extra_p=0.5,
        count=(1, 4),
        min_offset_mm=12,
        min_depth_mm=4,
        max_depth_mm=22,
        spread_mm=45.0,
        satellite_radius_mm=(2.0, 5.0),
        satellite_max_depth_mm=25,
    ),
    "lacunar": LesionPattern((3.0, 8.0), extra_p=0.3, min_depth_mm=22, max_csf=0.05),
    "embolic": LesionPattern((1.5, 5.0), max_depth_mm=30, spread_mm=35.0, satellite_max_depth_mm=25),
    "multiple": LesionPattern((5.0, 15.0), count=(2, 5)),
    "core": LesionPattern(
        (8.0, 28.0),
        extra_p=0.25,
        min_offset_mm=8,
        max_depth_mm=35,
        penumbra_scale=(1.4, 2.2),
        penumbra_irregularity=(0.2, 0.4),
    ),
}
#: Probability of each lesion pattern of a layout when ``pattern`` is not given (order of ``PATTERNS``).
PATTERN_P: dict[str, tuple[float, ...]] = {"isles22": (0.3, 0.2, 0.3, 0.2), "isles18": (1.0,)}


@dataclass(frozen=True)
class MriTable:
    """Tissue and scanner parameters of ISLES'22-like DWI/ADC.

    Attributes:
        adc_wm, adc_gm, adc_deep, adc_csf: ADC (1e-3 mm²/s) of white, cortical grey, deep grey matter, CSF.
        s0_csf: T2-weighted (b = 0) signal of CSF relative to white matter (grey matter: ``Domain.gm_t2``).
        texture_scale_mm, regional_adc_scale_mm, regional_s0_scale_mm: correlation lengths of the fine
            texture and of the regional ADC and S0 variation.
        regional_s0: amplitude of the regional S0 variation.
        hindbrain_s0: extra S0 of cerebellum and brainstem (the real case's base is ~1.3x brighter).
        lesion_core_weight: ADC drop scale ``[0] + [1] * severity`` inside a lesion.
        lesion_texture: share of the fine texture that modulates the ADC drop.
        s0_noise: noise sigma on S0 relative to the one on the b = 1000 signal.
        adc_max: ADC clip (1e-3 mm²/s).
        bias_radial, bias_axial, bias_field: log-amplitude of the coil bias towards the periphery, towards the
            base, and of its smooth random part; ``bias_axial_clip`` clips the axial coordinate (share of c),
            ``bias_scale_mm`` is the random part's correlation length.
        b_value: diffusion weighting (s/mm²; with ADC in 1e-3 mm²/s, ``b * ADC`` is ``ADC``).
        per_mille_p: probability that ADC is stored in 1e-6 mm²/s as int16.
        orientations: stored voxel axis codes.
    """

    adc_wm: Range = (0.68, 0.76)
    adc_gm: Range = (0.80, 0.92)
    adc_deep: Range = (0.72, 0.80)
    adc_csf: Range = (2.8, 3.3)
    s0_csf: Range = (3.0, 4.2)
    texture_scale_mm: float = 2.0
    regional_adc_scale_mm: float = 15.0
    regional_s0_scale_mm: float = 12.0
    regional_s0: Range = (0.05, 0.12)
    hindbrain_s0: Range = (0.0, 0.3)
    lesion_core_weight: tuple[float, float] = (0.75, 0.25)
    lesion_texture: float = 0.12
    s0_noise: float = 0.7
    adc_max: float = 4.5
    bias_radial: Range = (0.0, 0.3)
    bias_axial: Range = (-0.05, 0.3)
    bias_axial_clip: tuple[float, float] = (-1.0, 1.5)
    bias_field: Range = (0.08, 0.22)
    bias_scale_mm: float = 50.0
    b_value: int = 1000
    per_mille_p: float = 0.5
    orientations: tuple[str, ...] = ("LAS", "RAS")


@dataclass(frozen=True)
class MriMimicTable:
    """Lesion look-alikes that only one of DWI and ADC flags. Effects are fractional rises (``t2``: of S0,
    ``adc``: of ADC, ``dwi``: of DWI only).

    Attributes:
        shine_count: number of T2 shine-through regions (DWI bright, ADC normal or raised).
        shine_t2, shine_adc, shine_radius_mm, shine_min_depth_mm: their effect, size and depth.
        chronic_p: probability of a chronic infarct (ADC high, DWI dark), ``chronic_*`` likewise.
        susceptibility_count, susceptibility_extra_p: number of susceptibility regions at the skull base
            (DWI bright, ADC unchanged): ``rng.integers(*count) + (rng.random() < extra_p)``.
        susceptibility_dwi, susceptibility_radius_mm, susceptibility_max_depth_mm: their effect, size, depth.
        skull_base: where they lie: below ``-[0] c``, and lateral of ``[1]`` mm or in front of ``[2] b``.
    """

    shine_count: tuple[int, int] = (0, 4)
    shine_t2: Range = (0.5, 1.1)
    shine_adc: Range = (0.0, 0.4)
    shine_radius_mm: Range = (4.0, 14.0)
    shine_min_depth_mm: float = 8
    chronic_p: float = 0.3
    chronic_t2: Range = (1.8, 2.8)
    chronic_adc: Range = (1.5, 2.5)
    chronic_radius_mm: Range = (5.0, 15.0)
    chronic_max_depth_mm: float = 20
    susceptibility_count: tuple[int, int] = (0, 3)
    susceptibility_extra_p: float = 0.5
    susceptibility_dwi: Range = (0.3, 1.0)
    susceptibility_radius_mm: Range = (8.0, 20.0)
    susceptibility_max_depth_mm: float = 15
    skull_base: tuple[float, float, float] = (0.2, 20, 0.3)


@dataclass(frozen=True)
class PerfusionTable:
    """ISLES'18-like CT perfusion maps.

    Attributes:
        cbf, cbv: (grey matter, white matter, CSF) ranges; CBF in ml/100 g/min, CBV in ml/100 g.
        central_volume: MTT = ``central_volume * CBV / CBF`` (s; 60 s/min), clipped to ``mtt_max``.
        core_cbf_share: classic core CBF as a share of the core's CBV (CBF drops more than CBV).
        penumbra_cbv: fractional CBV change in the penumbra (autoregulation keeps it near normal).
        penumbra_cbf: penumbra CBF relative to tissue.
        vessel_cbf, vessel_cbv: large vessels in the sulci; ``vessel_threshold`` of a field with correlation
            length ``vessel_scale_mm`` picks them.
        tmax_normal, tmax_territory, tmax_penumbra, tmax_core: Tmax (s) of normal tissue, the extra delay
            across the affected territory, and the penumbra's and core's values.
        territory_offset, territory_ramp_mm: the territory starts ``offset * a`` from the midline, over a ramp.
        rim: (low, high) of each map on the skull-and-scalp rim.
        texture, noise: per map, share of multiplicative texture and additive noise (of the 90th percentile);
            ``white_noise`` is the share of uncorrelated noise next to the correlated one.
        texture_scale_mm: correlation length of each map's texture field.
        smoothing_mm: in-plane smoothing of the deconvolved maps.
        bias, bias_scale_mm: log-amplitude and correlation length of a smooth gain field.
        skull_inner, skull_outer: the bone shell lies between these shares of the rim's depth.
        orientations: stored voxel axis codes.
    """

    cbf: tuple[Range, Range, Range] = ((45, 65), (18, 28), (1, 3))
    cbv: tuple[Range, Range, Range] = ((3.5, 5.0), (1.6, 2.4), (0.1, 0.4))
    central_volume: float = 60.0
    mtt_max: float = 20.0
    core_cbf_share: Range = (0.3, 0.7)
    penumbra_cbv: Range = (-0.1, 0.25)
    penumbra_cbf: Range = (0.5, 0.8)
    vessel_cbf: Range = (80, 150)
    vessel_cbv: Range = (8, 20)
    vessel_threshold: Range = (1.6, 2.2)
    vessel_scale_mm: float = 4.0
    tmax_normal: Range = (0.3, 1.5)
    tmax_territory: Range = (0.5, 2.0)
    tmax_penumbra: Range = (6, 10)
    tmax_core: Range = (9, 16)
    territory_offset: float = 0.2
    territory_ramp_mm: float = 20.0
    rim: dict[str, Range] = field(
        default_factory=lambda: {"cbf": (3, 10), "cbv": (0.5, 2), "mtt": (3, 8), "tmax": (0, 2)}
    )
    texture: dict[str, float] = field(default_factory=lambda: {"cbf": 0.15, "cbv": 0.12, "mtt": 0.1, "tmax": 0.3})
    noise: dict[str, float] = field(default_factory=lambda: {"cbf": 0.08, "cbv": 0.08, "mtt": 0.1, "tmax": 0.08})
    white_noise: float = 0.5
    texture_scale_mm: float = 1.5
    smoothing_mm: float = 1.5
    bias: float = 0.08
    bias_scale_mm: float = 60.0
    skull_inner: Range = (0.15, 0.3)
    skull_outer: Range = (0.6, 0.75)
    orientations: tuple[str, ...] = ("LPS", "LAS", "RAS")


@dataclass(frozen=True)
class CtTable:
    """The plain CT of an ISLES'18-like case, in Hounsfield units.

    Attributes:
        grey, white, csf: tissue attenuation ranges.
        core_drop: how much darker the core is (early hypodensity).
        bone, scalp: skull and soft-tissue rim; ``air`` outside the head.
        noise: sigma of the white noise.
    """

    grey: Range = (34, 40)
    white: Range = (25, 30)
    csf: Range = (3, 8)
    core_drop: Range = (2, 8)
    bone: Range = (900, 1400)
    scalp: Range = (20, 45)
    air: float = -1000.0
    noise: Range = (3, 6)


@dataclass(frozen=True)
class BackgroundTable:
    """What lies around the brain for the non-zero backgrounds of the domains.

    Attributes:
        mri_adc_noise: outside ADC, a share of the tissue median, set on ``mri_adc_noise_p`` of the voxels.
        skull_mm: width of the scalp/skull ring outside an MRI brain; ``skull_bone`` is the share of it,
            next to the brain, that is dark cortical bone.
        skull_dwi, skull_adc: the ring's DWI and ADC relative to the tissue median; ``skull_texture`` their
            multiplicative noise.
        ctp_noise: noise in the air around a CTP head, share of each map's median.
    """

    mri_adc_noise: Range = (0.0, 3.0)
    mri_adc_noise_p: float = 0.5
    skull_mm: Range = (4.0, 9.0)
    skull_bone: float = 0.35
    skull_dwi: Range = (0.3, 1.2)
    skull_adc: Range = (0.3, 2.0)
    skull_texture: float = 0.3
    ctp_noise: Range = (0.01, 0.08)


GEOMETRY = GeometryTable()
ANATOMY = AnatomyTable()
LESION = LesionTable()
MRI = MriTable()
MRI_MIMICS = MriMimicTable()
PERFUSION = PerfusionTable()
CT = CtTable()
BACKGROUND = BackgroundTable()
