"""Read a dataset with LeRobot 0.4.4's own LeRobotDataset and print what it sees, as JSON.

Runs inside the separate venv built by setup_venv.sh (never in the project's venv). Usage:
    python read_with_lerobot.py DATASET_ROOT INDEX [INDEX ...]
Prints {"len", "num_episodes", "fps", "features", "items": {index: {...}}} on stdout's last line.
"""

import json
import sys
import types

import datasets  # noqa: F401  (imported before the stub below: it probes for torchvision itself)
import numpy as np
import torch

# lerobot.datasets imports torchvision at module level, and no torchvision build can be imported
# beside torch 2.13 CPU here (shared/notes/style.md). The reader path we check (parquet via HF
# datasets, videos via torchcodec) never calls it, so a stub of the names that are imported is
# enough; using any of them fails loudly.
tv = types.ModuleType("torchvision")
tv_transforms = types.ModuleType("torchvision.transforms")
tv_v2 = types.ModuleType("torchvision.transforms.v2")
tv_functional = types.ModuleType("torchvision.transforms.v2.functional")


class _Transform(torch.nn.Module):
    pass


tv_v2.Transform = _Transform
tv_v2.functional = tv_functional
tv_transforms.v2 = tv_v2
tv.transforms = tv_transforms
tv.io = types.ModuleType("torchvision.io")


def _unavailable(*args, **kwargs):
    raise RuntimeError("torchvision is stubbed in this check")


tv.set_video_backend = _unavailable
tv_transforms.ToTensor = _unavailable
sys.modules.update(
    {
        "torchvision": tv,
        "torchvision.transforms": tv_transforms,
        "torchvision.transforms.v2": tv_v2,
        "torchvision.transforms.v2.functional": tv_functional,
        "torchvision.io": tv.io,
    }
)

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def main() -> None:
    root = sys.argv[1]
    indices = [int(i) for i in sys.argv[2:]]
    probe = LeRobotDataset("local/clap", root=root, video_backend="torchcodec")
    fps = probe.fps
    delta = {"action": [i / fps for i in range(32)]} if "action" in probe.features else None
    ds = LeRobotDataset("local/clap", root=root, delta_timestamps=delta, video_backend="torchcodec")
    out = {
        "len": len(ds),
        "num_episodes": ds.num_episodes,
        "fps": fps,
        "features": sorted(ds.features),
        "camera_keys": list(ds.meta.camera_keys),
        "items": {},
    }
    for i in indices:
        item = ds[i]
        rec = {}
        for key, value in item.items():
            if isinstance(value, torch.Tensor):
                arr = value.numpy()
                if key in ds.meta.camera_keys:
                    rec[key] = {"shape": list(arr.shape), "pixels": (arr * 255).round().astype(np.uint8).tolist()}
                else:
                    rec[key] = arr.tolist()
            else:
                rec[key] = value
        out["items"][str(i)] = rec
    print(json.dumps(out))


if __name__ == "__main__":
    main()
