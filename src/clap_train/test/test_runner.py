"""The stage runner: one command line for every stage, paths as config keys, module boundaries."""

import ast
import pathlib

import pytest

from clap_train.cli import main as clap_main
from clap_train.config import load_config
from clap_train.train import ntp, rf, runner

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "clap_train"
STAGE_MODULES = ("act_vae", "vd_vae", "ntp", "rf")


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_shorthand_flags_are_config_overrides_in_command_line_order():
    base = ["--run-dir", "R", "--synthetic", "2"]
    args = runner.parse_args(ntp.SPEC, [*base, "--act-vae", "A", "--set", "loop.steps=3000"])
    assert args.set == ['act_vae="A"', "loop.steps=3000"]
    cfg = load_config(ntp.NTPTrainConfig, None, args.set)
    assert cfg.act_vae == "A" and cfg.loop.steps == 3000
    # no flag shadows the config: whatever comes last on the command line wins, as with --set alone
    later = runner.parse_args(ntp.SPEC, [*base, "--act-vae", "A", "--set", "act_vae=B"])
    assert load_config(ntp.NTPTrainConfig, None, later.set).act_vae == "B"
    args = runner.parse_args(rf.SPEC, [*base, "--init", "runs/ntp/policy"])
    assert load_config(rf.RFTrainConfig, None, args.set).init == "runs/ntp/policy"


def test_a_missing_earlier_stage_is_named_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    assert runner.main(ntp.SPEC, ["--run-dir", str(run), "--synthetic", "1"]) == 2
    assert "act_vae" in capsys.readouterr().err
    assert not run.exists()


def test_rf_is_the_stage_and_post_its_alias(capsys):
    for name in ("rf", "post"):
        with pytest.raises(SystemExit) as exit_:
            clap_main(["train", name, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert f"clap train {name}" in out and "Knowledge Matching" in out


def test_eval_imports_no_train_module():
    for path in sorted((PACKAGE / "eval").glob("*.py")):
        bad = [m for m in _imports(path) if m.startswith("clap_train.train")]
        assert not bad, f"{path.name} imports {bad}"


def test_no_stage_module_imports_another_stage():
    for name in STAGE_MODULES:
        found = _imports(PACKAGE / "train" / f"{name}.py")
        others = [m for m in found if any(m.startswith(f"clap_train.train.{o}") for o in STAGE_MODULES if o != name)]
        assert not others, f"train/{name}.py imports {others}"


def test_run_steps_skips_finished_steps_and_stops_at_a_failure(tmp_path, capsys):
    done = tmp_path / "done.marker"
    steps = [runner.Step("help", ("convert", "--help"), tmp_path / "help.done", touch=True),
             runner.Step("finished before", ("convert", "--no-such-flag"), done),
             runner.Step("bad", ("convert", str(tmp_path / "no_bags"), "--out", str(tmp_path / "ds")),
                         tmp_path / "bad.done", touch=True),
             runner.Step("never", ("convert", "--help"), tmp_path / "never.done", touch=True)]
    done.write_text("")
    results = runner.run_steps(steps)
    assert [(r.name, r.status) for r in results] == [("help", "ok"), ("finished before", "skipped"),
                                                     ("bad", "FAILED (exit 2)")]
    assert runner.failed(results) and (tmp_path / "help.done").is_file()
    assert not (tmp_path / "bad.done").exists() and not (tmp_path / "never.done").exists()
    assert not runner.failed(runner.run_steps(steps[:2]))  # now both are done: nothing runs
    assert "$ clap convert --help" in capsys.readouterr().out
