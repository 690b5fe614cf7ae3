"""Moved to ``pmtrec_lab.mtl.pmtrec.signal`` (PMTRec's stages, issue 25); this module keeps the
old import path working."""

from pmtrec_lab.mtl.pmtrec.signal import (
    MAX_EXPONENT,
    NORM_MODES,
    FrequencyExponent,
    batch_log_slope,
    frequency_free,
)

__all__ = ["MAX_EXPONENT", "NORM_MODES", "FrequencyExponent", "batch_log_slope", "frequency_free"]
