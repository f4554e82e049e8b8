"""mp4 streams with PyAV: an encoder for the converters, a random-access frame reader, whole clips.

Encoding: H.264 (libx264, yuv420p), constant quality, a short GOP (a keyframe every ``gop``
frames, default 8) so that a random frame costs one seek plus at most ``gop`` - 1 decoded
frames; frame i has pts i in a 1/fps time base, so its timestamp is i / fps (LeRobot's rule).
LeRobot's default codec is AV1; H.264 reads back in LeRobot too and encodes faster here.

Decoding (:class:`VideoFrameReader`): seek to the keyframe at or before the wanted frame and
decode forward; sequential reads continue without seeking. This is the loader's answer to
"random access without decoding a whole video per sample".

``write_mp4`` writes a clip held in memory (the simulation's human-look videos, an evaluation's
rollout video) with its own settings (veryfast, crf 23, the encoder's default GOP).
"""

from __future__ import annotations

import fractions
import os
import pathlib

import av
import numpy as np

DEFAULT_GOP = 8
DEFAULT_CRF = 18


class VideoError(Exception):
    """A video that cannot be written or decoded; the message names the file."""


class Mp4Writer:
    """Write HxWx3 uint8 RGB frames to an mp4 file (H.264), one frame per ``write``."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        height: int,
        width: int,
        *,
        codec: str = "libx264",
        crf: int = DEFAULT_CRF,
        gop: int = DEFAULT_GOP,
        preset: str = "ultrafast",
        threads: int = 1,
    ):
        if height % 2 or width % 2:
            raise VideoError(f"{path}: H.264 (yuv420p) needs even sizes, got {height}x{width}; set the camera's size")
        self.path = pathlib.Path(path)
        self.height, self.width = int(height), int(width)
        self.count = 0
        rate = fractions.Fraction(fps).limit_denominator(1001)
        self._container = av.open(str(self.path), mode="w", format="mp4")
        options = {"crf": str(crf), "preset": preset, "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        if codec != "libx264":
            options = {"g": str(gop)}
        self._stream = self._container.add_stream(codec, rate=rate, options=options)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = fractions.Fraction(1, 1) / rate
        self._stream.codec_context.thread_count = threads

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3):
            raise VideoError(f"{self.path}: frame of shape {rgb.shape}, the stream is {self.height}x{self.width}x3")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoFrameReader:
    """Random access to the frames of one mp4 by index (frame i = pts i * (1/fps))."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        try:
            self._container = av.open(str(self.path))
            self._stream = self._container.streams.video[0]
        except Exception as exc:
            raise VideoError(f"{self.path}: cannot open video: {exc}") from exc
        self._stream.thread_type = "AUTO"
        tb = self._stream.time_base
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._pts_per_frame = float(1 / (rate * tb)) if rate else 1.0
        self._iter = None
        self._next = None  # index of the next frame the open iterator yields

    def _index(self, frame) -> int:
        return int(round(frame.pts / self._pts_per_frame))

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` as HxWx3 uint8 RGB."""
        index = int(index)
        if self._iter is None or self._next is None or not (self._next <= index < self._next + DEFAULT_GOP * 2):
            target = int(round(index * self._pts_per_frame))
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            self._iter = self._container.decode(self._stream)
            self._next = None
        try:
            for frame in self._iter:
                i = self._index(frame)
                self._next = i + 1
                if i == index:
                    return frame.to_ndarray(format="rgb24")
                if i > index:
                    break
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: frame {index} does not decode: {exc}") from exc
        self._iter = None
        raise VideoError(f"{self.path}: has no frame {index}")

    def close(self) -> None:
        self._container.close()


def decode_all(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video as [N, H, W, 3] uint8 (tests and small tools)."""
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except Exception as exc:
        raise VideoError(f"{path}: does not decode: {exc}") from exc
    if not frames:
        raise VideoError(f"{path}: has no video frames")
    return np.stack(frames)


def probe(path: str | os.PathLike) -> tuple[int, int, float, int]:
    """(height, width, fps, frame count) of a video; VideoError names the file when it does not decode."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            n = 0
            h = w = 0
            for frame in container.decode(stream):
                h, w = frame.height, frame.width
                n += 1
    except Exception as exc:
        raise VideoError(f"{path}: does not decode: {exc}") from exc
    if n == 0:
        raise VideoError(f"{path}: has no video frames")
    return h, w, rate, n


def write_mp4(path: str | os.PathLike, frames: list[np.ndarray], fps: float = 30.0, crf: int = 23) -> None:
    """Encode a list of HxWx3 uint8 frames as one H.264 mp4 (yuv420p, veryfast), atomically.

    For whole clips in memory: the simulation's human-look videos and the evaluation's rollout video.
    """
    from clap_train.io import atomic_path

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    h, w, _ = frames[0].shape
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(round(fps)))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": str(crf)}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        tmp.chmod(0o644)
