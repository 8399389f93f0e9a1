"""The emulated dmaengine: devices, channels as async workers, descriptors."""

from ._dmaengine import (
    ChannelStatistics,
    Descriptor,
    DmaChannel,
    DmaDevice,
    dcbm_nr_channels,
    slice_bounds,
)

__all__ = ["ChannelStatistics", "Descriptor", "DmaChannel", "DmaDevice", "dcbm_nr_channels",
           "slice_bounds"]
