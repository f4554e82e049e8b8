"""One camera of a bag to mp4: decode the frames alignment picked, resize, encode, sample statistics.

``encode_camera`` makes one pass over the camera's messages for all the parts of a bag (one mp4
each). PyAV encodes outside the GIL, so the converter runs one camera per thread.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from clap_train.data.recording.bagread import BagError, iter_images
from clap_train.data.contract import Contract
from clap_train.data.images import resize_rgb
from clap_train.data.stats import image_stats
from clap_train.data.video import DEFAULT_CRF, DEFAULT_GOP, Mp4Writer, VideoError

STATS_SAMPLES = 48  # frames per camera and episode used for image statistics


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """How the cameras are encoded (libx264 quality, keyframe interval, preset, threads)."""

    crf: int = DEFAULT_CRF
    gop: int = DEFAULT_GOP
    preset: str = "ultrafast"
    camera_threads: bool = True  # encode the cameras of an episode in parallel threads


def encode_camera(
    bag, contract: Contract, cam_name: str, parts: list[tuple[np.ndarray, pathlib.Path]], opts: EncodeOptions
) -> list[dict]:
    """Decode the selected images of one camera and write one mp4 per part, in one pass over the bag.

    ``parts``: per part, the message index of each frame (increasing across parts) and its mp4 path.
    Returns each part's info (file, shape, topic, stats).
    """
    spec = contract.camera(cam_name)
    fps = contract.rate_hz
    writer = None
    shape = None
    infos = []
    images = iter_images(bag, contract, cam_name, np.unique(np.concatenate([picks for picks, _ in parts])))
    cur_i, cur = -1, None
    try:
        for picks, path in parts:
            n = len(picks)
            sample_at = set(np.linspace(0, n - 1, min(STATS_SAMPLES, n)).astype(int).tolist())
            samples = []
            for k, want in enumerate(picks):
                while cur_i < want:
                    cur_i, cur = next(images)
                    if spec.size is not None:
                        cur = resize_rgb(cur, spec.size[0], spec.size[1])
                    if shape is None:
                        shape = cur.shape[:2]
                    elif cur.shape[:2] != shape:
                        raise BagError(
                            bag,
                            f"image size changes from {shape[0]}x{shape[1]} to {cur.shape[0]}x{cur.shape[1]} "
                            f"at message {cur_i}; set the camera's size in the contract to resize",
                            spec.topic,
                        )
                if writer is None:
                    try:
                        writer = Mp4Writer(
                            path, fps, shape[0], shape[1], crf=opts.crf, gop=opts.gop, preset=opts.preset
                        )
                    except VideoError as exc:
                        raise BagError(bag, str(exc), spec.topic) from exc
                writer.write(cur)
                if k in sample_at:
                    samples.append(cur)
            writer.close()
            writer = None
            infos.append(
                {
                    "file": path.name,
                    "shape": [int(shape[0]), int(shape[1])],
                    "topic": spec.topic,
                    "stats": image_stats(samples),
                }
            )
    finally:
        if writer is not None:
            writer.abort()
        images.close()
    return infos
