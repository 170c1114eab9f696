"""Turn a run's newest checkpoint into shipped pretrained weights: ``OUT/NAME/config.json`` and
``model.safetensors`` (the EMA weights cast to fp16), as ``condiff/weights/NAME`` holds them.

    python scripts/ship_weights.py RUN OUT/NAME
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from condiff.checkpoint import read_weights, resolve_checkpoint, weights_file


def main() -> None:
    run, dest = Path(sys.argv[1]), Path(sys.argv[2])
    folder = resolve_checkpoint(run, need_state=False)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "config.json", dest / "config.json")
    ema = read_weights(weights_file(folder, ema=True))
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in ema.items()}
    save_file(half, str(dest / "model.safetensors"), metadata={"source": str(folder)})
    print(f"wrote {dest} from {folder}")


if __name__ == "__main__":
    main()
