"""Hardware: the two clocks and the profiles' cost models (profiles are TOML data)."""

from ._clock import Clock, VirtualClock, mock_clock, quiet_for
from ._dmacost import chunk_share, dma_schedule
from ._profile import CpuModel, DmaModel, HardwareProfile
from ._toml import (
    DOCS,
    PROFILES,
    ProfileError,
    builtin_names,
    builtin_text,
    dump_profile,
    get_profile,
    load_profile,
    parse_profile,
)

__all__ = ["DOCS", "PROFILES", "Clock", "CpuModel", "DmaModel", "HardwareProfile",
           "ProfileError", "VirtualClock", "builtin_names", "builtin_text", "chunk_share",
           "dma_schedule",
           "dump_profile", "get_profile", "load_profile", "mock_clock", "parse_profile",
           "quiet_for"]
