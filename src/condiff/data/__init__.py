"""Images from disk: I/O, paired folders, degradation tasks, the bundled photographs."""

from typing import TYPE_CHECKING

from condiff._lazy import lazy_exports

_DS, _IO = "condiff.data.datasets", "condiff.data.io"
_MEMBERS = {
    "BUNDLED": "condiff.data.bundled",
    "TASKS": "condiff.data.tasks",
    "GlobalSampleSampler": _DS,
    "ImageError": _IO,
    "ImageSource": _DS,
    "TrainCrops": _DS,
    "ValCrops": _DS,
    "check_channels": _DS,
    "export_bundled": "condiff.data.bundled",
    "full_images": _DS,
    "list_images": _IO,
    "make_source": _DS,
    "make_task": "condiff.data.tasks",
    "probe_image": _IO,
    "read_image": _IO,
    "split": _DS,
    "write_image": _IO,
}
__getattr__ = lazy_exports(__name__, _MEMBERS)
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

if TYPE_CHECKING:
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
