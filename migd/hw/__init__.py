"""Hardware: the two clocks and the profiles' cost models."""

from ._clock import Clock, VirtualClock, mock_clock
from ._profile import PROFILES, ZEN3_CPU, CpuModel, DmaModel, HardwareProfile, get_profile

__all__ = ["PROFILES", "ZEN3_CPU", "Clock", "CpuModel", "DmaModel", "HardwareProfile",
           "VirtualClock", "get_profile", "mock_clock"]
