"""The emulated dmaengine: devices, channels as async workers, descriptor rings as columns."""

from ._chanctl import (
    CH_BUSY_NS,
    CH_BYTES,
    CH_DESCS,
    CH_LAST_DONE,
    NR_CH_COLUMNS,
    folios_copy_dma,
    new_ctl,
)
from ._charge import book_slices
from ._dmaengine import (
    ChannelStatistics,
    DmaChannel,
    DmaDevice,
    slice_bounds,
    slice_bounds_array,
)
from ._ring import DescRing, RangeCallback
from ._sgmap import sg_nents, sg_nents_slices

__all__ = ["CH_BUSY_NS", "CH_BYTES", "CH_DESCS", "CH_LAST_DONE", "NR_CH_COLUMNS",
           "ChannelStatistics", "DescRing", "DmaChannel", "DmaDevice", "RangeCallback",
           "book_slices", "folios_copy_dma", "new_ctl", "sg_nents", "sg_nents_slices",
           "slice_bounds", "slice_bounds_array"]
