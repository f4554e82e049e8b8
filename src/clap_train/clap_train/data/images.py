"""ROS image messages -> HxWx3 uint8 RGB arrays, shared by the bag converter and the live node.

``sensor_msgs/Image`` payloads are reinterpreted with numpy (rgb8, bgr8, mono8, rgba8, bgra8,
16-bit mono16 scaled to 8 bit), honouring ``step`` (row padding); ``sensor_msgs/CompressedImage``
payloads (jpeg, png) are decoded with Pillow. cv_bridge does this in C++ ROS, but it does not
exist as a wheel and clap_train must stay ROS-free, hence this small module.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

# encoding -> (channels, channel order to take for RGB or None for grey)
_RAW = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
    "8uc1": (1, None),
    "8uc3": (3, (2, 1, 0)),  # OpenCV's default channel order is BGR
}
SUPPORTED_ENCODINGS = (*_RAW, "mono16", "16uc1")
SUPPORTED_FORMATS = ("jpeg", "png")


class ImageEncodingError(ValueError):
    """An image message that cannot be converted; the message names the encoding (and source)."""


def ros_image_to_rgb(encoding: str, height: int, width: int, step: int, data, is_bigendian: int = 0) -> np.ndarray:
    """A sensor_msgs/Image payload -> HxWx3 uint8 RGB (a copy, contiguous)."""
    enc = encoding.lower()
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image encoding {encoding!r}: empty image {height}x{width}")
    try:
        buf = np.frombuffer(data, dtype=np.uint8)  # bytes, numpy (rosbags), array.array (rclpy)
    except (TypeError, ValueError):
        buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    if enc in ("mono16", "16uc1"):
        if step < 2 * width or buf.size < step * height:
            raise ImageEncodingError(
                f"image encoding {encoding!r}: {buf.size} bytes cannot hold {height}x{width} with step {step}"
            )
        rows = buf[: step * height].reshape(height, step)[:, : 2 * width]
        grey16 = rows.copy().view(">u2" if is_bigendian else "<u2").reshape(height, width)
        grey = (grey16 >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if enc not in _RAW:
        raise ImageEncodingError(
            f"unknown image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            f"(CompressedImage: {', '.join(SUPPORTED_FORMATS)})"
        )
    channels, order = _RAW[enc]
    row_bytes = width * channels
    if step < row_bytes or buf.size < step * height:
        raise ImageEncodingError(
            f"image encoding {encoding!r}: {buf.size} bytes cannot hold {height}x{width}x{channels} with step {step}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    if order is None:
        return np.repeat(rows, 3, axis=2)
    if order == (0, 1, 2) and channels == 3:
        return np.ascontiguousarray(rows)
    return np.ascontiguousarray(rows[:, :, list(order)])


def compressed_to_rgb(format: str, data) -> np.ndarray:  # noqa: A002 - the ROS field's name
    """A sensor_msgs/CompressedImage payload (jpeg or png) -> HxWx3 uint8 RGB.

    ``format`` may be ROS image_transport's long form, e.g. ``"bgr8; jpeg compressed bgr8"``.
    """
    fmt = format.lower()
    if "jpeg" in fmt or "jpg" in fmt:
        expected = "JPEG"
    elif "png" in fmt:
        expected = "PNG"
    else:
        raise ImageEncodingError(
            f"unknown compressed image format {format!r}; supported: {', '.join(SUPPORTED_FORMATS)}"
        )
    raw = bytes(data) if not isinstance(data, bytes) else data
    try:
        with PILImage.open(io.BytesIO(raw)) as img:
            if img.format != expected:
                raise ImageEncodingError(f"compressed image format {format!r} but the payload is {img.format}")
            return np.asarray(img.convert("RGB"))
    except ImageEncodingError:
        raise
    except Exception as exc:  # Pillow raises several types for corrupt payloads
        raise ImageEncodingError(f"compressed image format {format!r}: payload does not decode: {exc}") from exc


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image (bilinear, Pillow); a no-op when the size already matches."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return np.asarray(PILImage.fromarray(image).resize((width, height), PILImage.BILINEAR))


def message_to_rgb(msg) -> np.ndarray:
    """A deserialised sensor_msgs Image or CompressedImage (any object with its fields) -> RGB."""
    if hasattr(msg, "encoding"):
        return ros_image_to_rgb(
            msg.encoding, msg.height, msg.width, msg.step, msg.data, getattr(msg, "is_bigendian", 0)
        )
    return compressed_to_rgb(msg.format, msg.data)
