"""The 11 passive-microwave sources of the paper and what is known about each sensor.

One table is the single place that says, per sensor/platform pair, which TC-PRIMED v01r01 swath
group holds its ~37 GHz and ~89 GHz channels and under which variable names (the paper's four
channels 37H, 37V, 89H, 89V, nearest frequencies where exact ones do not exist), and the sensor
characteristics an entry gets as ``characs``. Footprints (IFOV) are approximate nominal values
from the sensors' public specifications (km, along × across); conical scanners keep one footprint
across the scan, so nadir and edge values are not repeated.

The characteristics vector (K = 8): the 4 channel frequencies, then the along/across footprints of
the 37 GHz band and of the 89 GHz band, each min-max scaled across the 11 sources. The authors'
code keeps only the 89 GHz footprints because of a dict overwrite; here both bands are kept
(``docs/design.md``: the intended behaviour is implemented, not the defect).

The ``synth_*`` fields only drive the embedded synthetic generator (swath widths, pixel spacing of
the 89 GHz grid, how much coarser the 37 GHz grid is, noise, years in orbit, local overpass time);
they are realistic in kind, scaled down in size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS: tuple[str, ...] = ("37H", "37V", "89H", "89V")
CHARAC_NAMES: tuple[str, ...] = ("freq_37H", "freq_37V", "freq_89H", "freq_89V",
                                 "ifov37_along_km", "ifov37_across_km", "ifov89_along_km", "ifov89_across_km")


@dataclass(frozen=True)
class Source:
    """One sensor/platform pair: where its channels live in a v01r01 file, and its characteristics."""

    sensor: str
    platform: str
    swath37: str
    swath89: str
    variables: tuple[str, str, str, str]  # in CHANNELS order
    ifov37: tuple[float, float]  # km, along × across
    ifov89: tuple[float, float]
    synth_swath_km: float  # full swath width
    synth_spacing89: tuple[float, float]  # km between scans, between pixels (89 GHz grid)
    synth_factor37: tuple[int, int]  # 37 GHz grid is this many times coarser (scans, pixels)
    synth_nedt: tuple[float, float]  # K, 37 and 89 GHz
    synth_years: tuple[int, int]  # first and last season in orbit
    synth_local_time: float | None  # ascending local time (h); None = precessing orbit
    synth_incidence: float  # degrees

    @property
    def name(self) -> str:
        return f"{self.sensor}_{self.platform}"

    @property
    def frequencies(self) -> tuple[float, float, float, float]:
        """GHz, parsed from the variable names as the authors do (strip TB_, A/B scan and H/V)."""
        return tuple(float(v.removeprefix("TB_").lstrip("AB").rstrip("HVQ")) for v in self.variables)  # type: ignore[return-value]

    def raw_characs(self) -> np.ndarray:
        return np.array([*self.frequencies, *self.ifov37, *self.ifov89], dtype=np.float64)


def _ssmi(platform: str, years: tuple[int, int], lt: float) -> Source:
    return Source("SSMI", platform, "S1", "S2", ("TB_37.0H", "TB_37.0V", "TB_85.5H", "TB_85.5V"),
                  (37.0, 28.0), (15.0, 13.0), 1400.0, (12.5, 12.5), (2, 2), (0.6, 1.1), years, lt, 53.1)


def _ssmis(platform: str, years: tuple[int, int], lt: float) -> Source:
    return Source("SSMIS", platform, "S2", "S4", ("TB_37.0H", "TB_37.0V", "TB_91.665H", "TB_91.665V"),
                  (44.0, 27.0), (15.0, 13.0), 1700.0, (12.5, 12.5), (2, 2), (0.4, 0.5), years, lt, 53.1)


_TABLE: tuple[Source, ...] = (
    Source("AMSR2", "GCOMW1", "S4", "S5", ("TB_36.5H", "TB_36.5V", "TB_A89.0H", "TB_A89.0V"),
           (12.0, 7.0), (5.0, 3.0), 1450.0, (10.0, 5.0), (1, 2), (0.3, 1.1), (2012, 2030), 13.5, 55.0),
    Source("GMI", "GPM", "S1", "S1", ("TB_36.64H", "TB_36.64V", "TB_89.0H", "TB_89.0V"),
           (15.6, 9.4), (7.2, 4.4), 885.0, (13.2, 4.0), (1, 1), (0.4, 0.3), (2014, 2030), None, 52.8),
    Source("TMI", "TRMM", "S2", "S3", ("TB_37.0H", "TB_37.0V", "TB_85.5H", "TB_85.5V"),
           (16.0, 9.0), (7.0, 5.0), 878.0, (13.9, 4.2), (1, 2), (0.6, 0.9), (1998, 2014), None, 52.8),
    _ssmi("F11", (1991, 2000), 17.0),
    _ssmi("F13", (1995, 2009), 17.8),
    _ssmi("F14", (1997, 2008), 20.5),
    _ssmi("F15", (2000, 2016), 21.3),
    _ssmis("F16", (2003, 2030), 19.7),
    _ssmis("F17", (2006, 2030), 17.7),
    _ssmis("F18", (2009, 2030), 19.9),
    _ssmis("F19", (2014, 2016), 18.8),
)

SOURCES: dict[str, Source] = {s.name: s for s in _TABLE}
SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)


def characs_table() -> dict[str, list[float]]:
    """Per source, the characteristics vector min-max scaled across all 11 sources (a fixed table)."""
    raw = np.stack([s.raw_characs() for s in _TABLE])
    lo, hi = raw.min(0), raw.max(0)
    scaled = (raw - lo) / np.where(hi > lo, hi - lo, 1.0)
    return {s.name: [round(float(v), 6) for v in row] for s, row in zip(_TABLE, scaled, strict=True)}


def source_of(sensor: str, platform: str) -> Source | None:
    """The source for a sensor/platform pair from a file name (case-insensitive), or None if unused."""
    return SOURCES.get(f"{sensor.upper()}_{platform.upper()}")


# Every swath group a real v01r01 overpass file of each sensor carries under ``passive_microwave``
# (the NASA PPS 1C XCAL swaths, in their order), with the brightness-temperature variables each
# holds, named as the files name them (``TB_<GHz><pol>``, ``A``/``B`` for AMSR2's two 89 GHz
# scans, ``<centre>_<offset>`` for the 183.31 GHz sounding channels). The reader uses only the
# two swaths named by :class:`Source`; the embedded generator writes all of them.
SENSOR_SWATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "AMSR2": {"S1": ("TB_10.65V", "TB_10.65H"), "S2": ("TB_18.7V", "TB_18.7H"), "S3": ("TB_23.8V", "TB_23.8H"),
              "S4": ("TB_36.5V", "TB_36.5H"), "S5": ("TB_A89.0V", "TB_A89.0H"), "S6": ("TB_B89.0V", "TB_B89.0H")},
    "GMI": {"S1": ("TB_10.65V", "TB_10.65H", "TB_18.7V", "TB_18.7H", "TB_23.8V", "TB_36.64V", "TB_36.64H", "TB_89.0V", "TB_89.0H"),
            "S2": ("TB_166.5V", "TB_166.5H", "TB_183.31_3.0V", "TB_183.31_7.0V")},
    "TMI": {"S1": ("TB_10.65V", "TB_10.65H", "TB_19.35V", "TB_19.35H", "TB_21.3V"), "S2": ("TB_37.0V", "TB_37.0H"),
            "S3": ("TB_85.5V", "TB_85.5H")},
    "SSMI": {"S1": ("TB_19.35V", "TB_19.35H", "TB_22.235V", "TB_37.0V", "TB_37.0H"), "S2": ("TB_85.5V", "TB_85.5H")},
    "SSMIS": {"S1": ("TB_19.35V", "TB_19.35H", "TB_22.235V"), "S2": ("TB_37.0V", "TB_37.0H"),
              "S3": ("TB_150.0H", "TB_183.31_1.0H", "TB_183.31_3.0H", "TB_183.31_6.6H"), "S4": ("TB_91.665V", "TB_91.665H")},
}


def tb_frequency(variable: str) -> float:
    """GHz of a ``TB_`` variable name (the centre frequency for ``TB_183.31_3.0H``)."""
    return float(variable.removeprefix("TB_").split("_")[0].lstrip("AB").rstrip("HVQ"))


def tb_polarization(variable: str) -> str:
    return variable[-1]
