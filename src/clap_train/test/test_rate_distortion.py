"""``clap eval rate-distortion``: Eq. 8, the Table-V table, the plot, the sweep."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

from clap_train.cli import main as clap_main
from clap_train.eval.rate_distortion import RDPoint, evaluate, markdown_table, parse_grid, plot, psnr_of, rate_of
from clap_train.models.act_vae import ActVAE, ActVAEConfig

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "nq,k,mse,psnr,rate",
    [(16, 256, 0.0004, 40.00, 0.086), (12, 128, 0.0023, 32.40, 0.070), (20, 256, 0.0003, 41.25, 0.104),
     (4, 256, 0.1022, 15.93, 0.054)],
)
def test_rate_and_psnr_reproduce_table_v(nq, k, mse, psnr, rate):
    assert psnr_of(mse) == pytest.approx(psnr, abs=0.01)
    assert rate_of(nq, k, mse) == pytest.approx(rate, abs=0.0015)
    # with the full 14-D action vector the rate halves
    assert rate_of(nq, k, mse, rate_dim=14) == pytest.approx(rate_of(nq, k, mse) / 2)


def test_table_marks_the_chosen_point_and_plot_is_written(tmp_path):
    pts = [RDPoint(8, 256, 0.004, psnr_of(0.004), rate_of(8, 256, 0.004), 100.0),
           RDPoint(16, 256, 0.0004, psnr_of(0.0004), rate_of(16, 256, 0.0004), 200.0)]
    md = markdown_table(pts, (16, 256))
    rows = md.strip().splitlines()
    assert rows[0].startswith("| Nq | K | MSE | PSNR (dB) | Rate (r)")
    assert rows[3] == "| **16** | **256** | **0.00040** | **40.00** | **0.086** | **200.0** |"
    assert "**" not in rows[2]
    plot(pts, (16, 256), tmp_path / "rd.png")
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'16-256'"):
        parse_grid("16-256")


def test_evaluate_measures_masked_reconstruction_through_the_tokens():
    torch.manual_seed(0)
    m = ActVAE(ActVAEConfig(chunk_len=8, action_dim=2, num_queries=2, codebook_size=4, d_model=16, layers=1,
                            decoder_layers=1, heads=2, code_dim=4))
    chunks = torch.rand(5, 8, 2)
    pads = torch.zeros(5, 8, dtype=torch.bool)
    pads[:, 6:] = True
    mse, ppl = evaluate(m, chunks, pads, batch_size=2)
    recon = m.decode_tokens(m.tokenize(chunks)).detach()
    assert mse == pytest.approx(((recon - chunks)[:, :6] ** 2).mean().item(), rel=1e-5)
    assert 1.0 <= ppl <= 4.0


def test_sweep_through_the_cli(tmp_path, capsys):
    out = tmp_path / "rd"
    argv = ["eval", "rate-distortion", "--config", str(ROOT / "config" / "train" / "tiny" / "act_vae.yaml"),
            "--synthetic", "3", "--out", str(out), "--grid", "4x16,8x32", "--chosen", "8x32",
            "--set", "loop.steps=20", "loop.save_every=20"]
    assert clap_main(argv) == 0
    points = json.loads((out / "rate_distortion.json").read_text())
    assert [(p["num_queries"], p["codebook_size"]) for p in points] == [(4, 16), (8, 32)]
    for p in points:
        assert p["psnr"] == pytest.approx(psnr_of(p["mse"]))
        assert p["rate"] == pytest.approx(rate_of(p["num_queries"], p["codebook_size"], p["mse"]))
    assert "| **8** | **32** |" in (out / "rate_distortion.md").read_text()
    assert (out / "rate_distortion.png").is_file()
    # a finished point is reused, not retrained
    mtime = (out / "runs" / "nq4_k16" / "act_vae" / "model.safetensors").stat().st_mtime
    assert clap_main(argv) == 0
    assert (out / "runs" / "nq4_k16" / "act_vae" / "model.safetensors").stat().st_mtime == mtime
    # bad input names itself
    assert clap_main([*argv[:-5], "--grid", "16by256"]) == 2
    assert "16by256" in capsys.readouterr().err
