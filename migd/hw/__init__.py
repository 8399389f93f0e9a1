"""Hardware: the two clocks and the profiles' cost models."""

from ._clock import Clock, VirtualClock, mock_clock
from ._dmacost import dma_schedule
from ._profile import PROFILES, ZEN3_CPU, CpuModel, DmaModel, HardwareProfile, get_profile

__all__ = ["PROFILES", "ZEN3_CPU", "Clock", "CpuModel", "DmaModel", "HardwareProfile",
           "VirtualClock", "dma_schedule", "get_profile", "mock_clock"]
