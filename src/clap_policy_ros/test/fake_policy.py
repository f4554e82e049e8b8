"""A small deterministic test double of clap_train.policy.ClapPolicy (contract 5), NOT of ROS.

Used by the node tests through the node's ``policy_class`` parameter, where a behaviour the real
model cannot be made to show on demand is needed (a NaN chunk). Its chunk depends on the mean of
the head image, the state, the seed and the instruction, so tests can check values end to end.
It implements clap_train.interface.Policy and imports only that module: clap_train.policy loads
torch and transformers into the test process, whose camera thread then misses its 30 Hz.
"""

import json
import pathlib
import time

import numpy as np
from clap_train.interface import DEFAULT_LAYOUT, Prediction

YAW = DEFAULT_LAYOUT.indices("yaw")


class FakePolicy:
    chunk_len = 16
    action_dim = DEFAULT_LAYOUT.dim
    action_names = DEFAULT_LAYOUT.names
    camera_names = ["head", "left_wrist", "right_wrist"]
    rate_hz = 30.0
    image_size = 32

    def __init__(self, config):
        self.sleep = float(config.get("sleep", 0.02))
        self.calls = 0

    @classmethod
    def load(cls, path, device="cpu", warmup=True):
        return cls(json.loads((pathlib.Path(path) / "fake.json").read_text()))

    @staticmethod
    def expected(head_mean: float, seed: int, chunk_len: int = 16) -> np.ndarray:
        t = np.arange(chunk_len)[:, None] / chunk_len
        base = np.array([0.3, 0.2, 0.5, 0.0, 0.0, 3.0, 0.5,
                         0.3, -0.2, 0.5, 0.0, 0.0, -3.0, 0.5])
        out = base + 0.01 * t * (1 + np.arange(14)) + 0.001 * (head_mean / 255.0) + 1e-4 * seed
        out[:, YAW] = (out[:, YAW] + np.pi) % (2 * np.pi) - np.pi
        return out.astype(np.float32)

    def predict(self, images, instruction, state=None, mode="rf", *, prev_chunk=None,
                inference_delay=0, seed=0):
        start = time.perf_counter()
        time.sleep(self.sleep)
        self.calls += 1
        actions = self.expected(float(np.mean(images["head"])), seed, self.chunk_len)
        if "nan" in instruction:
            actions[3, 2] = np.nan
        return Prediction(actions, f"subtask of {instruction}", time.perf_counter() - start, mode)
