"""Restart sampling (vdm.samplers.Restart, runtime/sampling.py): finished videos noised again and
finished again, on real checkpoints, through the Python API and the CLIs."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from vdm.cli.eval import main as eval_main
from vdm.cli.run import main as run_main
from vdm.diffusion import Schedule, timestep_at_snr
from vdm.errors import VdmError
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sample, sampler_for, step_generator
from vdm.samplers import Restart, parse_restarts


def test_restarts_parse_as_snr_and_steps_and_bad_ones_are_refused():
    assert parse_restarts("0.01:6") == (Restart(0.01, 6),)
    assert parse_restarts("0.01:6, 1:4") == (Restart(0.01, 6), Restart(1.0, 4))
    assert parse_restarts("none") == parse_restarts("") == ()
    assert str(Restart(0.01, 6)) == "0.01:6"
    for text, message in [("0.01", "not SNR:STEPS"), ("a:6", "not SNR:STEPS"), ("0.01:1.5", "not SNR:STEPS"),
                          ("0:6", "positive"), ("-1:6", "positive"), ("nan:6", "positive"), ("inf:6", "positive"),
                          ("0.01:0", "at least 1 step"), ("0.01:6,", "not SNR:STEPS")]:
        with pytest.raises(VdmError, match=message):
            parse_restarts(text)


def test_each_restart_pass_starts_at_the_timestep_nearest_its_snr(tiny_checkpoint):
    generator = VideoGenerator(tiny_checkpoint, device="cpu", precision="fp32")
    abar = Schedule.from_config(generator.backend.diffusion_config).alphas_cumprod
    restarts = (Restart(0.01, 4), Restart(1.0, 3), Restart(1e9, 5))
    _, plan = generator.check_request(2, num_steps=6, restarts=restarts)
    first, second, third = plan.restarts
    snr = abar / (1 - abar)
    assert first.timesteps[0] == timestep_at_snr(abar, 0.01) and len(first.timesteps) == 4
    assert math.isclose(math.log(snr[first.timesteps[0]]), math.log(0.01), abs_tol=0.05)
    assert second.timesteps[0] == timestep_at_snr(abar, 1.0) < first.timesteps[0] and len(second.timesteps) == 3
    assert third.timesteps == [0]  # no more timesteps than lie below the restart's
    assert plan.num_calls == 6 + 4 + 3 + 1
    assert f"restarted from t={first.timesteps[0]} in 4 steps" in plan.describe()
    assert generator.check_request(2, num_steps=6)[1].describe() == plan.sampler.describe()


def test_a_restart_noises_the_finished_videos_again_and_finishes_them(tiny_checkpoint):
    generator = VideoGenerator(tiny_checkpoint, device="cpu", precision="fp32")
    calls = []
    restarted = generator.generate(2, num_steps=4, seed=3, restarts=(Restart(0.1, 3),),
                                   on_step=lambda i, total: calls.append((i, total)))
    assert calls == [(i, 7) for i in range(7)]  # one count over both passes
    # By hand: the plain videos, noised with the seed's first step draw, finished from that timestep.
    finished = generator.generate(2, num_steps=4, seed=3)
    backend = generator.backend
    start = timestep_at_snr(Schedule.from_config(backend.diffusion_config).alphas_cumprod, 0.1)
    again = sampler_for(backend, "unipc", 3, start=start)
    noise = torch.randn(finished.shape, generator=step_generator(3, torch.device("cpu")))
    abar = again.abars[0]
    by_hand = sample(backend, math.sqrt(abar) * finished + math.sqrt(1 - abar) * noise, again)
    torch.testing.assert_close(restarted, by_hand)
    assert (restarted - finished).abs().max() > 1e-3
    torch.testing.assert_close(generator.generate(2, num_steps=4, seed=3, restarts=(Restart(0.1, 3),)), restarted)


def test_a_stochastic_sampler_restarts_with_its_own_plan(tiny_checkpoint):
    generator = VideoGenerator(tiny_checkpoint, device="cpu", precision="fp32")
    args = dict(num_steps=3, seed=1, sampler="dpm++2m-sde")
    once, twice = (generator.generate(2, **args, restarts=r) for r in ((Restart(1, 2),), (Restart(1, 2),) * 2))
    assert once.shape == twice.shape == (2, 3, 4, 8, 8) and (once - twice).abs().max() > 1e-3
    assert torch.isfinite(twice).all() and twice.abs().max() <= 1


def test_vdm_run_and_vdm_eval_take_restarts_and_refuse_bad_ones_before_loading(tmp_path, tiny_checkpoint):
    run = CliRunner().invoke(run_main, [str(tiny_checkpoint), "--steps", "3", "-n", "1", "--restart", "0.1:2",
                                        "--device", "cpu", "--out", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    assert "restarted from t=" in run.output and "(5 network calls)" in run.output
    assert "median of 5" in run.output and (tmp_path / "out" / "sample_000.mp4").is_file()
    plain = CliRunner().invoke(run_main, [str(tiny_checkpoint), "--steps", "3", "-n", "1", "--device", "cpu",
                                          "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0 and "restarted" not in plain.output  # a MODEL of its own: none by default

    report = tmp_path / "eval.json"
    scored = CliRunner().invoke(eval_main, [str(tiny_checkpoint), "-n", "2", "--steps", "2", "--restart", "0.1:2,1:1",
                                            "--loss-batches", "1", "--from-snr", "1", "--device", "cpu",
                                            "--json", str(report)])
    assert scored.exit_code == 0, scored.output
    result = json.loads(report.read_text())
    assert result["restarts"] == ["0.1:2", "1:1"] and result["network_calls"] == 5
    assert len(result["from_snr"][0]["timesteps"]) == 2  # finishing held-out clips: the sampler alone

    for cli in (run_main, eval_main):
        bad = CliRunner().invoke(cli, [str(tmp_path / "missing.safetensors"), "--restart", "0.01"])
        assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "not SNR:STEPS" in bad.output
