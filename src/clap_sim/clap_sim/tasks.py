"""Simulated tasks: transfer cube, insertion and a language-conditioned coloured-cubes task.

Each task builds its MuJoCo model (the gym-aloha end-effector XML, or a variant of it), places
its objects at random initial poses drawn from a seeded ``numpy`` generator, names its
instruction, and scores an episode. Rewards follow the ACT simulation tasks (Zhao et al. 2023):
transfer cube 0..4 (4 = the left gripper holds the cube off the table), insertion 0..4 (4 = the
peg touches the pin inside the socket); an episode succeeds when it reaches the maximum reward.

ROS-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .scene import BimanualScene, base_xml

COLOURS = {"red": "1 0 0 1", "green": "0 0.8 0 1", "blue": "0 0.2 1 1"}
# Colours no coloured_cubes demonstration shows: the out-of-distribution variant for the human-video
# transfer experiment (bench/human_transfer.py).
NOVEL_COLOURS = {"yellow": "1 0.85 0 1", "magenta": "0.9 0 0.9 1", "cyan": "0 0.85 0.85 1"}


def _contact_pairs(scene: BimanualScene) -> set[tuple[str, str]]:
    """Every geom-name pair in contact (both orders)."""
    model, data = scene.physics.model, scene.physics.data
    pairs = set()
    for i in range(data.ncon):
        c = data.contact[i]
        a, b = model.id2name(c.geom1, "geom"), model.id2name(c.geom2, "geom")
        pairs.add((a, b))
        pairs.add((b, a))
    return pairs


@dataclass
class EpisodeSpec:
    """What a seeded reset produced: object poses (name -> xyz + quat wxyz) and instruction."""

    task: str
    seed: int
    instruction: str
    objects: dict[str, np.ndarray]
    extra: dict = field(default_factory=dict)


class Task:
    """Base class: a named task with an XML, a seeded reset and a reward."""

    name: str = ""
    max_reward: int = 4
    stages: tuple[str, ...] = ()  # what each reward 0..max_reward means (failure analysis, bench/generalist.py)
    episode_seconds: float = 8.0

    def xml(self) -> str:
        raise NotImplementedError

    def make_scene(self, **kwargs) -> BimanualScene:
        return BimanualScene(self.xml(), **kwargs)

    def sample(self, seed: int) -> EpisodeSpec:
        raise NotImplementedError

    settle_seconds: float = 0.5

    def reset(self, scene: BimanualScene, seed: int) -> EpisodeSpec:
        """Put the arms at rest and the objects at the seeded poses; return what was sampled.

        Then ``settle_seconds`` of physics run with the rest targets (the arms reach their
        welded rest pose, the objects land), so that the first observation is at rest.
        """
        spec = self.sample(seed)
        scene.reset_arms()
        scene.place_objects(spec.objects)
        for _ in range(int(round(self.settle_seconds * scene.rate_hz))):
            scene.step()
        scene.time = 0.0
        return spec

    def reward(self, scene: BimanualScene, spec: EpisodeSpec) -> int:
        raise NotImplementedError

    def success(self, scene: BimanualScene, spec: EpisodeSpec) -> bool:
        return self.reward(scene, spec) >= self.max_reward


def _pose(xyz) -> np.ndarray:
    return np.concatenate([np.asarray(xyz, dtype=np.float64), [1.0, 0.0, 0.0, 0.0]])


class TransferCube(Task):
    """The right arm picks up the red cube and hands it to the left arm."""

    name = "transfer_cube"
    stages = ("right gripper off the cube", "right gripper touches it", "right arm lifts it",
              "left gripper touches it", "left arm holds it off the table")

    def xml(self) -> str:
        return base_xml("transfer_cube")

    def sample(self, seed: int) -> EpisodeSpec:
        rng = np.random.default_rng(seed)
        xyz = [rng.uniform(0.0, 0.2), rng.uniform(0.4, 0.6), 0.05]
        return EpisodeSpec(self.name, seed, "pick up the red cube and hand it to the left arm",
                           {"red_box_joint": _pose(xyz)})

    def reward(self, scene, spec) -> int:
        pairs = _contact_pairs(scene)
        left = ("red_box", "vx300s_left/10_left_gripper_finger") in pairs
        right = ("red_box", "vx300s_right/10_right_gripper_finger") in pairs
        table = ("red_box", "table") in pairs
        r = 0
        if right:
            r = 1
        if right and not table:
            r = 2
        if left:
            r = 3
        if left and not table:
            r = 4
        return r


class Insertion(Task):
    """The left arm picks up the socket, the right arm the peg, and the peg goes in."""

    name = "insertion"
    stages = ("not both parts grasped", "both parts grasped", "both lifted", "peg touches the socket",
              "peg touches the pin")

    def xml(self) -> str:
        return base_xml("insertion")

    def sample(self, seed: int) -> EpisodeSpec:
        rng = np.random.default_rng(seed)
        peg = [rng.uniform(0.1, 0.2), rng.uniform(0.4, 0.6), 0.05]
        socket = [rng.uniform(-0.2, -0.1), rng.uniform(0.4, 0.6), 0.05]
        return EpisodeSpec(self.name, seed, "insert the red peg into the blue socket",
                           {"red_peg_joint": _pose(peg), "blue_socket_joint": _pose(socket)})

    def reward(self, scene, spec) -> int:
        pairs = _contact_pairs(scene)
        sockets = [f"socket-{i}" for i in range(1, 5)]
        left = any((s, "vx300s_left/10_left_gripper_finger") in pairs for s in sockets)
        right = ("red_peg", "vx300s_right/10_right_gripper_finger") in pairs
        peg_table = ("red_peg", "table") in pairs
        socket_table = any((s, "table") in pairs for s in sockets)
        peg_socket = any(("red_peg", s) in pairs for s in sockets)
        pin = ("red_peg", "pin") in pairs
        r = 0
        if left and right:
            r = 1
        if left and right and not peg_table and not socket_table:
            r = 2
        if peg_socket and not peg_table and not socket_table:
            r = 3
        if pin:
            r = 4
        return r


class ColouredCubes(Task):
    """Three coloured cubes on the table; the instruction names the one to lift.

    The arm on the cube's side picks it up and lifts it; success = the named cube held >= 8 cm
    above the table by that arm's fingers and the other cubes still on the table.
    """

    name = "coloured_cubes"
    stages = ("named cube not touched", "named cube touched", "off the table", "lifted halfway",
              "lifted, others on the table")
    colours = COLOURS
    lift_height = 0.08
    episode_seconds = 5.0

    def xml(self) -> str:
        xml = base_xml("transfer_cube")
        bodies = "".join(
            f'<body name="{c}_box" pos="0 0.5 0.05"><joint name="{c}_box_joint" type="free" '
            f'frictionloss="0.01" /><inertial pos="0 0 0" mass="0.05" diaginertia="0.002 0.002 0.002" />'
            f'<geom condim="4" solimp="2 1 0.01" solref="0.01 1" friction="1 0.005 0.0001" '
            f'pos="0 0 0" size="0.02 0.02 0.02" type="box" name="{c}_box" rgba="{rgba}" /></body>'
            for c, rgba in self.colours.items())
        xml, n = re.subn(r'<body name="box".*?</body>', bodies, xml, count=1, flags=re.S)
        if n != 1:
            raise RuntimeError("the transfer-cube XML no longer has the expected box body")
        # The keyframe names the old qpos size; drop it.
        return re.sub(r"<keyframe>.*?</keyframe>", "", xml, flags=re.S)

    def sample(self, seed: int) -> EpisodeSpec:
        rng = np.random.default_rng(seed)
        # Three slots across the table (left, centre-ish, right), shuffled colours, jittered.
        xs = np.array([-0.15, 0.0, 0.15]) + rng.uniform(-0.03, 0.03, size=3)
        ys = rng.uniform(0.45, 0.6, size=3)
        colours = list(self.colours)
        order = rng.permutation(3)
        objects = {f"{colours[k]}_box_joint": _pose([xs[i], ys[i], 0.02]) for i, k in enumerate(order)}
        target = colours[int(rng.integers(3))]
        # Never the centre slot: its arm would be ambiguous; move the target to a side slot.
        tx = objects[f"{target}_box_joint"][0]
        if abs(tx) < 0.075:
            other = next(c for c in colours if c != target and abs(objects[f"{c}_box_joint"][0]) >= 0.075)
            objects[f"{target}_box_joint"], objects[f"{other}_box_joint"] = (
                objects[f"{other}_box_joint"], objects[f"{target}_box_joint"])
        arm = "right" if objects[f"{target}_box_joint"][0] > 0 else "left"
        return EpisodeSpec(self.name, seed, f"pick up the {target} cube", objects,
                           {"target": target, "arm": arm})

    def reward(self, scene, spec) -> int:
        pairs = _contact_pairs(scene)
        target, arm = spec.extra["target"], spec.extra["arm"]
        geom = f"{target}_box"
        fingers = [f"vx300s_{arm}/10_left_gripper_finger", f"vx300s_{arm}/10_right_gripper_finger"]
        touch = any((geom, f) in pairs for f in fingers)
        on_table = (geom, "table") in pairs
        z = scene.physics.named.data.xpos[geom][2]
        others_down = all(scene.physics.named.data.xpos[f"{c}_box"][2] < 0.05
                          for c in self.colours if c != target)
        r = 0
        if touch:
            r = 1
        if touch and not on_table:
            r = 2
        if touch and not on_table and z > 0.02 + self.lift_height * 0.5:
            r = 3
        if touch and z > 0.02 + self.lift_height and others_down:
            r = 4
        return r


class NovelColouredCubes(ColouredCubes):
    """``coloured_cubes`` with three colours that its demonstrations never show (yellow, magenta, cyan)."""

    name = "coloured_cubes_novel"
    colours = NOVEL_COLOURS


TASKS: dict[str, type[Task]] = {t.name: t for t in (TransferCube, Insertion, ColouredCubes, NovelColouredCubes)}


def make_task(name: str) -> Task:
    """The task registered under ``name``; the error lists the valid names."""
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None
