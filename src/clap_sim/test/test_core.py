"""The ROS-free simulation core: scene, tasks, scripted demonstrators, human-look videos."""

import json
import subprocess
import sys

import av
import numpy as np
import pytest
from clap_sim import scene as scene_mod
from clap_sim.human_videos import apply_look, record_human_videos
from clap_sim.scene import ARMS, ArmPose, BimanualScene, SceneError
from clap_sim.scripted import quat_wxyz_to_euler, run_scripted, scripted_trajectory
from clap_sim.tasks import TASKS, make_task
from clap_sim.vectors import apply_vector14, vector14
from clap_train.data.layout import DEFAULT_LAYOUT


def test_core_modules_do_not_import_ros():
    code = ("import sys, importlib\n"
            "for n in ('scene', 'tasks', 'scripted', 'recorder', 'human_videos', 'topics', 'cli', 'rollout',\n"
            "          'pipeline', 'steps', 'ablation', 'generalist'):\n"
            "    importlib.import_module('clap_sim.' + n)\n"
            "ros = ('rclpy', 'rosgraph_msgs', 'std_srvs', 'geometry_msgs', 'rcl_interfaces')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ros))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"a ROS-free clap_sim module imported ROS: {out.stdout}"


def test_vectors_are_the_layouts():
    quarter = np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0, 0.0])  # w, x, y, z: roll +90 degrees
    poses = {"left": ArmPose(np.array([0.1, 0.2, 0.3]), np.array([1.0, 0, 0, 0]), 0.4),
             "right": ArmPose(np.array([0.5, 0.6, 0.7]), quarter, 0.8)}
    v = vector14(poses)
    right = DEFAULT_LAYOUT.arm("right")
    assert v.shape == (14,) and v.dtype == np.float64
    np.testing.assert_allclose(v[right.position], [0.5, 0.6, 0.7])
    np.testing.assert_allclose(v[right.euler], [np.pi / 2, 0, 0], atol=1e-12)
    assert v[right.gripper] == 0.8 and v[DEFAULT_LAYOUT.arm("left").gripper] == 0.4
    targets = {}

    class Scene:
        def set_arm_target(self, arm, pos, quat, gripper):
            targets[arm] = (pos, quat, gripper)

    apply_vector14(Scene(), v)
    np.testing.assert_allclose(targets["right"][0], [0.5, 0.6, 0.7])
    np.testing.assert_allclose(np.abs(targets["right"][1]), quarter, atol=1e-12)
    assert targets["right"][2] == 0.8 and targets["left"][2] == 0.4


def test_arm_reaches_a_pose_target_and_gripper_opens():
    with BimanualScene(render=False) as scene:
        scene.reset_arms()
        for _ in range(15):
            scene.step()
        start = scene.arm_pose("right")
        goal = start.pos + np.array([-0.05, 0.03, -0.05])
        half = np.radians(-40) / 2
        quat = np.array([np.cos(half), 0.0, np.sin(half), 0.0])
        scene.set_arm_target("right", goal, quat, 1.0)
        for _ in range(45):
            scene.step()
        now = scene.arm_pose("right")
        assert np.linalg.norm(now.pos - goal) < 0.005
        assert abs(abs(now.quat @ quat) - 1.0) < 1e-4
        assert now.gripper > 0.85
        # the other arm stayed where it was
        assert np.linalg.norm(scene.arm_pose("left").pos - scene.arm_target("left").pos) < 0.005
        assert scene.time == pytest.approx(60 / 30.0)


def test_bad_targets_are_refused_with_the_arm_named():
    with BimanualScene(render=False) as scene:
        with pytest.raises(ValueError, match="left arm target is not a finite pose"):
            scene.set_arm_target("left", [np.nan, 0, 0], [1, 0, 0, 0])
        with pytest.raises(ValueError, match="unknown arm 'middle'"):
            scene.set_arm_target("middle", [0, 0, 0], [1, 0, 0, 0])


def test_missing_assets_name_the_package(monkeypatch):
    monkeypatch.setattr(scene_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SceneError, match="gym-aloha"):
        scene_mod.aloha_assets_dir()


def test_cameras_render_the_scene_without_mocap_markers():
    with BimanualScene(image_size=64) as scene:
        scene.reset_arms()
        images = scene.render_all()
        assert set(images) == {"head", "left_wrist", "right_wrist"}
        for img in images.values():
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 5
        model = scene.physics.model
        mocap_sites = [i for i in range(model.nsite) if (model.id2name(i, "site") or "").startswith("mocap_")]
        assert mocap_sites and all(model.site_rgba[i, 3] == 0 for i in mocap_sites)
        assert model.light_castshadow.sum() == 0 and model.vis.quality.offsamples == 0


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="transfer_cube"):
        make_task("stack_blocks")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_seeded_resets_are_random_and_reproducible(name):
    task = make_task(name)
    a, b, c = task.sample(1), task.sample(1), task.sample(2)
    for key in a.objects:
        assert np.array_equal(a.objects[key], b.objects[key])
    assert any(not np.allclose(a.objects[k], c.objects[k]) for k in a.objects) or a.instruction != c.instruction


@pytest.mark.parametrize("name", sorted(TASKS))
def test_scripted_demonstrator_succeeds_and_idle_arms_fail(name):
    task = make_task(name)
    scene = task.make_scene(render=False)
    try:
        success, best, spec, traj = run_scripted(task, 5, scene=scene)
        assert success and best == task.max_reward, f"{name}: scripted reward {best}"
        # Doing nothing does not score: the reward is not trivially reached.
        task.reset(scene, 5)
        for _ in range(len(traj)):
            scene.step()
        assert task.reward(scene, spec) < task.max_reward
    finally:
        scene.close()


@pytest.mark.parametrize("name", ["coloured_cubes", "coloured_cubes_novel"])
def test_coloured_cubes_instruction_names_the_lifted_cube(name):
    task = make_task(name)
    targets = set()
    scene = task.make_scene(render=False)
    try:
        for seed in range(6):
            spec = task.sample(seed)
            targets.add(spec.extra["target"])
            assert spec.instruction == f"pick up the {spec.extra['target']} cube"
        # Lifting a different cube than the instruction names is not a success.
        spec = task.sample(0)
        other = next(c for c in task.colours if c != spec.extra["target"])
        wrong = type(spec)(spec.task, spec.seed, spec.instruction, spec.objects, dict(spec.extra, target=other))
        task.reset(scene, 0)
        traj = scripted_trajectory(spec, rate_hz=scene.rate_hz)
        for k in range(len(traj)):
            for arm, (p, q, g) in traj.target(k).items():
                scene.set_arm_target(arm, p, q, g)
            scene.step()
        assert task.success(scene, spec) and not task.success(scene, wrong)
    finally:
        scene.close()
    assert len(targets) >= 2 and targets <= set(task.colours)


def test_the_novel_variant_shows_none_of_the_demonstrated_colours():
    seen, novel = make_task("coloured_cubes"), make_task("coloured_cubes_novel")
    assert not set(seen.colours) & set(novel.colours)
    assert not set(seen.colours.values()) & set(novel.colours.values())
    xml = novel.xml()
    assert all(f'name="{c}_box"' in xml for c in novel.colours) and not any(f'"{c}_box"' in xml for c in seen.colours)


def test_trajectory_actions_follow_the_contract_layout():
    spec = make_task("transfer_cube").sample(0)
    traj = scripted_trajectory(spec)
    a = traj.actions14()
    assert a.shape == (240, 14) and a.dtype == np.float32
    assert np.all(a[:, [3, 4, 5, 10, 11, 12]] >= -np.pi) and np.all(a[:, [3, 4, 5, 10, 11, 12]] <= np.pi)
    grip = a[:, [6, 13]]
    assert grip.min() == 0.0 and grip.max() == 1.0  # closed .. open, both used
    np.testing.assert_allclose(a[0, :3], traj.pos["left"][0], atol=1e-6)
    np.testing.assert_allclose(a[0, 3:6], quat_wxyz_to_euler(traj.quat["left"][0]), atol=1e-6)
    # The left arm's handover orientation: roll +90 degrees.
    assert a[int(5.2 * 30), 3] == pytest.approx(np.pi / 2, abs=1e-3)
    right = DEFAULT_LAYOUT.arm("right")
    np.testing.assert_allclose(a[0, right.position], traj.pos["right"][0], atol=1e-6)
    assert ARMS == DEFAULT_LAYOUT.arms  # the scene's arms are the vector's
    labels = traj.subtasks
    assert len(labels) == 240 and all(labels) and len(set(labels)) >= 5
    assert labels[0].startswith("move the right gripper above")


def test_human_look_changes_the_robot_but_not_the_physics():
    task = make_task("transfer_cube")
    robot = task.make_scene(image_size=64)
    human = task.make_scene(image_size=64)
    try:
        task.reset(robot, 0)
        task.reset(human, 0)
        apply_look(human, "hidden", np.random.default_rng(0))
        img_r, img_h = robot.render("head"), human.render("head")
        assert np.abs(img_r.astype(int) - img_h.astype(int)).mean() > 1.0
        for _ in range(10):
            robot.step()
            human.step()
        for arm in ARMS:
            np.testing.assert_allclose(robot.arm_pose(arm).pos, human.arm_pose(arm).pos, atol=1e-9)
    finally:
        robot.close()
        human.close()


def test_human_videos_are_mp4_with_instructions(tmp_path):
    videos = record_human_videos("insertion", 2, tmp_path, seed=3, image_size=64, n_steps=12, progress=False)
    index = json.loads((tmp_path / "instructions.json").read_text())
    assert [e["file"] for e in index] == ["insertion_000003.mp4", "insertion_000004.mp4"]
    assert all(e["instruction"] == "insert the red peg into the blue socket" for e in index)
    assert {v.look for v in videos} == {"hidden", "recoloured"}
    with av.open(str(tmp_path / "insertion_000003.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (64, 64, 3)
    # A second task in the same folder keeps the first task's entries.
    record_human_videos("transfer_cube", 1, tmp_path, image_size=64, n_steps=5, progress=False)
    assert len(json.loads((tmp_path / "instructions.json").read_text())) == 3


def test_lockstep_rollout_goes_through_the_nodes_safety_filter():
    """A policy asking for a jump through the table gets the node's speed-limited, workspace-clamped path."""
    from types import SimpleNamespace

    from clap_policy_ros.parameters import NodeParams
    from clap_sim.rollout import rollout

    left = DEFAULT_LAYOUT.arm("left")

    class Jumpy:
        chunk_len, action_dim = 32, DEFAULT_LAYOUT.dim

        def predict(self, images, instruction, state=None, **kw):
            target = np.array(state, dtype=np.float64)
            target[left.position] += [0.0, 0.0, -5.0]  # z far below the default workspace (>= 0 m)
            return SimpleNamespace(actions=np.tile(target, (self.chunk_len, 1)))

    task = make_task("transfer_cube")
    scene = task.make_scene(image_size=32)
    try:
        r = rollout(Jumpy(), task, scene, 0, executor="open_loop", replan_every=8, max_steps=36, early_stop=False)
    finally:
        scene.close()
    p = NodeParams()
    step = np.linalg.norm(np.diff(np.vstack([r.state[:1], r.target])[:, left.position], axis=0), axis=1)
    max_step = p.max_linear_speed / scene.rate_hz
    assert step.max() <= max_step + 1e-9  # the first tick starts from the measured pose
    z = r.target[:, left.position][:, 2]
    assert z[0] > 0.2 and z[-1] == p.workspace_min[2]  # down at the speed limit, then held at z = 0
    assert step[:int(z[0] / max_step)].min() > 0.99 * max_step and step[-5:].max() < 0.05 * max_step
