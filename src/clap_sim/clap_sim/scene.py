"""The ALOHA bimanual scene in end-effector (mocap) space, on dm_control + MuJoCo 2.3.7.

The scene XML and meshes are the ones the ``gym-aloha`` package ships
(``bimanual_viperx_end_effector_*.xml``). We locate them with ``importlib.util.find_spec`` and
never import ``gym_aloha`` itself (that would import gymnasium and its joint-space envs, which
we do not use). Each gripper link is welded to a mocap body: setting a mocap pose moves the
arm's end effector there, which is exactly the per-arm pose-target interface of the robot.

Why this module exists instead of gym-aloha's envs: those are joint-space and step at 50 Hz with
full-quality rendering (~100 ms a frame on CPU). Here we step at the robot's 30 Hz, render the
three robot cameras (top = head, left_wrist, right_wrist) with shadows and anti-aliasing off and
the mocap markers hidden (~10 ms a 224x224 frame with EGL), and expose per-arm targets/state.

ROS-free: nothing here imports rclpy.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco  # noqa: E402
import mujoco.gl_context  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import mujoco as dm_mujoco  # noqa: E402

ARMS = ("left", "right")
# Robot camera name -> MuJoCo camera name in the ALOHA scene.
CAMERAS = {"head": "top", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}
# Finger joint opening (m) for a normalised gripper command of 0 (closed) and 1 (open); the
# ALOHA puppet-gripper constants.
GRIPPER_CLOSED = 0.01844
GRIPPER_OPEN = 0.05800
# The arms' rest pose (joint angles + finger joints per arm), and the gripper-link poses it gives
# (what the mocap bodies are reset to), from the ACT end-effector environment.
START_ARM_QPOS = np.array([0, -0.96, 1.16, 0, -0.3, 0, 0.02239, -0.02239] * 2)
START_EE_POS = {"left": np.array([-0.21718881, 0.5, 0.29525084]),
                "right": np.array([0.21718881, 0.49999888, 0.29525084])}
START_EE_QUAT = np.array([1.0, 0.0, 0.0, 0.0])  # wxyz


def _close_renderer(renderer) -> None:
    """Free a mujoco.Renderer's MjrContext and GL context (MuJoCo 2.3.7's has no close())."""
    gl, mjr = getattr(renderer, "_gl_context", None), getattr(renderer, "_mjr_context", None)
    if gl is None:
        return
    try:
        gl.make_current()
        if mjr is not None:
            mjr.free()
        gl.free()
    except Exception:  # a context already torn down at interpreter exit
        pass
    finally:
        renderer._gl_context = None


def _release_gl_context() -> None:
    """Make no EGL context current in this thread (so another thread may use it next)."""
    if os.environ.get("MUJOCO_GL") != "egl":
        return
    from mujoco import egl  # its EGL attribute is PyOpenGL's EGL binding

    egl.EGL.eglMakeCurrent(egl.EGL_DISPLAY, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_SURFACE, egl.EGL.EGL_NO_CONTEXT)


class SceneError(RuntimeError):
    """The scene's assets cannot be found or loaded."""


def aloha_assets_dir() -> Path:
    """The gym-aloha package's ``assets`` folder (without importing gym_aloha)."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise SceneError(
            "the ALOHA scene assets come from the gym-aloha package, which is not installed; "
            "install it with `pip install --no-deps gym-aloha==0.1.5`")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (assets / "bimanual_viperx_end_effector_transfer_cube.xml").is_file():
        raise SceneError(f"{assets} does not hold bimanual_viperx_end_effector_transfer_cube.xml")
    return assets


def load_assets() -> dict[str, bytes]:
    """Every file of the ALOHA assets folder, for MuJoCo's virtual file system."""
    assets = aloha_assets_dir()
    return {p.name: p.read_bytes() for p in assets.iterdir() if p.is_file()}


def base_xml(name: str = "transfer_cube") -> str:
    """The text of ``bimanual_viperx_end_effector_<name>.xml``."""
    path = aloha_assets_dir() / f"bimanual_viperx_end_effector_{name}.xml"
    if not path.is_file():
        raise SceneError(f"no ALOHA end-effector scene {path.name} in {path.parent}")
    return path.read_text()


def gripper_to_ctrl(g: float) -> float:
    """Normalised gripper aperture (0 closed, 1 open) -> finger joint target (m)."""
    return GRIPPER_CLOSED + float(np.clip(g, 0.0, 1.0)) * (GRIPPER_OPEN - GRIPPER_CLOSED)


def ctrl_to_gripper(q: float) -> float:
    """Finger joint position (m) -> normalised aperture (0 closed, 1 open)."""
    return float((q - GRIPPER_CLOSED) / (GRIPPER_OPEN - GRIPPER_CLOSED))


@dataclass(frozen=True)
class ArmPose:
    """One arm's end-effector pose: position (m, world frame) and quaternion (w, x, y, z)."""

    pos: np.ndarray
    quat: np.ndarray
    gripper: float


class BimanualScene:
    """A stepped, rendered ALOHA end-effector scene.

    ``xml`` is the full model text (``base_xml()`` or a task's variant); meshes come from the
    gym-aloha assets. ``rate_hz`` is the control rate: ``step()`` advances 1/rate_hz seconds
    of physics in ``substeps`` MuJoCo steps.
    """

    def __init__(self, xml: str | None = None, *, image_size: int = 224, rate_hz: float = 30.0,
                 substeps: int = 16, render: bool = True):
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        if rate_hz <= 0 or substeps < 1:
            raise ValueError(f"rate_hz must be > 0 and substeps >= 1 (got {rate_hz}, {substeps})")
        xml = base_xml() if xml is None else xml
        try:
            self.physics = dm_mujoco.Physics.from_xml_string(xml, load_assets())
        except Exception as exc:  # dm_control raises its own Error types
            raise SceneError(f"cannot load the ALOHA scene: {exc}") from exc
        self.rate_hz = float(rate_hz)
        self.substeps = int(substeps)
        model = self.physics.model
        model.opt.timestep = 1.0 / (self.rate_hz * self.substeps)
        # Hide the mocap markers (red crosses) and turn shadows and anti-aliasing off: a
        # 224x224 frame goes from ~130 ms to ~7 ms on CPU (bench/sim_render.py).
        for i in range(model.nsite):
            name = model.id2name(i, "site") or ""
            if name.startswith("mocap_"):
                model.site_rgba[i, 3] = 0.0
        model.light_castshadow[:] = 0
        model.vis.quality.offsamples = 0
        self.image_size = int(image_size)
        self._mocap = {arm: model.body_mocapid[model.name2id(f"mocap_{arm}", "body")] for arm in ARMS}
        self._gripper_body = {arm: model.name2id(f"vx300s_{arm}/gripper_link", "body") for arm in ARMS}
        self._finger_qpos = {arm: model.jnt_qposadr[model.name2id(f"vx300s_{arm}/left_finger", "joint")]
                             for arm in ARMS}
        # The weld keeps each gripper link at a fixed offset from its mocap body (the tool
        # point, between the fingers). Poses are reported at the tool point, so that a target
        # that has been reached reads back as itself.
        self._weld = {}
        for e in range(model.neq):
            b1, b2 = model.eq_obj1id[e], model.eq_obj2id[e]
            for arm in ARMS:
                if b1 == model.name2id(f"mocap_{arm}", "body") and b2 == self._gripper_body[arm]:
                    self._weld[arm] = (model.eq_data[e, 3:6].copy(), model.eq_data[e, 6:10].copy())
        if set(self._weld) != set(ARMS):
            raise SceneError("the scene lacks the mocap-to-gripper welds of an end-effector ALOHA model")
        self._renderer: mujoco.Renderer | None = None
        self._render_lock = threading.Lock()
        self._render_enabled = render
        self._gripper_cmd = {arm: 0.0 for arm in ARMS}
        self.time = 0.0

    # ------------------------------------------------------------------ state
    def reset_arms(self) -> None:
        """Arms to the rest pose, mocap targets onto the grippers, grippers closed."""
        data = self.physics.data
        data.qpos[:16] = START_ARM_QPOS
        data.qvel[:] = 0.0
        for arm in ARMS:
            self.set_arm_target(arm, START_EE_POS[arm], START_EE_QUAT, 0.0)
        self.physics.forward()
        self.time = 0.0

    def place_objects(self, objects: dict[str, np.ndarray]) -> None:
        """Put free objects at poses (joint name -> xyz + quat wxyz), then recompute the kinematics."""
        model, data = self.physics.model, self.physics.data
        for joint, pose in objects.items():
            adr = model.jnt_qposadr[model.name2id(joint, "joint")]
            data.qpos[adr:adr + 7] = pose
        self.physics.forward()

    def set_arm_target(self, arm: str, pos, quat, gripper: float | None = None) -> None:
        """Set one arm's end-effector target: position (m), quaternion (w,x,y,z), aperture 0..1."""
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")
        pos = np.asarray(pos, dtype=np.float64).reshape(3)
        quat = np.asarray(quat, dtype=np.float64).reshape(4)
        norm = np.linalg.norm(quat)
        if not np.all(np.isfinite(pos)) or not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"{arm} arm target is not a finite pose: pos={pos}, quat={quat}")
        i = self._mocap[arm]
        self.physics.data.mocap_pos[i] = pos
        self.physics.data.mocap_quat[i] = quat / norm
        if gripper is not None:
            self.set_gripper(arm, gripper)

    def set_gripper(self, arm: str, gripper: float) -> None:
        """Set one arm's gripper aperture command (0 closed .. 1 open)."""
        if not np.isfinite(gripper):
            raise ValueError(f"{arm} gripper command is not finite: {gripper}")
        self._gripper_cmd[arm] = float(np.clip(gripper, 0.0, 1.0))
        q = gripper_to_ctrl(self._gripper_cmd[arm])
        base = 0 if arm == "left" else 2
        self.physics.data.ctrl[base] = q
        self.physics.data.ctrl[base + 1] = -q

    def arm_target(self, arm: str) -> ArmPose:
        """The current target (mocap pose and gripper command) of one arm."""
        i = self._mocap[arm]
        return ArmPose(self.physics.data.mocap_pos[i].copy(), self.physics.data.mocap_quat[i].copy(),
                       self._gripper_cmd[arm])

    def arm_pose(self, arm: str) -> ArmPose:
        """The measured end-effector (gripper link) pose and gripper aperture of one arm."""
        b = self._gripper_body[arm]
        data = self.physics.data
        relpos, relquat = self._weld[arm]
        inv_rel = np.zeros(4)
        mujoco.mju_negQuat(inv_rel, relquat)
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, data.xquat[b], inv_rel)
        offset = np.zeros(3)
        mujoco.mju_rotVecQuat(offset, relpos, quat)
        if quat[0] < 0:  # one hemisphere, so equal poses read back equal
            quat = -quat
        return ArmPose(data.xpos[b] - offset, quat,
                       ctrl_to_gripper(data.qpos[self._finger_qpos[arm]]))

    def step(self) -> None:
        """Advance one control period (1/rate_hz seconds)."""
        self.physics.step(self.substeps)
        self.time += 1.0 / self.rate_hz

    # -------------------------------------------------------------- rendering
    def _get_renderer(self) -> mujoco.Renderer:
        if not self._render_enabled:
            raise SceneError("this scene was created with render=False")
        if self._renderer is None:
            backend = mujoco.gl_context.GLContext.__module__
            wanted = os.environ.get("MUJOCO_GL", "")
            if wanted and wanted not in backend:
                raise SceneError(
                    f"MuJoCo chose its GL backend ({backend}) when it was first imported, before "
                    f"clap_sim.scene set MUJOCO_GL={wanted}; export MUJOCO_GL={wanted} or import "
                    "clap_sim.scene before mujoco/dm_control")
            self._renderer = mujoco.Renderer(self.physics.model.ptr, self.image_size, self.image_size)
            self._renderer._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            # Free the GL context when the scene is garbage-collected or at interpreter exit
            # (before MuJoCo's own atexit hook terminates the EGL display), even without close().
            self._finalizer = weakref.finalize(self, _close_renderer, self._renderer)
        return self._renderer

    def render(self, camera: str) -> np.ndarray:
        """Render one camera's image, HxWx3 uint8 RGB.

        ``camera`` is a robot camera name (head, left_wrist, right_wrist) or any MuJoCo camera
        of the scene.

        Safe to call from any thread (one at a time): an EGL context can be current in only
        one thread, so it is released after each frame (ROS executors call from pool threads).
        """
        with self._render_lock:
            try:
                renderer = self._get_renderer()
                renderer.update_scene(self.physics.data.ptr, camera=CAMERAS.get(camera, camera))
                return renderer.render().copy()
            finally:
                _release_gl_context()

    def render_all(self) -> dict[str, np.ndarray]:
        """The three robot cameras: {"head", "left_wrist", "right_wrist"} -> HxWx3 uint8."""
        return {name: self.render(name) for name in CAMERAS}

    # ------------------------------------------------------------- appearance
    def geom_names(self) -> list[str]:
        model = self.physics.model
        return [model.id2name(i, "geom") or "" for i in range(model.ngeom)]

    def set_geom_rgba(self, prefix_or_names, rgba) -> int:
        """Recolour every geom whose name starts with a prefix (or one of a list of prefixes).

        Returns how many geoms changed. Alpha 0 hides a geom from the cameras (physics unchanged).
        """
        model = self.physics.model
        prefixes = (prefix_or_names,) if isinstance(prefix_or_names, str) else tuple(prefix_or_names)
        n = 0
        for i, name in enumerate(self.geom_names()):
            if name.startswith(prefixes):
                model.geom_rgba[i] = rgba
                model.geom_matid[i] = -1
                n += 1
        return n

    def close(self) -> None:
        """Free the GL context (safe to call twice)."""
        with self._render_lock:
            if self._renderer is not None:
                self._finalizer()
                self._renderer = None

    def __enter__(self) -> "BimanualScene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
