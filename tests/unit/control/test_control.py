"""Control: losses and weights against hand-computed values, the policy, the dataset checks, validate."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from iwsft.config.control import FineTune
from iwsft.control import dataset, envs, losses
from iwsft.control.policy import TanhGaussianPolicy, ema_update, load, save
from iwsft.control.scores import normalised_score
from iwsft.control.training import fine_tune
from iwsft.evaluation.stats import t_half_width
from iwsft.errors import DataError, UserError

CONTROL = Path(__file__).resolve().parents[3] / "control"
MICRO = yaml.safe_load((CONTROL / "params.micro.yaml").read_text())


def test_bc_loss_is_the_mean_over_episodes_of_the_per_step_mean():
    logp = torch.tensor([[-1.0, -3.0], [-1.0, -1.0]])  # per-episode means -2 and -1
    assert losses.bc_loss(logp).item() == pytest.approx(1.5)


def test_trajectory_weights_by_hand():
    q = torch.tensor([[0.1, 0.3], [0.0, 0.0]])
    ref = torch.zeros(2, 2)
    raw, normalised = losses.trajectory_weights(q, ref, temp=10.0, w_max=1000.0)
    # mean_t(log q - log ref) = 0.2 and 0 -> exp(10 * 0.2) = e^2 and 1
    assert raw.tolist() == pytest.approx([math.exp(2.0), 1.0], rel=1e-6)
    assert normalised.tolist() == pytest.approx([math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)], rel=1e-6)
    assert normalised.sum().item() == pytest.approx(1.0)


def test_weights_clamp_at_w_max():
    raw, normalised = losses.trajectory_weights(torch.tensor([[3.0], [0.0]]), torch.zeros(2, 1), temp=10.0, w_max=1000.0)
    assert raw.tolist() == pytest.approx([1000.0, 1.0])  # exp(30) clamped
    assert normalised.tolist() == pytest.approx([1000 / 1001, 1 / 1001])


def test_iw_sft_loss_weights_each_episodes_mean_nll():
    logp = torch.tensor([[-1.0, -1.0], [-3.0, -3.0]], requires_grad=True)
    loss = losses.iw_sft_loss(logp, torch.tensor([0.75, 0.25]))
    assert loss.item() == pytest.approx(0.75 * 1 + 0.25 * 3)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.375, -0.375, -0.125, -0.125])  # -w_b / T


def test_diagnostics_ess_of_uniform_and_of_skewed_weights():
    same = losses.diagnostics(torch.ones(4), torch.zeros(4, 2), torch.zeros(4, 2), 1000.0)
    assert same["ess"] == pytest.approx(1.0) and same["normalised_sum"] == pytest.approx(1.0)
    skewed = losses.diagnostics(torch.tensor([3.0, 1.0]), torch.zeros(2, 1), torch.zeros(2, 1), 1000.0)
    assert skewed["ess"] == pytest.approx(16 / (2 * 10))  # (sum w)^2 / (n sum w^2)


def test_policy_log_prob_by_hand_and_save_load(tmp_path):
    policy = TanhGaussianPolicy(3, 2, hidden=8, depth=2)
    torch.nn.init.zeros_(policy.net[-1].weight)
    torch.nn.init.zeros_(policy.net[-1].bias)  # mean tanh(0) = 0, std exp(0) = 1
    logp = policy.log_prob(torch.zeros(1, 3), torch.tensor([[0.5, -1.0]]))
    clipped = 0.999
    expected = -0.5 * 0.25 - 0.5 * clipped**2 - math.log(2 * math.pi)
    assert logp.item() == pytest.approx(expected, rel=1e-6)
    save(policy, tmp_path / "p.safetensors")
    again = load(tmp_path / "p.safetensors")
    assert torch.equal(again.log_prob(torch.ones(2, 3), torch.zeros(2, 2)), policy.log_prob(torch.ones(2, 3), torch.zeros(2, 2)))


def test_ema_update():
    q, p = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    for module, value in ((q, 0.0), (p, 1.0)):
        torch.nn.init.constant_(module.weight, value)
        torch.nn.init.constant_(module.bias, value)
    ema_update(q, p, 0.9)
    assert q.weight.item() == pytest.approx(0.1)


def _episodes(n_episodes=6, length=5, obs_dim=3, act_dim=1, seed=0):
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    ends = np.zeros(n, bool)
    ends[length - 1::length] = True
    arrays = {"observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
              "actions": rng.uniform(-2, 2, size=(n, act_dim)).astype(np.float32),
              "rewards": rng.normal(size=n).astype(np.float32), "terminations": np.zeros(n, bool), "truncations": ends}
    return arrays


def test_at_step_zero_q_is_pi_ref_so_the_weights_are_uniform():
    arrays = _episodes()
    low, high = np.array([-2.0]), np.array([2.0])
    episodes = dataset.Episodes.from_arrays(arrays, low, high)
    torch.manual_seed(0)  # the same policy whatever ran before in this process
    reference = TanhGaussianPolicy(3, 1, hidden=16, depth=2)
    reference.set_normalisation(episodes.observations)
    with torch.no_grad():
        ref_logp = reference.log_prob(torch.from_numpy(episodes.observations), torch.from_numpy(episodes.actions)).numpy()
    settings = FineTune(steps=3, lr=1e-3, warmup=1, episodes=4, timesteps=3, temp=10.0, w_max=1000.0, ema_decay=0.9,
                        log_every=1)
    _, history = fine_tune(reference, episodes, np.array([0, 1, 2, 3, 1, 0]), ref_logp, settings, seed=0, weighted=True)
    first = history[0]
    assert first["weight_max"] == pytest.approx(1.0, abs=1e-5) and first["weight_min"] == pytest.approx(1.0, abs=1e-5)
    assert first["ess"] == pytest.approx(1.0) and first["normalised_sum"] == pytest.approx(1.0)
    for record in history:
        assert np.isfinite(record["weight_max"]) and 0 < record["ess"] <= 1 + 1e-6  # fp32 sums: 1.0000001 happens


def test_scores_and_intervals_by_hand():
    assert normalised_score(-200.0, -1000.0, 0.0) == pytest.approx(80.0)
    assert t_half_width([1.0, 3.0]) == pytest.approx(12.706204736 * math.sqrt(2) / math.sqrt(2), rel=1e-6)
    assert t_half_width([5.0]) == 0.0


def test_action_scaling_round_trips():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
    actions = np.array([[-2.0, 0.0], [1.0, 0.25]])
    assert np.allclose(envs.to_unit(actions, low, high), [[-1, -1], [0.5, -0.5]])
    assert np.allclose(envs.from_unit(envs.to_unit(actions, low, high), low, high), actions)


BAD = {
    "nan observation": (lambda a: a["observations"].__setitem__((7, 1), np.nan), ["observations", "index 7"]),
    "action out of bounds": (lambda a: a["actions"].__setitem__((12, 0), 5.0), ["actions", "index 12"]),
    "mismatched lengths": (lambda a: a.__setitem__("rewards", a["rewards"][:-2]), ["mismatched lengths", "rewards 28"]),
    "no end flag": (lambda a: a["truncations"].__setitem__(-1, False), ["last episode", "indices 25..29"]),
    "wrong obs dim": (lambda a: a.__setitem__("observations", a["observations"][:, :2]), ["observations", "[N, 3]"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_datasets_name_the_array_and_index(case):
    arrays = _episodes()
    spoil, words = BAD[case]
    spoil(arrays)
    with pytest.raises(DataError) as error:
        dataset.check("user.npz", arrays, 3, np.array([-2.0]), np.array([2.0]))
    message = str(error.value)
    assert message.startswith("user.npz") and all(word in message for word in words), message


def test_validate_command_on_a_bad_file_exits_1_without_traceback(tmp_path, capsys):
    from iwsft.cli.main import main

    arrays = _episodes(obs_dim=3)
    arrays["actions"] = np.clip(arrays["actions"], -2, 2)
    arrays["observations"][4, 0] = np.nan
    path = tmp_path / "mine.npz"
    dataset.write(path, arrays)
    assert main(["control", "validate", str(path), "--env", "Pendulum-v1"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "observations" in err and "index 4" in err and "Traceback" not in err
    (tmp_path / "junk.npz").write_text("not a zip")
    assert main(["control", "validate", str(tmp_path / "junk.npz"), "--env", "Pendulum-v1"]) == 1
    assert "not a readable .npz" in capsys.readouterr().err


def test_validate_command_accepts_scripted_data(tmp_path, capsys):
    from iwsft.cli.main import main
    from iwsft.control.scripted import generate

    path = tmp_path / "pendulum.npz"
    dataset.write(path, generate("Pendulum-v1", [0, "random"], 6, seed=0))
    assert main(["control", "validate", str(path), "--env", "Pendulum-v1"]) == 0
    assert "valid for Pendulum-v1, 12 episodes, 2400 transitions" in capsys.readouterr().out


def test_a_bad_file_source_stops_the_data_stage_before_it_writes(tmp_path, monkeypatch):
    from iwsft.config.control import check
    from iwsft.control.stages import data

    arrays = _episodes(n_episodes=12, length=5)
    arrays["actions"] = np.clip(arrays["actions"], -2, 2)
    arrays["truncations"][-1] = False  # the last episode never ends
    dataset.write(tmp_path / "mine.npz", arrays)
    monkeypatch.chdir(tmp_path)
    params = check({**MICRO, "envs": {"Pendulum-v1": {"source": "file", "path": "mine.npz"}}, "gates": {"min_episodes": 2}})
    with pytest.raises(DataError) as error:
        data.run(params)
    assert "mine.npz" in str(error.value) and "no end flag" in str(error.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", ["params.yaml", "params.micro.yaml"])
def test_the_params_files_validate_and_read_back_as_written(name):
    from iwsft.config.control import load

    params = load(CONTROL / name)
    assert params.model_dump(exclude_unset=True) == yaml.safe_load((CONTROL / name).read_text())
    assert params.curate.percentiles == [90, 95, 98] and all(type(p) is int for p in params.curate.percentiles)


def test_bad_control_params_are_named_by_key():
    from iwsft.config.control import check

    bad = {**MICRO, "envs": {"Pendulum-v1": {"source": "scripted", "noise": [0], "episodes_per_level": "6", "seed": 0}},
           "bc": {**MICRO["bc"], "stepz": 1}, "curate": {"percentiles": [95, 90]}}
    with pytest.raises(UserError) as error:
        check(bad, "control/params.yaml")
    message = str(error.value)
    for words in ("envs.Pendulum-v1.scripted.episodes_per_level", "bc.stepz: unknown key", "curate.percentiles: must be strictly increasing"):
        assert words in message, message


def test_control_gates_register_on_the_shared_runner():
    from iwsft import gates
    from iwsft.control import gates as control_gates

    assert gates.next_stage_for("control-quality") == "reference" and gates.next_stage_for("raw") == "curate"
    assert gates.registered_suite("control-evaluation") is control_gates.BOUNDARIES["control-evaluation"][0]
    assert gates.registered_suite("raw") is None
    with pytest.raises(ValueError):
        gates.register_boundary("raw", control_gates.BOUNDARIES["control-quality"][0], "train")


BAD_FILES = Path(__file__).resolve().parents[2] / "data" / "bad"
BAD_FILE_CASES = yaml.safe_load((BAD_FILES / "cases.yaml").read_text())["control"]


def test_every_bad_control_file_is_a_case():
    assert {path.name for path in (BAD_FILES / "control").iterdir()} == {case["file"] for case in BAD_FILE_CASES}


@pytest.mark.parametrize("case", BAD_FILE_CASES, ids=[case["file"] for case in BAD_FILE_CASES])
def test_validate_names_what_is_wrong_with_a_file_that_is_no_npz_of_arrays(case, capsys):
    """tests/data/bad/cases.yaml `control`: a .npy under an .npz name, an object (pickled) array named
    by its name, a pickle: one message each, never a TypeError, never loaded with allow_pickle."""
    from iwsft.cli.main import main

    path = BAD_FILES / "control" / case["file"]
    assert main(["control", "validate", str(path), "--env", "Pendulum-v1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"iwsft control: error: {path}: ") and "Traceback" not in err
    for fragment in case["expect"]:
        assert fragment in err, err
