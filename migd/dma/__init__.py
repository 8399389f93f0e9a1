"""The emulated dmaengine: devices, channels as async workers, descriptor rings as columns."""

from ._dmaengine import (
    ChannelStatistics,
    DmaChannel,
    DmaDevice,
    dcbm_nr_channels,
    slice_bounds,
)
from ._ring import DescRing, RangeCallback

__all__ = ["ChannelStatistics", "DescRing", "DmaChannel", "DmaDevice", "RangeCallback",
           "dcbm_nr_channels", "slice_bounds"]
