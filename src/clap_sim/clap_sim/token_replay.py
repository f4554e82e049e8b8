"""CLAP-NTP with every token right: the scripted demonstration replayed through an Act-VAE's tokens.

CLAP-NTP acts by predicting action tokens that the Act-VAE decodes. If the decoded chunks of the
*true* tokens miss the cube, no VLM can make NTP mode work. ``TokenReplay`` measures that ceiling:
it is a policy (``predict`` as ``ClapPolicy.predict``) whose every answer is the seed's scripted
plan from the current step on, encoded to tokens at the measured state and decoded back, and
``token_replay`` runs it in lock-step through the node's own control path (``clap_sim.rollout``,
temporal ensembling with a chunk every tick, as NTP mode is evaluated). With ``through_tokens``
False the raw plan is replayed the same way: the control, which the scripted demonstrator's own
success bounds.

A relative Act-VAE encodes a chunk at a state. ``state="measured"`` uses the measured pose, as
the policy node gives it (an Act-VAE trained on recorded datasets, whose state is the measured
one); ``state="plan"`` uses the plan's previous command, the state bench/act_vae_sim_psnr.py trains
with. They differ by the arm's tracking lag (15 mm on average, up to 34 mm, on a held-out
transfer-cube episode), which is outside what a plan-trained relative Act-VAE has seen.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch
from clap_train.data.layout import DEFAULT_LAYOUT
from clap_train.data.samples.action_space import ActionSpace
from clap_train.models.act_vae import ActVAE

from .rollout import rollout
from .scene import BimanualScene
from .scripted import scripted_trajectory
from .tasks import Task


@dataclasses.dataclass
class _Answer:
    actions: np.ndarray


class TokenReplay:
    """The plan's chunk from the scene's current step, through the Act-VAE at ``act_vae_dir`` (or raw)."""

    def __init__(self, act_vae_dir: str | pathlib.Path, scene: BimanualScene, through_tokens: bool = True,
                 state: str = "measured"):
        if state not in ("measured", "plan"):
            raise ValueError(f"state must be 'measured' or 'plan', got {state!r}")
        act_vae_dir = pathlib.Path(act_vae_dir)
        self.model = ActVAE.from_pretrained(act_vae_dir).eval()
        # An Act-VAE export keeps its action space beside it; a policy directory, above its act_vae/.
        where = act_vae_dir if (act_vae_dir / "action_space.json").is_file() else act_vae_dir.parent
        self.space = ActionSpace.load(where, DEFAULT_LAYOUT.euler_indices)
        self.scene, self.through_tokens, self.state = scene, through_tokens, state
        self.chunk_len = self.model.config.chunk_len
        self.action_dim = self.model.config.action_dim
        self.plan: np.ndarray | None = None

    def begin(self, task: Task, seed: int) -> None:
        """The plan of the next episode (call before each rollout)."""
        self.plan = scripted_trajectory(task.sample(seed), rate_hz=self.scene.rate_hz).actions14().astype(np.float64)

    def chunk_at(self, step: int, state: np.ndarray) -> np.ndarray:
        """Plan rows step..step+H-1 (the last held), through the tokens at ``state`` when asked."""
        if self.plan is None:
            raise RuntimeError("TokenReplay.begin(task, seed) was not called")
        rows = self.plan[np.minimum(step + np.arange(self.chunk_len), len(self.plan) - 1)]
        if not self.through_tokens:
            return rows
        model_chunk = torch.from_numpy(self.space.encode(rows, state))[None]
        with torch.no_grad():
            decoded = self.model.decode_tokens(self.model.tokenize(model_chunk))[0].double().numpy()
        return self.space.decode(decoded, state)

    def predict(self, images, instruction, state, mode="ntp", **_ignored) -> _Answer:
        step = int(round(self.scene.time * self.scene.rate_hz))
        if self.state == "plan":
            state = self.plan[max(step - 1, 0)]
        return _Answer(self.chunk_at(step, np.asarray(state, dtype=np.float64)))


def token_replay(act_vae_dir: str | pathlib.Path, task: Task, seeds: list[int], *, through_tokens: bool = True,
                 state: str = "measured", image_size: int = 16) -> list[dict]:
    """Lock-step replay of each seed's plan through the tokens; one {seed, success, max_reward} per seed."""
    scene = task.make_scene(image_size=image_size)
    out = []
    try:
        oracle = TokenReplay(act_vae_dir, scene, through_tokens, state)
        for seed in seeds:
            oracle.begin(task, seed)
            r = rollout(oracle, task, scene, seed, mode="ntp", executor="temporal_ensemble", replan_every=1)
            out.append({"seed": seed, "success": bool(r.success), "max_reward": int(r.max_reward)})
    finally:
        scene.close()
    return out
