"""Contract, rotations, normalisation and image conversion (the helpers shared with the ROS node)."""

from __future__ import annotations

import array
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from clap_train.config import ConfigError
from clap_train.data.contract import load_contract
from clap_train.data.images import ImageEncodingError, compressed_to_rgb, ros_image_to_rgb
from clap_train.data.samples.normalize import Normalizer
from clap_train.data.rotations import (
    euler_xyz_to_quat,
    quat_to_euler_xyz,
    unwrap_euler,
    unwrap_vector_euler,
    wrap_to_pi,
)


def test_default_contract_has_the_astribot_topics_and_layout():
    c = load_contract()
    assert c.rate_hz == 30.0 and c.frame_id == "base_link"
    assert c.camera_names == ["head", "left_wrist", "right_wrist"]
    assert c.camera(name="head").topic == "/astribot/camera/head/image_raw"
    assert c.camera_keys == [
        "observation.images.head",
        "observation.images.left_wrist",
        "observation.images.right_wrist",
    ]
    assert c.vector_names[:7] == ["left_x", "left_y", "left_z", "left_roll", "left_pitch", "left_yaw", "left_gripper"]
    assert c.vector_names[7] == "right_x" and c.vector_names[-1] == "right_gripper" and len(c.vector_names) == 14
    assert c.state.arms[0].pose.topic == "/astribot/left_arm/ee_pose"
    assert c.state.arms[1].gripper.stamp == "receive"
    assert c.action.arms[1].pose.topic == "/astribot/right_arm/target_pose"
    assert c.state.euler_indices == [3, 4, 5, 10, 11, 12]
    assert c.instruction.topic == "/clap/instruction" and c.subtask.topic == "/clap/subtask"
    assert len({t.topic for t in c.all_topics()}) == 13


def test_contract_errors_name_the_file_and_key(tmp_path):
    text = load_contract().to_yaml()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("rate_hz: 30.0", "rate_hz: 30.0\nrate: 10"))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*rate"):
        load_contract(bad)
    bad.write_text(text.replace("sensor_msgs/msg/Image", "sensor_msgs/msg/PointCloud2", 1))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*head.*PointCloud2"):
        load_contract(bad)
    with pytest.raises(ConfigError, match="not found.*missing.yaml"):
        load_contract(tmp_path / "missing.yaml")
    bad.write_text(text.replace("status: /clap/status", "status: /clap/instruction"))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*used twice.*/clap/instruction"):
        load_contract(bad)
    bad.write_text(text.replace("/clap/{arm}_arm/path", "/clap/path"))
    with pytest.raises(ConfigError, match=r"outputs\.path.*\{arm\}"):
        load_contract(bad)


def test_contract_outputs_name_the_node_topics_and_stay_out_of_recordings():
    c = load_contract()
    assert c.node_outputs().path_topic("left") == "/clap/left_arm/path"
    recorded = {t.topic for t in c.all_topics()}
    assert not recorded & set(c.outputs.topics(["left", "right"]))
    embedded = c.to_yaml().split("outputs:")[0]  # a dataset converted before the section existed
    from clap_train.data.contract import contract_from_yaml_text

    old = contract_from_yaml_text(embedded)
    assert old.outputs is None and old.to_yaml() == embedded
    with pytest.raises(ValueError, match="no outputs: section"):
        old.node_outputs()


def test_quat_euler_round_trip_and_ros_convention():
    # 90 degrees about z (yaw) in ROS order (x, y, z, w)
    q = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    np.testing.assert_allclose(quat_to_euler_xyz(q), [0, 0, np.pi / 2], atol=1e-12)
    rng = np.random.default_rng(0)
    e = rng.uniform([-3, -1.4, -3], [3, 1.4, 3], size=(50, 3))
    np.testing.assert_allclose(quat_to_euler_xyz(euler_xyz_to_quat(e)), e, atol=1e-9)
    with pytest.raises(ValueError, match="zero"):
        quat_to_euler_xyz(np.zeros(4))


def test_unwrap_and_wrap_across_pi():
    yaw = np.linspace(2.9, 3.5, 13)  # crosses +pi
    wrapped = wrap_to_pi(yaw)
    assert wrapped.min() < -2.7 and np.all(wrapped < np.pi) and np.all(wrapped >= -np.pi)
    np.testing.assert_allclose(unwrap_euler(wrapped), yaw, atol=1e-12)
    vec = np.zeros((13, 14))
    vec[:, 5] = wrapped
    vec[:, 0] = np.linspace(0, 7, 13)  # positions are never unwrapped
    out = unwrap_vector_euler(vec, [3, 4, 5, 10, 11, 12])
    np.testing.assert_allclose(out[:, 5], yaw, atol=1e-12)
    np.testing.assert_allclose(out[:, 0], vec[:, 0])


def test_normalizer_maps_quantiles_to_unit_range_numpy_and_torch():
    stats = {"action": {"q01": [0.0, -2.0, 5.0], "q99": [1.0, 2.0, 5.0], "mean": [0, 0, 0]}}
    n = Normalizer.from_stats(stats)
    x = np.array([[0.0, -2.0, 5.0], [1.0, 2.0, 5.0], [0.5, 0.0, 5.0]])
    y = n.normalize("action", x)
    np.testing.assert_allclose(y, [[-1, -1, 0], [1, 1, 0], [0, 0, 0]])  # a constant dimension maps to 0
    np.testing.assert_allclose(n.unnormalize("action", y), x)
    yt = n.normalize("action", torch.tensor(x, dtype=torch.float32))
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    np.testing.assert_allclose(yt.numpy(), y, atol=1e-6)
    n2 = Normalizer.from_dict(json.loads(json.dumps(n.to_dict())))
    np.testing.assert_allclose(n2.unnormalize("action", y), x)
    with pytest.raises(KeyError, match="observation.state"):
        n.normalize("observation.state", x)
    with pytest.raises(ValueError, match="last axis of 3"):
        n.normalize("action", np.zeros(4))


def _img(h, w):
    rng = np.random.default_rng(h * w)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_raw_encodings_with_row_padding(encoding):
    rgb = _img(6, 10)
    if encoding == "mono8":
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
        payload = rgb[:, :, 0:1]
    elif encoding == "rgb8":
        payload = rgb
    elif encoding == "bgr8":
        payload = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        payload = np.concatenate([rgb, np.full((6, 10, 1), 255, np.uint8)], axis=2)
    else:
        payload = np.concatenate([rgb[:, :, ::-1], np.full((6, 10, 1), 7, np.uint8)], axis=2)
    row = payload.reshape(6, -1)
    step = row.shape[1] + 4  # padded rows
    padded = np.zeros((6, step), np.uint8)
    padded[:, : row.shape[1]] = row
    for data in (padded.tobytes(), padded.reshape(-1), array.array("B", padded.tobytes())):
        out = ros_image_to_rgb(encoding, 6, 10, step, data)
        assert out.shape == (6, 10, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, rgb)


def test_unknown_or_short_images_name_the_encoding():
    with pytest.raises(ImageEncodingError, match="'yuv422'"):
        ros_image_to_rgb("yuv422", 2, 2, 4, bytes(8))
    with pytest.raises(ImageEncodingError, match="'rgb8'.*cannot hold"):
        ros_image_to_rgb("rgb8", 4, 4, 12, bytes(10))


@pytest.mark.parametrize("fmt,pil", [("jpeg", "JPEG"), ("bgr8; jpeg compressed bgr8", "JPEG"), ("png", "PNG")])
def test_compressed_images(fmt, pil):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (200, 30, 40)
    rgb[:, 12:] = (10, 220, 90)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format=pil, quality=95)
    out = compressed_to_rgb(fmt, buf.getvalue())
    assert out.shape == (16, 24, 3)
    diff = np.abs(out.astype(int) - rgb.astype(int))
    if pil == "PNG":
        assert diff.max() == 0
    else:  # lossy: exact colours away from the edge (chroma subsampling blurs the edge)
        assert diff[:, :8].max() <= 4 and diff[:, 16:].max() <= 4
    with pytest.raises(ImageEncodingError, match="'tiff'"):
        compressed_to_rgb("tiff", buf.getvalue())
    with pytest.raises(ImageEncodingError, match="does not decode"):
        compressed_to_rgb(fmt, buf.getvalue()[:20])


def test_record_launch_records_exactly_the_contract_topics(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[3] / "launch" / "record.launch.py"
    spec = importlib.util.spec_from_file_location("record_launch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = load_contract()
    cmd = mod.record_command(None, "out/ep1")
    assert cmd[:7] == ["ros2", "bag", "record", "--storage", "mcap", "--output", "out/ep1"]
    assert sorted(cmd[7:]) == sorted(t.topic for t in c.all_topics())
    # a different contract file changes what is recorded
    other = tmp_path / "c.yaml"
    other.write_text(c.to_yaml().replace("/clap/subtask", "/other/subtask"))
    assert "/other/subtask" in mod.record_command(other, "x")
