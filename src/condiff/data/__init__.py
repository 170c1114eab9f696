"""Images from disk: I/O, paired folders, degradation tasks, the bundled photographs."""

from condiff.data.bundled import BUNDLED, export_bundled
from condiff.data.datasets import (
    GlobalSampleSampler,
    ImageSource,
    TrainCrops,
    ValCrops,
    check_channels,
    full_images,
    make_source,
    split,
)
from condiff.data.io import ImageError, list_images, probe_image, read_image, write_image
from condiff.data.tasks import TASKS, make_task

__all__ = [
    "BUNDLED",
    "TASKS",
    "GlobalSampleSampler",
    "ImageError",
    "ImageSource",
    "TrainCrops",
    "ValCrops",
    "check_channels",
    "export_bundled",
    "full_images",
    "list_images",
    "make_source",
    "make_task",
    "probe_image",
    "read_image",
    "split",
    "write_image",
]
