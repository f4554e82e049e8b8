"""``clap sim ground``: the sim's stand-in for a pretrained VLM's visual grounding.

The paper's CLAP starts from Qwen3-VL, whose vision tower already finds objects. No hub weights can be
had here, and the tiny random VLM's vision tower never picks out a cube of 1-2 pixels: on coloured
cubes the colour -> arm binding stays at chance (bench/RESULTS.md, "Why the binding is not learned").
This stage gives the backbone that grounding on the sim's own renders, with no actions: the first
frames of ``scenes`` seeded resets of a task (head and both wrists, at rest), the instruction as the
prompt, the scripted demonstrator's first subtask as the target text, and the colour-saliency target
on the vision tokens (models/vision_aux.py, a function of the frame alone). Wrist cameras are dropped
at random, as in CLAP-NTP. The backbone's shape, the target's weight and the dropout are the CLAP-NTP
config's (``--config``), so the backbone fits the stages that start from it. It is saved as ``OUT/vlm``,
which a CLAP-NTP or CLAP-RF config takes as ``init``, as it would real weights.

    clap sim ground --config config/train/coloured_cubes/ntp.yaml --out runs/grounded [--scenes 4000 --steps 1500]

Renders are cached in ``OUT/renders-<task>-<first seed>-<scenes>-<px>.npz``. The scenes' seeds start at
``first_seed`` (20000), away from the demonstrations (0..), the validation (1000..) and test (2000..)
seeds. ``bench/binding_probe.py`` measures what the stage gives (the arm word on held-out scenes).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Grounding:
    """What the grounding trains on and for how long (the backbone's shape and targets: the NTP config)."""

    task: str = "coloured_cubes"
    scenes: int = 4000  # seeded resets rendered at rest, one sample each
    first_seed: int = 20_000
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3  # peak; 50 warm-up steps, then cosine to a tenth
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("scenes", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def first_frames(task_name: str, first: int, count: int, size: int,
                 cache: pathlib.Path | None = None) -> dict[str, np.ndarray]:
    """Seeds [first, first + count) of a task, at rest: images [N, 3, S, S, 3] uint8, instruction, first subtask."""
    path = None if cache is None else cache / f"renders-{task_name}-{first}-{count}-{size}.npz"
    if path is None or not path.is_file():
        from clap_train.data.images import resize_rgb

        from .scene import CAMERAS
        from .scripted import scripted_trajectory
        from .tasks import make_task

        task = make_task(task_name)
        scene = task.make_scene(image_size=224)
        images, instructions, subtasks = [], [], []
        try:
            for seed in range(first, first + count):
                spec = task.reset(scene, seed)
                frames = scene.render_all()
                images.append(np.stack([resize_rgb(frames[c], size, size) for c in CAMERAS]))
                instructions.append(spec.instruction)
                subtasks.append(next(s for s in scripted_trajectory(spec).subtasks if s))
        finally:
            scene.close()
        data = {"images": np.stack(images), "instruction": np.array(instructions), "subtask": np.array(subtasks)}
        if path is None:
            return data
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **data)
        tmp.replace(path)
    d = np.load(path)
    return {k: d[k] for k in ("images", "instruction", "subtask")}


def ground(cfg, run: Grounding, out: pathlib.Path, progress: bool = True) -> list[dict]:
    """Ground a backbone of ``cfg``'s shape and save it to ``out/vlm``; returns the loss every 50 steps.

    From the CLAP-NTP config ``cfg`` (``NTPTrainConfig``) it takes what it shares with that stage:
    the VLM's shape (``vlm``), ``vision_aux`` and its grid, and ``wrist_dropout``.
    """
    import torch
    from tqdm.auto import tqdm

    from clap_train.models.ntp import encode_batch, target_loss
    from clap_train.models.pretrained import Backbone, load_backbone
    from clap_train.models.vision_aux import VisionAux
    from clap_train.models.vlm import MRopePositions

    data = first_frames(run.task, run.first_seed, run.scenes, cfg.vlm.image_size, cache=out)
    torch.manual_seed(run.seed)
    rng = np.random.default_rng(run.seed)
    vlm, processor, vocab = load_backbone(dataclasses.replace(cfg.vlm, seed=run.seed), None, 1)  # stages add K
    model = Backbone(vlm, VisionAux(vlm, cfg.vision_aux_grid) if cfg.vision_aux > 0 else None).train()
    opt = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=0.0)
    positions = MRopePositions()
    history = []
    for step in tqdm(range(run.steps), desc="ground", disable=not progress, dynamic_ncols=True):
        scale = min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / run.steps)))
        for g in opt.param_groups:
            g["lr"] = run.lr * scale
        idx = rng.integers(0, run.scenes, run.batch_size)
        frames = [[im for c, im in enumerate(per) if c == 0 or rng.random() >= cfg.wrist_dropout]
                  for per in data["images"][idx]]  # HxWx3 uint8, the head always, each wrist maybe
        enc = encode_batch(processor, vocab, frames, list(data["instruction"][idx]), list(data["subtask"][idx]), None)
        inputs = enc.causal_inputs()
        inputs["position_ids"] = positions(vlm, enc.inputs)
        loss = target_loss(model(select=enc.predicting(enc.target_mask), **inputs), enc)
        if model.aux is not None:
            loss = loss + cfg.vision_aux * model.aux.loss(frames)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step + 1 == run.steps:
            history.append({"step": step + 1, "loss": round(float(loss.detach()), 5), "time": time.time()})
    if model.aux is not None:
        model.aux.detach()  # a training-only head: not part of the saved backbone
    tmp = out / "vlm.tmp"
    vlm.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if (out / "vlm").exists():
        import shutil

        shutil.rmtree(out / "vlm")
    tmp.replace(out / "vlm")
    return history
