"""How right the pseudo action tokens are that ``clap label-videos`` gave a pipeline's human-look videos.

The human-look videos of clap_sim are scripted episodes (clap_sim.human_videos), so, unlike a real
human video, their true actions are known: the scripted trajectory of the episode's task and seed
(both read from the video's file name, ``<task>_<seed>.mp4``). For every labelled frame t whose
chunk a_t..a_{t+H-1} lies inside the episode, the run's Act-VAE tokenises the true chunk and the
pseudo tokens in ``human_dataset/meta/pseudo_tokens.parquet`` are compared with them, position by
position, against the independent-predictor baseline (sum p q) and the permutation baseline
(eval/token_agreement.py). Frames are at the simulation rate, which is the datasets' rate.
``true_token_dataset`` copies the human dataset with those true tokens as its labels: the upper
bound of perfect pseudo-labels (bench/human_transfer.py). bench/pseudo_label_quality.py prints it.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import time

from clap_train.data.recording.lerobot_format import stored_episodes
from clap_train.data.samples.action_space import ActionSpace
from clap_train.data.samples.pseudo_tokens import read_pseudo_tokens, token_table, write_sidecar
from clap_train.eval.token_agreement import agreement_stats
from clap_train.models.act_vae import ActVAE
import numpy as np
import torch

from .scripted import scripted_trajectory
from .tasks import make_task

NAME = re.compile(r"(?P<task>.+)_(?P<seed>\d+)\.mp4$")


def scripted_tokens(human_ds: pathlib.Path, act: ActVAE,
                    space: ActionSpace) -> dict[tuple[int, int], tuple[list[int], bool]]:
    """The Act-VAE tokens of the true chunk of every frame of a clap_sim human-video dataset.

    Returns {(episode_index, frame_index): (tokens, whether the chunk is whole)}. A chunk that runs
    past the episode's end holds its last action (the scripted arm is at rest there).
    """
    horizon = act.config.chunk_len
    out = {}
    for index, ep in enumerate(stored_episodes(human_ds)):
        m = NAME.search(pathlib.Path(ep.meta["source"]).name)
        if m is None:
            raise ValueError(f"{ep.meta['source']}: not a clap_sim human video name (<task>_<seed>.mp4)")
        actions = scripted_trajectory(make_task(m["task"]).sample(int(m["seed"]))).actions14().astype(np.float64)
        held = np.concatenate([actions, np.repeat(actions[-1:], horizon, axis=0)])
        chunks = np.stack([space.encode(held[t:t + horizon], held[max(t - 1, 0)]) for t in range(len(actions))])
        with torch.no_grad():
            tokens = act.tokenize(torch.as_tensor(chunks, dtype=torch.float32)).tolist()
        out.update({(index, t): (tok, t + horizon <= len(actions)) for t, tok in enumerate(tokens)})
    return out


def load_act_vae(run: pathlib.Path) -> tuple[ActVAE, ActionSpace]:
    """The run's Act-VAE (OUT/runs/act_vae/act_vae) and its action space."""
    act_dir = run / "runs" / "act_vae" / "act_vae"
    return ActVAE.from_pretrained(act_dir).eval(), ActionSpace.load(act_dir)


def quality(run: pathlib.Path) -> dict:
    """Agreement of the run's pseudo tokens with the tokens of the true, whole chunks, and its baselines."""
    act, space = load_act_vae(run)
    pseudo = read_pseudo_tokens(run / "human_dataset")
    true = scripted_tokens(run / "human_dataset", act, space)
    keys = [k for k, (_, whole) in true.items() if whole and k in pseudo]
    stats = agreement_stats(torch.tensor([pseudo[k] for k in keys]), torch.tensor([true[k][0] for k in keys]),
                            act.config.codebook_size)
    stats["ratio_to_baseline"] = stats["agreement"] / max(stats["baseline"], 1e-12)
    return stats


def true_token_dataset(out: pathlib.Path) -> pathlib.Path:
    """A copy of OUT/human_dataset whose sidecar holds the Act-VAE tokens of the videos' true actions."""
    dest = out / "human_dataset_true"
    if not (dest / ".labelled").exists():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(out / "human_dataset", dest, ignore=shutil.ignore_patterns("pseudo_tokens.parquet"))
        tokens = scripted_tokens(dest, *load_act_vae(out))
        table = token_table((e, f, tok) for (e, f), (tok, _) in tokens.items())
        write_sidecar(table, dest, {"source": "true actions of the scripted videos"})
        (dest / ".labelled").write_text(f"{time.time()}\n")
    return dest
