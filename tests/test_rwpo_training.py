"""Training of the RWPO transformer: targets, losses decrease, checkpoints resume identically, config/CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from invprob.solvers.learned import (
    GaussianMixtureTarget,
    RWPOConfig,
    RWPOTransformer,
    SparseLaplaceTarget,
    SparseLinearProblem,
    knn_kl,
    sliced_wasserstein,
)
from invprob.solvers.learned.training import (
    ReconstructionTrainConfig,
    TrainConfig,
    crps_loss,
    energy_score,
    train_from_config,
    train_generative,
    train_reconstruction,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- targets -----------------------------------------------------------------------------------------------
def test_sparse_laplace_target_normaliser_and_sampler():
    t = SparseLaplaceTarget(2, lambda_=2.0, scale=torch.tensor([1.0, 0.7]), beta=1.3)
    z = torch.linspace(-12, 12, 400_001, dtype=torch.float64)
    dz = float(z[1] - z[0])
    log_z, means = 0.0, []
    for i in range(2):
        lp = -t.beta * ((z - t.mean[i]) ** 2 / (2 * t.scale[i] ** 2) + t.lambda_ * z.abs())
        w = lp.exp()
        log_z += math.log(float(w.sum()) * dz)
        means.append(float((w * z).sum() / w.sum()))
    assert abs(t.log_normaliser - log_z) < 1e-6
    x = t.sample(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for i in range(2):
        assert abs(float(x[:, i].mean()) - means[i]) < 0.01
    # exact samples: the kNN KL is near 0 in 2-D
    assert abs(knn_kl(x[:3000], t)) < 0.05


def test_mixture_target_normalised():
    t = GaussianMixtureTarget(2)
    z = torch.linspace(-8, 8, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(z, z, indexing="ij"), -1).reshape(-1, 2)
    mass = float(t.log_prob(grid).exp().sum()) * float(z[1] - z[0]) ** 2
    assert abs(mass - 1) < 1e-4
    x = t.sample(4000, generator=torch.Generator().manual_seed(0))
    assert abs(knn_kl(x, t)) < 0.1
    y = t.sample(4000, generator=torch.Generator().manual_seed(1))
    assert sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0)) < 0.15
    assert sliced_wasserstein(x, y + 1.0, generator=torch.Generator().manual_seed(0)) > 0.5


def test_scoring_rules():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g)
    parts = torch.randn(3, 40, 5, generator=g)
    # CRPS via the sort identity equals the direct double sum
    n = parts.shape[1]
    direct = (parts - x[:, None]).abs().mean(1).sum(-1) - (
        (parts[:, :, None] - parts[:, None]).abs().sum((1, 2)) / (2 * n * (n - 1))
    ).sum(-1)
    torch.testing.assert_close(crps_loss(parts, x), direct)
    # proper: a well-centred ensemble beats a shifted one, for both scores
    good, bad = x[:, None] + 0.1 * parts, x[:, None] + 0.1 * parts + 1.0
    assert (crps_loss(good, x) < crps_loss(bad, x)).all()
    assert (energy_score(good, x) < energy_score(bad, x)).all()


# -- training ----------------------------------------------------------------------------------------------
def _small_model(**kw):
    torch.manual_seed(0)
    base = dict(dim=2, n_blocks=3, hidden=16, lambda_=2.0, h=0.1, T=0.3, base_std=1.5)
    base.update(kw)
    return RWPOTransformer(RWPOConfig(**base))


@pytest.mark.parametrize("logdet", ["joint", "exact", "hutchinson"])
def test_generative_training_reduces_the_loss(logdet):
    target = SparseLaplaceTarget(2)
    model = _small_model()
    cfg = TrainConfig(n_iter=40, lr=1e-2, n_particles=32, logdet=logdet, eval_every=20, eval_samples=512,
                      log_every=5, checkpoint_every=0)
    res = train_generative(model, target, cfg, progress=False)
    loss = res.history["loss"]
    assert sum(loss[-2:]) / 2 < sum(loss[:2]) / 2 - 0.2
    assert len(res.history["kl_knn"]) == 2 and all(math.isfinite(v) for v in res.history["sw1"])


def test_reconstruction_training_reduces_the_score():
    problem = SparseLinearProblem(dim=8, n_meas=5, sparsity=2)
    torch.manual_seed(0)
    model = RWPOTransformer(RWPOConfig(dim=8, cond_dim=5, n_blocks=3, hidden=16, lambda_=0.2, h=1.0, T=1.0,
                                       first_guess=True, learn_lambda=True))
    cfg = ReconstructionTrainConfig(n_iter=60, lr=1e-2, batch_size=16, n_particles=16, eval_every=60,
                                    eval_sets=64, log_every=5, checkpoint_every=0, hjb_weight=1e-4)
    res = train_reconstruction(model, problem, cfg, progress=False)
    score = res.history["score"]
    assert sum(score[-3:]) / 3 < 0.7 * sum(score[:2]) / 2
    assert res.history["rel_l1"][-1] < 1.0
    assert model.attentions[0].lambda_.item() != pytest.approx(0.2)  # lambda_ was trained


def test_checkpoint_resume_gives_identical_continuation(tmp_path):
    target = SparseLaplaceTarget(2)
    cfg = TrainConfig(n_iter=6, n_particles=16, logdet="exact", eval_every=3, eval_samples=64, log_every=1,
                      checkpoint_every=3)
    straight = train_generative(_small_model(), target, cfg, out_dir=tmp_path / "a", progress=False)
    assert torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["step"] == 6
    train_generative(_small_model(), target, cfg, out_dir=tmp_path / "c", progress=False, stop_at=3)
    assert torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)["step"] == 3
    resumed = train_generative(_small_model(), target, cfg, out_dir=tmp_path / "c", resume=True, progress=False)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert straight.history["loss"] == resumed.history["loss"]
    assert straight.history["kl_knn"] == resumed.history["kl_knn"]
    assert (tmp_path / "c" / "model" / "config.json").exists() and (tmp_path / "c" / "history.json").exists()
    assert not list((tmp_path / "c").glob("*.tmp"))
    with pytest.raises(ValueError, match="no checkpoint"):
        train_generative(_small_model(), target, cfg, out_dir=tmp_path / "d", resume=True, progress=False)


def test_training_config_validation():
    with pytest.raises(ValueError, match="n_iter"):
        TrainConfig(n_iter=0)
    with pytest.raises(ValueError, match="logdet"):
        TrainConfig(logdet="slq")
    with pytest.raises(ValueError, match="n_particles"):
        ReconstructionTrainConfig(n_particles=1)
    with pytest.raises(ValueError, match="loss"):
        ReconstructionTrainConfig(loss="mse")
    with pytest.raises(ValueError, match="dim"):
        train_generative(_small_model(dim=3), SparseLaplaceTarget(2), TrainConfig(n_iter=1), progress=False)


# -- config files and CLI ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples" / "configs").glob("rwpo_*.json")))
def test_shipped_configs_run_shortened(tmp_path, name):
    spec = json.loads((ROOT / "examples" / "configs" / name).read_text())
    if spec.get("problem", {}).get("name") == "eit":
        pytest.importorskip("invprob.operators.eit")
        spec["problem"]["h"] = 0.2  # a coarse mesh: this test checks the plumbing, not the physics
    spec["training"].update(n_iter=2, eval_every=2, checkpoint_every=1)
    if "eval_samples" in spec["training"]:
        spec["training"]["eval_samples"] = 128
    if "eval_sets" in spec["training"]:
        spec["training"]["eval_sets"] = 8
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(spec))
    res = train_from_config(cfg, out_dir=tmp_path / "out", progress=False, device="cpu")
    assert (tmp_path / "out" / "checkpoint.pt").exists()
    assert RWPOTransformer.load(tmp_path / "out" / "model").config == res.model.config
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train_from_config(cfg, out_dir=tmp_path / "out", progress=False, device="cpu")


def test_cli_train_rwpo(tmp_path, capsys):
    from invprob.apps.train_cli import main

    spec = json.loads((ROOT / "examples" / "configs" / "rwpo_sparse2d.json").read_text())
    spec["training"].update(n_iter=4, eval_every=0, checkpoint_every=2)
    spec["model"].update(n_blocks=2, hidden=8)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(spec))
    out = tmp_path / "run"
    assert main(["rwpo", "--config", str(cfg), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert "trained l1 RWPO transformer" in capsys.readouterr().out
    assert main(["rwpo", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main(["rwpo", "--config", str(cfg), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert main(["rwpo", "--config", str(tmp_path / "nope.json"), "--out", str(out), "--force"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**spec, "model": {"heads": 2}}))
    assert main(["rwpo", "--config", str(bad), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "unknown model config" in capsys.readouterr().err


@pytest.mark.parametrize("entry", ["invprob", "train_cli"])
@pytest.mark.parametrize("device", ["cuda:1", "tpu", "cuda:x"])
def test_cli_train_rwpo_refuses_a_bad_device(tmp_path, capsys, entry, device):
    if device == "cuda:1" and torch.cuda.device_count() > 1:
        pytest.skip("cuda:1 exists here")
    if entry == "invprob":
        from invprob.apps.cli import main

        argv = ["train", "rwpo"]
    else:
        from invprob.apps.train_cli import main

        argv = ["rwpo"]
    cfg = ROOT / "examples" / "configs" / "rwpo_sparse2d.json"
    code = main([*argv, "--config", str(cfg), "--out", str(tmp_path / "run"), "--device", device, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--device" in err and device in err, err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_cli_train_rwpo_device_reaches_the_training(tmp_path, monkeypatch, capsys):
    import invprob.solvers.learned.training as training
    from invprob.apps.cli import main

    seen = {}
    real = training.train_from_config

    def spy(*args, **kwargs):
        seen["device"] = kwargs["device"]
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_from_config", spy)
    spec = json.loads((ROOT / "examples" / "configs" / "rwpo_sparse2d.json").read_text())
    spec["training"].update(n_iter=1, eval_every=0, checkpoint_every=0)
    spec["model"].update(n_blocks=1, hidden=4)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(spec))
    assert main(["train", "rwpo", "--config", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--seed", "3", "--no-progress"]) == 0
    assert seen["device"] == torch.device("cpu")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["seed"] == 3


def test_eit_phantom_problem():
    pytest.importorskip("invprob.operators.eit")
    from invprob.solvers.learned.eit_problem import EITPhantomProblem

    problem = EITPhantomProblem(h=0.15, n_electrodes=16, noise=0.01)
    assert problem.n_meas == 208
    x, c = problem.simulate(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, problem.dim) and c.shape == (4, 208) and x.dtype == torch.float32
    assert ((x != 0).float().mean(-1) < 0.5).all() and ((x != 0).sum(-1) > 0).all()  # sparse, never empty
    x2, c2 = problem.simulate(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(c, c2)
    clean = problem.data(x.double(), generator=None) if problem.noise == 0 else None
    assert clean is None
    assert float(c.abs().mean()) > 0.05  # the inclusions are visible in the normalised data


@pytest.mark.parametrize("attention", ["none", "l1"])
def test_evaluation_joint_kl_is_the_tracked_density_kl(attention):
    """``kl_joint`` is E[log q - log pi] from the tracked density: for the untrained flow (identity drift, no
    attention) it is the exact KL(N(0, s^2 I) || pi), here checked against an independent Monte Carlo estimate;
    with attention it bounds the pooled samples' kNN KL from above up to estimator noise."""
    from invprob.solvers.learned.training import evaluate_generative

    target = SparseLaplaceTarget(2)
    torch.manual_seed(0)
    model = RWPOTransformer(RWPOConfig(dim=2, n_blocks=2, hidden=8, attention=attention, lambda_=2.0, h=0.1, T=0.3,
                                       base_std=1.5))
    ev = evaluate_generative(model, target, 4096, 64, seed=7)
    assert set(ev) == {"kl_knn", "sw1", "kl_joint"}
    if attention == "none":
        z = 1.5 * torch.randn(200_000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        logq = -0.5 * (z / 1.5).pow(2).sum(-1) - 2 * math.log(1.5) - math.log(2 * math.pi)
        terms = logq - target.log_prob(z)
        exact, se = float(terms.mean()), float(terms.std() / math.sqrt(len(terms)))
        per_eval_se = float(terms.std() / math.sqrt(4096))
        assert abs(ev["kl_joint"] - exact) < 4 * per_eval_se + 4 * se
        assert exact > 1.0  # the untrained flow is far from the target: the check has teeth
    else:
        assert ev["kl_joint"] > ev["kl_knn"] - 0.1
