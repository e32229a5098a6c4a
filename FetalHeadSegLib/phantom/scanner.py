"""B-mode ultrasound simulation: beam-space convolution model, attenuation, shadows, TGC, log compression.

The scan is simulated the way a scanner forms it, in beam space: range ``r`` along each beam and the beam's
lateral (and, in 3D, elevation) steering angle, from a probe apex. Per beam sample:

1. tissue at that point (nearest voxel of the tissue map); diffuse scatterers = complex Gaussian x echogenicity;
   specular echoes (bone, falx) scaled by the angle of incidence, so surfaces parallel to the beam drop out;
2. two-way depth attenuation, accumulated along each beam: bone darkens everything behind it (acoustic shadow);
3. the point-spread function (Gaussian, axial x lateral x elevation) applied to the demodulated (IQ) signal,
   which is the baseband form of convolution with the axially modulated RF pulse; speckle emerges from it;
4. reverberation (a delayed copy of the near-field echoes), electronic noise, time-gain compensation,
   envelope detection and log compression to 8 bits;
5. scan conversion onto the output grid; everything outside the fan (2D) or cone (3D) is black.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.phantom.shapes import Ellipsoid
from FetalHeadSegLib.phantom.tissues import ATTENUATION_DB_CM_MHZ, DISPLAY_REFERENCE, ECHOGENICITY, SPECULAR, Tissue

_AXIAL_SAMPLES_PER_SIGMA = 1.5
_ANGULAR_SAMPLES_PER_SIGMA = 1.0


@dataclass(frozen=True)
class Probe:
    """Probe pose and imaging settings (RAS mm, radians, MHz, dB).

    A curvilinear probe: beams fan out from a virtual ``apex`` and enter the body on the skin line at
    ``radius_mm`` from it. ``axes`` columns: lateral, depth (the central beam) and elevation directions. A 2D
    probe has ``half_angle_elevation_rad == 0`` and images the plane spanned by its lateral and depth axes.
    """

    apex: np.ndarray
    axes: np.ndarray
    radius_mm: float
    half_angle_lateral_rad: float
    half_angle_elevation_rad: float
    frequency_mhz: float
    axial_sigma_mm: float
    lateral_sigma_rad: float
    elevation_sigma_rad: float
    gain_db: float
    dynamic_range_db: float
    tgc_error_db_per_cm: float
    noise_db: float
    reverberation_db: float
    texture_sigma: float

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["apex"] = np.round(self.apex, 4).tolist()
        record["axes_columns"] = np.round(self.axes.T, 6).tolist()
        del record["axes"]
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in record.items()}

    @property
    def skin_center(self) -> np.ndarray:
        """Where the central beam enters the body."""
        return np.asarray(self.apex + self.radius_mm * self.axes[:, 1])

    def skin_depth(self, points: np.ndarray) -> np.ndarray:
        """Depth (mm) of (N, 3) RAS points below the skin line."""
        return np.asarray(np.linalg.norm(points - self.apex, axis=1) - self.radius_mm)

    def beam_coordinates(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Range (mm) and lateral/elevation angles (rad) of (N, 3) RAS points; angles are NaN behind the probe."""
        local = (points - self.apex) @ self.axes
        lateral, depth, elevation = local[:, 0], local[:, 1], local[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = np.where(depth > 0, np.arctan(lateral / depth), np.nan)
            phi = np.where(depth > 0, np.arctan(elevation / depth), np.nan)
        return np.linalg.norm(local, axis=1), theta, phi


@dataclass(frozen=True)
class Acoustics:
    """Per-tissue acoustic tables and optional beam-space effects; the defaults are the classic phantom's.

    Attributes:
        echogenicity, specular, attenuation: per :class:`Tissue` code (see ``tissues.py``).
        display_smoothing: sigma (beam samples) of the scanner's speckle-reduction filter after log compression.
        extra_attenuation: optional ``f(points_ras (N, 3), codes (N,)) -> dB/cm/MHz (N,)`` added to the tissue's
            attenuation (acoustic shadows cast by chosen parts of the skull).
        beam_gain: optional amplitude factor per beam, ``f(theta (T,), phi (P,)) -> (T, P)`` (dropout: beams
            with poor contact).
        tgc_origin_mm: range from the apex where the time-gain compensation starts (0: at the apex, as the
            classic phantom does; a probe with a far apex needs it near its skin line).
    """

    echogenicity: np.ndarray = field(default_factory=lambda: ECHOGENICITY)
    specular: np.ndarray = field(default_factory=lambda: SPECULAR)
    attenuation: np.ndarray = field(default_factory=lambda: ATTENUATION_DB_CM_MHZ)
    display_smoothing: float = 0.8
    extra_attenuation: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    beam_gain: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    tgc_origin_mm: float = 0.0


CLASSIC_ACOUSTICS = Acoustics()


@dataclass(frozen=True)
class _BeamGrid:
    r: np.ndarray
    theta: np.ndarray
    phi: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.r), len(self.theta), len(self.phi)

    def step(self, values: np.ndarray) -> float:
        return float(values[1] - values[0]) if len(values) > 1 else 1.0


def _beam_grid(probe: Probe, max_range_mm: float) -> _BeamGrid:
    dr = probe.axial_sigma_mm / _AXIAL_SAMPLES_PER_SIGMA
    r = np.arange(probe.radius_mm, max_range_mm + dr, dr)
    n_theta = (
        int(math.ceil(2 * probe.half_angle_lateral_rad * _ANGULAR_SAMPLES_PER_SIGMA / probe.lateral_sigma_rad)) + 1
    )
    theta = np.linspace(-probe.half_angle_lateral_rad, probe.half_angle_lateral_rad, n_theta)
    if probe.half_angle_elevation_rad > 0:
        step = probe.elevation_sigma_rad / _ANGULAR_SAMPLES_PER_SIGMA
        n_phi = int(math.ceil(2 * probe.half_angle_elevation_rad / step)) + 1
        phi = np.linspace(-probe.half_angle_elevation_rad, probe.half_angle_elevation_rad, n_phi)
    else:
        phi = np.zeros(1)
    return _BeamGrid(r, theta, phi)


def _max_range(tissues: Image, probe: Probe) -> float:
    """Range (mm) from the apex to the farthest corner of the grid: where the beams stop."""
    corners = np.array(
        [
            [i, j, k]
            for i in (0, tissues.shape[0] - 1)
            for j in (0, tissues.shape[1] - 1)
            for k in (0, tissues.shape[2] - 1)
        ],
        dtype=np.float64,
    )
    return float(np.linalg.norm(tissues.ijk_to_ras_points(corners) - probe.apex, axis=1).max())


def beam_sample_count(tissues: Image, probe: Probe) -> int:
    """How many beam-space samples :func:`simulate_scan` draws for this grid and probe (its cost)."""
    return int(np.prod(_beam_grid(probe, _max_range(tissues, probe)).shape))


def _beam_directions(probe: Probe, grid: _BeamGrid) -> np.ndarray:
    """Unit direction of every beam, shape (n_theta, n_phi, 3)."""
    tan_t, tan_p = np.meshgrid(np.tan(grid.theta), np.tan(grid.phi), indexing="ij")
    local = np.stack([tan_t, np.ones_like(tan_t), tan_p], axis=-1)
    local /= np.linalg.norm(local, axis=-1, keepdims=True)
    return np.asarray(local @ probe.axes.T)


@dataclass(frozen=True)
class BeamEnvelope:
    """Detected echo amplitude in beam space, after TGC: ``values[r, theta, phi]`` on the given axes."""

    values: np.ndarray
    r_mm: np.ndarray
    theta_rad: np.ndarray
    phi_rad: np.ndarray


def simulate_bmode(
    tissues: Image,
    probe: Probe,
    head: Ellipsoid,
    falx_normal: np.ndarray,
    abdominal_wall_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate the B-mode image of a tissue map; returns uint8 values on the tissue map's grid.

    Args:
        tissues: tissue codes (:class:`Tissue`) with their grid.
        probe: probe pose and settings.
        head: the outer skull ellipsoid, whose normals give the skull's angle of incidence.
        falx_normal: unit normal of the midline (falx) plane.
        abdominal_wall_mm: thickness of the maternal abdominal wall, the source of reverberation.
        rng: source of the scatterers, texture and noise.
    """
    return simulate_scan(tissues, probe, head, falx_normal, abdominal_wall_mm, rng)[0]


def simulate_scan(
    tissues: Image,
    probe: Probe,
    head: Ellipsoid,
    falx_normal: np.ndarray,
    abdominal_wall_mm: float,
    rng: np.random.Generator,
    acoustics: Acoustics = CLASSIC_ACOUSTICS,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`simulate_bmode` with other acoustics, also returning the field-of-view mask (bool, same grid)."""
    from scipy.ndimage import gaussian_filter

    envelope = beam_envelope(tissues, probe, head, falx_normal, abdominal_wall_mm, rng, acoustics)
    display = _log_compress(envelope.values, probe.dynamic_range_db)
    # Scanners smooth the detected image a little (speckle reduction) before display.
    smoothing = acoustics.display_smoothing
    display = gaussian_filter(display, (smoothing, smoothing, smoothing if display.shape[2] > 1 else 0.0))
    grid = _BeamGrid(envelope.r_mm, envelope.theta_rad, envelope.phi_rad)
    return _scan_convert(display, grid, probe, tissues)


def beam_envelope(
    tissues: Image,
    probe: Probe,
    head: Ellipsoid,
    falx_normal: np.ndarray,
    abdominal_wall_mm: float,
    rng: np.random.Generator,
    acoustics: Acoustics = CLASSIC_ACOUSTICS,
) -> BeamEnvelope:
    """Steps 1-4 of the model up to envelope detection (see the module docstring), in beam space."""
    from scipy.ndimage import gaussian_filter

    grid = _beam_grid(probe, _max_range(tissues, probe))
    directions = _beam_directions(probe, grid)
    echo, attenuation = _beam_echoes(tissues, probe, grid, directions, head, falx_normal, rng, acoustics)
    if acoustics.beam_gain is not None:
        echo *= np.asarray(acoustics.beam_gain(grid.theta, grid.phi), dtype=np.float32)[None]
    if probe.texture_sigma > 0:
        echo *= _texture(echo.shape, probe.texture_sigma, rng)
    dr_cm = grid.step(grid.r) / 10.0
    # Two-way attenuation accumulated along each beam (axis 0): bone shadows everything behind it.
    loss_db = 2.0 * probe.frequency_mhz * np.cumsum(attenuation * dr_cm, axis=0)
    echo *= (10.0 ** (-loss_db / 20.0)).astype(np.float32)
    sigma = (
        probe.axial_sigma_mm / grid.step(grid.r),
        probe.lateral_sigma_rad / grid.step(grid.theta),
        probe.elevation_sigma_rad / grid.step(grid.phi) if len(grid.phi) > 1 else 0.0,
    )
    iq = (gaussian_filter(echo.real, sigma) + 1j * gaussian_filter(echo.imag, sigma)).astype(np.complex64)
    _add_reverberation(iq, grid, abdominal_wall_mm, probe.reverberation_db)
    noise_level = float(ECHOGENICITY[Tissue.BRAIN]) * 10.0 ** (probe.noise_db / 20.0)
    iq += (noise_level / math.sqrt(2.0)) * (
        rng.standard_normal(iq.shape, dtype=np.float32) + 1j * rng.standard_normal(iq.shape, dtype=np.float32)
    )
    # Time-gain compensation: the sonographer's setting, a little below soft-tissue attenuation.
    tgc_db_per_cm = 2.0 * probe.frequency_mhz * 0.4 + probe.tgc_error_db_per_cm
    tgc = 10.0 ** ((tgc_db_per_cm * (grid.r - acoustics.tgc_origin_mm) / 10.0 + probe.gain_db) / 20.0)
    envelope = np.abs(iq) * tgc[:, None, None].astype(np.float32)
    return BeamEnvelope(envelope, grid.r, grid.theta, grid.phi)


def _beam_echoes(
    tissues: Image,
    probe: Probe,
    grid: _BeamGrid,
    directions: np.ndarray,
    head: Ellipsoid,
    falx_normal: np.ndarray,
    rng: np.random.Generator,
    acoustics: Acoustics = CLASSIC_ACOUSTICS,
) -> tuple[np.ndarray, np.ndarray]:
    """Echo amplitudes (complex, before the PSF) and attenuation (dB/cm/MHz) at every beam sample."""
    from scipy.ndimage import map_coordinates

    shape = grid.shape
    echo = np.empty(shape, dtype=np.complex64)
    attenuation = np.empty(shape, dtype=np.float32)
    ras_to_ijk = tissues.ras_to_ijk()
    rows_per_chunk = max(1, 2_000_000 // (shape[1] * shape[2]))
    for start in range(0, shape[0], rows_per_chunk):
        r = grid.r[start : start + rows_per_chunk]
        points = (probe.apex + r[:, None, None, None] * directions[None]).reshape(-1, 3)
        ijk = points @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
        codes = map_coordinates(tissues.array, ijk.T, order=0, mode="constant", cval=int(Tissue.MATERNAL))
        amplitude = acoustics.echogenicity[codes]
        specular = acoustics.specular[codes]
        rays = np.broadcast_to(directions[None], (len(r), *directions.shape)).reshape(-1, 3)
        # Specular echoes depend on the angle between beam and surface: a surface along the beam drops out.
        skull = codes == Tissue.SKULL
        if skull.any():
            specular[skull] *= _incidence_factor(head.outward_normals(points[skull]), rays[skull])
        falx = codes == Tissue.FALX
        if falx.any():
            specular[falx] *= _incidence_factor(falx_normal[np.newaxis], rays[falx])
        n = len(codes)
        scatter = (
            rng.standard_normal(n, dtype=np.float32) + 1j * rng.standard_normal(n, dtype=np.float32)
        ) / math.sqrt(2.0)
        echo[start : start + len(r)] = (amplitude * scatter + specular).reshape(len(r), *shape[1:])
        loss = acoustics.attenuation[codes]
        if acoustics.extra_attenuation is not None:
            loss = loss + acoustics.extra_attenuation(points, codes)
        attenuation[start : start + len(r)] = loss.reshape(len(r), *shape[1:])
    return echo, attenuation


def _texture(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative variation of echogenicity (lognormal, ``sigma`` in log units) over a few cells.

    Drawn on a grid four times coarser per axis and interpolated up, which is much cheaper than filtering
    white noise at full size.
    """
    from scipy.ndimage import gaussian_filter, zoom

    coarse_shape = tuple(max(2, -(-n // 4)) if n > 1 else 1 for n in shape)
    field = gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), (1.0, 1.0, 1.0 if shape[2] > 1 else 0))
    field /= max(float(field.std()), 1e-6)
    factors = [n / c for n, c in zip(shape, coarse_shape, strict=True)]
    return np.exp(sigma * zoom(field, factors, order=1, grid_mode=True, mode="nearest")).astype(np.float32)


def _incidence_factor(normals: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Relative specular echo strength: 1 at normal incidence, 0.04 for a surface parallel to the beam."""
    cosine = np.abs(np.sum(normals * rays, axis=1))
    return np.asarray(0.04 + 0.96 * cosine**2, dtype=np.float32)


def _add_reverberation(iq: np.ndarray, grid: _BeamGrid, wall_mm: float, reverberation_db: float) -> None:
    """Multiple reflections between probe and abdominal wall: delayed, fainter copies of the wall's echoes."""
    wall_samples = int(round(wall_mm / grid.step(grid.r)))
    if wall_samples < 1 or wall_samples >= iq.shape[0] // 3:
        return
    gain = np.float32(10.0 ** (reverberation_db / 20.0))
    near = iq[:wall_samples].copy()
    for echo_order in (1, 2):
        delay = echo_order * wall_samples
        length = min(wall_samples, iq.shape[0] - delay)
        iq[delay : delay + length] += gain**echo_order * near[:length]


def _log_compress(envelope: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """Map the envelope to [0, 255]: 0 dB (a skull echo) is white, ``dynamic_range_db`` below it black."""
    level_db = 20.0 * np.log10(np.maximum(envelope, 1e-12) / DISPLAY_REFERENCE)
    return np.clip((level_db + dynamic_range_db) / dynamic_range_db * 255.0, 0.0, 255.0).astype(np.float32)


def _scan_convert(display: np.ndarray, grid: _BeamGrid, probe: Probe, target: Image) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate the beam-space image onto the target grid; black outside the field of view.

    Returns the uint8 image and the field-of-view mask (bool) on the target grid.
    """
    from scipy.ndimage import map_coordinates

    output = np.zeros(target.shape, dtype=np.uint8)
    field_of_view = np.zeros(target.shape, dtype=bool)
    n_i, n_j, n_k = target.shape
    i, j = np.meshgrid(np.arange(n_i, dtype=np.float64), np.arange(n_j, dtype=np.float64), indexing="ij")
    for k in range(n_k):
        ijk = np.stack([i.ravel(), j.ravel(), np.full(i.size, float(k))], axis=1)
        r, theta, phi = probe.beam_coordinates(target.ijk_to_ras_points(ijk))
        inside = (np.abs(theta) <= probe.half_angle_lateral_rad) & (r >= grid.r[0]) & (r <= grid.r[-1])
        if probe.half_angle_elevation_rad > 0:
            inside &= np.abs(phi) <= probe.half_angle_elevation_rad
        coordinates = np.stack(
            [
                (r[inside] - grid.r[0]) / grid.step(grid.r),
                (theta[inside] - grid.theta[0]) / grid.step(grid.theta),
                (phi[inside] - grid.phi[0]) / grid.step(grid.phi) if len(grid.phi) > 1 else np.zeros(int(inside.sum())),
            ]
        )
        values = map_coordinates(display, coordinates, order=1, mode="nearest")
        plane = np.zeros(i.size, dtype=np.uint8)
        plane[inside] = np.rint(values).astype(np.uint8)
        output[:, :, k] = plane.reshape(n_i, n_j)
        field_of_view[:, :, k] = inside.reshape(n_i, n_j)
    return output, field_of_view
