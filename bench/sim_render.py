"""Simulation speed and scripted-demonstrator success (clap_sim), measured in one run.

    python bench/sim_render.py [--frames 100] [--seeds 10] [--out bench/results/sim_bench.json]

Reports: render time per 224x224 frame with the project's settings (shadows and anti-aliasing
off, EGL) against MuJoCo's defaults for this scene (shadows on, 4x multisampling), one control
step of physics (16 substeps), recording speed of one full scripted episode to rosbag2 (mcap,
three cameras), and the scripted success rate per task over N seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from clap_sim.scene import BimanualScene  # first: it selects MuJoCo's EGL backend  # noqa: I100
import mujoco  # noqa: I100
import numpy as np
from clap_sim.recorder import record_episode
from clap_sim.scripted import run_scripted
from clap_sim.tasks import TASKS, make_task


def render_ms(scene: BimanualScene, frames: int) -> float:
    for cam in ("head", "left_wrist", "right_wrist"):
        scene.render(cam)  # warm-up
    t = time.perf_counter()
    for i in range(frames):
        scene.render(("head", "left_wrist", "right_wrist")[i % 3])
    return (time.perf_counter() - t) / frames * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim_bench.json")
    args = ap.parse_args()
    res: dict = {}

    fast = BimanualScene(image_size=224)
    fast.reset_arms()
    res["render_ms_per_frame_224"] = render_ms(fast, args.frames)
    slow = BimanualScene(image_size=224)
    slow.reset_arms()
    slow.physics.model.light_castshadow[:] = 1
    slow.physics.model.vis.quality.offsamples = 4
    slow._get_renderer()._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 1
    res["render_ms_per_frame_224_shadows_msaa"] = render_ms(slow, args.frames)
    slow.close()
    res["render_speedup"] = res["render_ms_per_frame_224_shadows_msaa"] / res["render_ms_per_frame_224"]
    t = time.perf_counter()
    for _ in range(300):
        fast.step()
    res["physics_ms_per_control_step"] = (time.perf_counter() - t) / 300 * 1e3
    fast.close()

    for key, compress in (("record_episode", True), ("record_episode_uncompressed", False)):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            rec = record_episode("transfer_cube", 0, tmp, storage="mcap", compress=compress)
            dt = time.perf_counter() - t
            size = sum(p.stat().st_size for p in Path(rec.path).rglob("*") if p.is_file())
        res[key] = {"task": "transfer_cube", "storage": "mcap", "zstd": compress, "frames": rec.frames,
                    "seconds": dt, "frames_per_s": rec.frames / dt, "realtime_factor": rec.frames / 30.0 / dt,
                    "bag_mb": size / 1e6, "success": rec.success}

    res["scripted_success"] = {}
    for name in sorted(TASKS):
        task = make_task(name)
        scene = task.make_scene(render=False)
        t = time.perf_counter()
        ok = [bool(run_scripted(task, s, scene=scene)[0]) for s in range(args.seeds)]
        scene.close()
        res["scripted_success"][name] = {"successes": sum(ok), "seeds": args.seeds,
                                         "seconds_per_episode_no_render": (time.perf_counter() - t) / args.seeds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    print(f"render 224x224: {res['render_ms_per_frame_224']:.1f} ms/frame (shadows+MSAA: "
          f"{res['render_ms_per_frame_224_shadows_msaa']:.1f} ms, x{res['render_speedup']:.1f}); "
          f"recording (zstd) {res['record_episode']['frames_per_s']:.0f} steps/s "
          f"({res['record_episode']['realtime_factor']:.1f}x real time, {res['record_episode']['bag_mb']:.1f} MB); "
          "scripted success "
          + ", ".join(f"{k} {v['successes']}/{v['seeds']}" for k, v in res["scripted_success"].items()))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
