"""Fixtures shared by clap_train's tests.

- one torch thread per test: the models here are tiny, so one intra-op thread is faster, and fair
  to other jobs on a 2-core machine;
- ``act_vae_dir``: a tiny random Act-VAE saved with ``save_pretrained`` (the NTP and post stages
  need one);
- ``sigkill_after_checkpoint``: runs a training command in a subprocess and kills it with SIGKILL
  once its run directory holds a checkpoint (the resume tests' "crash");
- ``lerobot``: LeRobot's own code in a venv of its own (scripts/lerobot_check/setup_venv.sh, built
  once per session), run as a subprocess: ``lerobot.read(dataset, rows)`` is what its reader sees.
"""

import os
import pathlib
import signal
import subprocess
import time

import pytest
import torch

from clap_train.models.act_vae import ActVAE, ActVAEConfig
from clap_train.train.checkpoint import latest_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def act_vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ActVAEConfig(codebook_size=32, d_model=32, layers=1, decoder_layers=1, heads=4, ffn_mult=2, code_dim=8)
    return ActVAE(cfg).save_pretrained(tmp_path_factory.mktemp("av") / "act_vae")


@pytest.fixture
def sigkill_after_checkpoint():
    """``kill(cmd, run_dir, timeout=60, min_step=1)``: start cmd, SIGKILL it after a checkpoint >= min_step."""

    def kill(cmd: list[str], run_dir: pathlib.Path, timeout: float = 60.0, min_step: int = 1) -> dict:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        try:
            while True:
                ckpt = latest_checkpoint(run_dir)
                if ckpt is not None and int(ckpt.name.split("-")[1]) >= min_step:
                    break
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, f"no checkpoint in {run_dir} within {timeout} s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        return env

    return kill


class LeRobot:
    """Runs the scripts of scripts/lerobot_check with the LeRobot venv's Python."""

    CHECK = pathlib.Path(__file__).resolve().parents[3] / "scripts" / "lerobot_check"

    def __init__(self, venv: pathlib.Path):
        self.venv = venv
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "LD_LIBRARY_PATH": str(venv / "ffmpeg-libs"),
                    "PYTHONPATH": ""}

    def run(self, script: str, *args, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin/python"), str(self.CHECK / script), *map(str, args)],
                              capture_output=True, text=True, timeout=300, env=self.env, cwd=cwd)

    def read(self, dataset: pathlib.Path, rows) -> dict:
        """What LeRobot's reader returns for ``rows`` of ``dataset`` (read_with_lerobot.py's JSON)."""
        import json

        run = self.run("read_with_lerobot.py", dataset, *rows)
        assert run.returncode == 0, f"LeRobot could not read {dataset}:\n{run.stderr[-4000:]}"
        return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def lerobot():
    setup = subprocess.run(["bash", str(LeRobot.CHECK / "setup_venv.sh")], capture_output=True, text=True,
                           timeout=540)
    assert setup.returncode == 0, f"cannot build the LeRobot venv:\n{setup.stdout[-2000:]}\n{setup.stderr[-4000:]}"
    return LeRobot(pathlib.Path(setup.stdout.strip().splitlines()[-1]))
