"""The default data: real photographs that scikit-image ships inside its package (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condiff.data.io import read_image, write_image

# Natural photographs and micrographs from skimage.data (synthetic test patterns left out).
BUNDLED = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)


def bundled_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def export_bundled(dest: str | Path, color: str = "gray") -> list[Path]:
    """Write the bundled photographs into ``dest`` as PNG files (once; existing files are kept)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in BUNDLED:
        src = bundled_dir() / name
        if not src.is_file():
            continue  # a scikit-image release without this file
        path = dest / (Path(name).stem + ".png")
        if not path.exists():
            x, _ = read_image(src, color)
            write_image(path, x.astype(np.float32))
        out.append(path)
    if not out:
        raise FileNotFoundError(f"no bundled photographs found under {bundled_dir()}")
    return out
