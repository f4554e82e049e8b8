"""Write a small dataset with LeRobot 0.4.4's own writer (the other direction of the check).

Runs inside the venv built by setup_venv.sh. Usage: python write_with_lerobot.py OUT_ROOT
Two episodes (20 and 12 frames) with one 32x32 camera, a 14-D state and action whose values encode
(episode, frame), so the reader on the project side can check every value it loads.
"""

import sys

import read_with_lerobot  # noqa: F401, I100  (installs the torchvision stub before lerobot is imported)
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

NAMES = [f"{arm}_{s}" for arm in ("left", "right") for s in ("x", "y", "z", "roll", "pitch", "yaw", "gripper")]


def frame_image(ep: int, t: int) -> np.ndarray:
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :, 0] = 40 + 5 * t
    img[:, :, 1] = 60 + 60 * ep
    img[:, :, 2] = np.linspace(0, 200, 32, dtype=np.uint8)[None, :]
    return img


def main() -> None:
    features = {
        "observation.images.head": {"dtype": "video", "shape": (32, 32, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (14,), "names": NAMES},
        "action": {"dtype": "float32", "shape": (14,), "names": NAMES},
    }
    ds = LeRobotDataset.create("local/written", fps=30, features=features, root=sys.argv[1], use_videos=True)
    for ep, n in enumerate((20, 12)):
        for t in range(n):
            value = np.full(14, 0.1 * t + ep, np.float32)
            ds.add_frame(
                {"observation.images.head": frame_image(ep, t), "observation.state": value, "action": value + 0.05,
                 "task": f"task {ep}"}
            )
        ds.save_episode()
    ds.finalize()
    print("written", ds.num_episodes, ds.num_frames)


if __name__ == "__main__":
    main()
