"""Tissue classes of the phantom and their acoustic properties.

Echogenicity is the mean backscatter amplitude of diffuse scatterers (relative units), ``specular`` the amplitude
of a coherent mirror-like echo that depends on the beam's angle of incidence (bone, falx), and attenuation is in
dB/cm/MHz (one way). Values are typical of obstetric soft tissue, fluid and fetal bone, chosen so that the image
looks like a clinical scan: fluid black, brain dark grey, skull and bones bright with shadows behind them.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue codes of the phantom's tissue map (uint8)."""

    MATERNAL = 0
    FAT = 1
    MUSCLE = 2
    UTERUS = 3
    AMNIOTIC_FLUID = 4
    PLACENTA = 5
    FETAL_BODY = 6
    FETAL_BONE = 7
    SKULL = 8
    SUTURE = 9
    BRAIN = 10
    CSF = 11
    CHOROID_PLEXUS = 12
    THALAMUS = 13
    FALX = 14
    CEREBELLUM = 15


#                      echogenicity, specular, attenuation dB/cm/MHz
_PROPERTIES = {
    Tissue.MATERNAL: (0.30, 0.0, 0.6),
    Tissue.FAT: (0.12, 0.0, 0.5),
    Tissue.MUSCLE: (0.35, 0.0, 0.9),
    Tissue.UTERUS: (0.25, 0.0, 0.7),
    Tissue.AMNIOTIC_FLUID: (0.004, 0.0, 0.005),
    Tissue.PLACENTA: (0.40, 0.0, 0.8),
    Tissue.FETAL_BODY: (0.20, 0.0, 0.6),
    Tissue.FETAL_BONE: (0.5, 2.6, 9.0),
    Tissue.SKULL: (0.2, 3.0, 3.5),
    Tissue.SUTURE: (0.15, 0.0, 0.6),
    Tissue.BRAIN: (0.13, 0.0, 0.5),
    Tissue.CSF: (0.004, 0.0, 0.005),
    Tissue.CHOROID_PLEXUS: (0.5, 0.0, 0.6),
    Tissue.THALAMUS: (0.07, 0.0, 0.5),
    Tissue.FALX: (0.2, 0.35, 0.6),
    Tissue.CEREBELLUM: (0.25, 0.0, 0.5),
}

DISPLAY_REFERENCE = 3.0
"""Echo amplitude shown at full brightness (0 dB): a skull echo at normal incidence."""

ECHOGENICITY = np.array([_PROPERTIES[t][0] for t in Tissue], dtype=np.float32)
"""Diffuse backscatter amplitude per tissue code."""

SPECULAR = np.array([_PROPERTIES[t][1] for t in Tissue], dtype=np.float32)
"""Coherent (specular) echo amplitude per tissue code, before the angle-of-incidence factor."""

ATTENUATION_DB_CM_MHZ = np.array([_PROPERTIES[t][2] for t in Tissue], dtype=np.float32)
"""One-way attenuation per tissue code."""
