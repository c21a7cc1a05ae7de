"""invprob.bnn: the BNN regression potential (gradient, batching, formula), data sets, splits, scores, the example."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from taylor import randn, taylor_ratios

from invprob.bnn import (
    BNNConfig,
    BNNRegression,
    RegressionDataset,
    Standardizer,
    fit_map,
    load_csv_regression,
    make_friedman,
    make_sine,
    predictive_scores,
    split_dataset,
    train_test_splits,
)
from invprob.solvers.samplers import PBRWP, SVGD, AdamPreconditioner

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bnn_regression.py"


def tiny_model(n=30, p=3, H=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=gen, dtype=torch.float64)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    return BNNRegression(x, y, BNNConfig(n_hidden=H, a0=1.5, b0=0.2))


# ------------------------------------------------------------------------------------------------ potential
def test_gradient_passes_the_taylor_test_and_matches_autograd():
    model = tiny_model()
    theta = model.initial_particles(3, seed=1) + 0.3 * randn((3, model.dim), 2)
    v = randn((3, model.dim), 3)
    ratios, rem = taylor_ratios(model.fn, model.grad, theta, v, h0=1e-5, n=4)  # below the kinks
    assert torch.allclose(ratios, torch.full_like(ratios, 4.0), atol=0.3), ratios
    t = theta.clone().requires_grad_(True)
    (g_ad,) = torch.autograd.grad(model.fn(t).sum(), t)
    assert torch.allclose(model.grad(theta), g_ad, rtol=1e-10, atol=1e-10)
    f, g, dg = model.value_and_grad(theta)
    assert torch.equal(f, model.fn(theta)) and torch.equal(g, model.grad(theta)) and dg is None


def test_batched_forward_and_potential_equal_a_per_particle_loop():
    model = tiny_model()
    theta = model.initial_particles(5, seed=0) + 0.1 * randn((5, model.dim), 4)
    out, fn, g = model.forward(theta), model.fn(theta), model.grad(theta)
    assert out.shape == (5, 30) and fn.shape == (5,) and g.shape == (5, model.dim)
    for i in range(5):
        w = model.unpack(theta[i : i + 1])
        ref = torch.relu(model.x @ w.W1[0] + w.b1[0]) @ w.w2[0] + w.b2[0]  # one network, written plainly
        assert torch.allclose(out[i], ref, atol=1e-12)
        assert torch.allclose(model.fn(theta[i : i + 1])[0], fn[i], atol=1e-9)
        assert torch.allclose(model.grad(theta[i : i + 1])[0], g[i], atol=1e-9)


def test_potential_equals_a_hand_computation_on_a_tiny_net():
    # p = 1 input, H = 2 hidden units, n = 3 points: every term of V written out with math
    x = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    y = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    a0, b0 = 2.0, 0.5
    model = BNNRegression(x, y, BNNConfig(n_hidden=2, a0=a0, b0=b0))
    W1, b1, w2, b2, lg, ll = [1.0, -2.0], [0.1, 0.2], [0.7, -0.4], 0.05, 0.3, -0.6
    theta = torch.tensor([[*W1, *b1, *w2, b2, lg, ll]], dtype=torch.float64)
    sse = 0.0
    for xi, yi in zip([-1.0, 0.5, 2.0], [0.3, -0.2, 1.0], strict=True):
        f = sum(w2[h] * max(0.0, W1[h] * xi + b1[h]) for h in range(2)) + b2
        sse += (f - yi) ** 2
    wsq = sum(v * v for v in [*W1, *b1, *w2, b2])
    g, lam, m = math.exp(lg), math.exp(ll), 7
    log_lik = sum(-0.5 * math.log(2 * math.pi / g) for _ in range(3)) - 0.5 * g * sse
    log_prior_w = -0.5 * m * math.log(2 * math.pi / lam) - 0.5 * lam * wsq
    # Gamma(a0, rate b0) densities of gamma and lambda, times the Jacobians d gamma / d log gamma = gamma
    def log_gamma_pdf(t):
        return a0 * math.log(b0) - math.lgamma(a0) + (a0 - 1) * math.log(t) - b0 * t + math.log(t)
    expected = -(log_lik + log_prior_w + log_gamma_pdf(g) + log_gamma_pdf(lam))
    assert model.event_shape == (9,)
    assert float(model.fn(theta)) == pytest.approx(expected, rel=1e-12)


def test_initial_particles_are_seeded_and_set_precisions_at_their_conditional_modes():
    model = tiny_model()
    a = model.initial_particles(4, seed=3)
    assert torch.equal(a, model.initial_particles(4, seed=3)) and not torch.equal(a, model.initial_particles(4, seed=4))
    g = model.grad(a)
    assert torch.allclose(g[:, -2:], torch.zeros(4, 2, dtype=torch.float64), atol=1e-9)  # dV/dlog = 0 there


def test_bad_inputs_raise_one_line_value_errors():
    with pytest.raises(ValueError, match="n_hidden"):
        BNNConfig(n_hidden=0)
    with pytest.raises(ValueError, match="b0"):
        BNNConfig(b0=-1.0)
    with pytest.raises(ValueError, match=r"x must be \(n, p\)"):
        BNNRegression(torch.zeros(5), torch.zeros(5))
    model = tiny_model()
    with pytest.raises(ValueError, match="theta must have shape"):
        model.fn(torch.zeros(2, model.dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 10 rows"):
        RegressionDataset("few", np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        RegressionDataset("nan", np.full((12, 1), np.nan), np.zeros(12))


# ------------------------------------------------------------------------------------------------ data
def test_splits_are_disjoint_cover_the_rows_and_are_reproducible():
    splits = train_test_splits(101, n_splits=5, test_fraction=0.1, seed=7)
    assert len(splits) == 5
    for tr, te in splits:
        assert len(te) == 10 and len(tr) == 91
        assert not set(tr) & set(te) and sorted({*tr, *te}) == list(range(101))
    again = train_test_splits(101, n_splits=5, test_fraction=0.1, seed=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again, strict=True))
    other = train_test_splits(101, n_splits=5, test_fraction=0.1, seed=8)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits, other, strict=True))
    assert len({tuple(te) for _, te in splits}) == 5  # the splits differ from each other
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_splits(100, test_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        train_test_splits(100, seed=-1)


def test_standardisation_is_fitted_on_the_training_part_only():
    data = make_friedman(200, seed=0)
    x = data.x.copy()
    x[:, 7] = 3.0  # a constant feature
    data = RegressionDataset("f", x, data.y)
    tr, te = train_test_splits(data.n, n_splits=1, seed=1)[0]
    s = split_dataset(data, tr, te)
    assert torch.allclose(s.x_train[:, :7].mean(0), torch.zeros(7, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(s.x_train[:, :7].std(0, correction=0), torch.ones(7, dtype=torch.float64), atol=1e-12)
    assert torch.equal(s.x_train[:, 7], torch.zeros(len(tr), dtype=torch.float64)) and s.scaler.x_std[7] == 1.0
    assert float(s.y_train.mean()) == pytest.approx(0.0, abs=1e-12)
    sc = Standardizer.fit(data.x[tr], data.y[tr])
    assert np.allclose(s.x_test.numpy(), (data.x[te] - sc.x_mean) / sc.x_std)
    assert np.allclose(sc.inverse_y(s.y_test.numpy()), data.y[te]) and np.allclose(s.y_test_raw.numpy(), data.y[te])
    with pytest.raises(ValueError, match="overlap"):
        split_dataset(data, tr, np.concatenate([te, tr[:1]]))


def test_synthetic_sets_are_seeded():
    a, b = make_sine(50, seed=2), make_sine(50, seed=2)
    assert np.array_equal(a.y, b.y) and not np.array_equal(a.y, make_sine(50, seed=3).y)
    f = make_friedman(60, n_features=7, seed=0)
    assert f.x.shape == (60, 7) and f.y.shape == (60,)


def test_csv_loader_reads_named_and_headerless_tables(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(15, 3))
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,price\n" + "\n".join(",".join(f"{v:.17g}" for v in row) for row in table) + "\n")
    d = load_csv_regression(csv, target="price")
    assert d.feature_names == ("a", "b") and d.target_name == "price" and d.name == "data"
    assert np.array_equal(d.x, table[:, :2]) and np.array_equal(d.y, table[:, 2])
    d2 = load_csv_regression(csv, target="a", features=["price"])
    assert np.array_equal(d2.x[:, 0], table[:, 2]) and np.array_equal(d2.y, table[:, 0])
    txt = tmp_path / "uci.txt"  # UCI style: whitespace separated, no header
    txt.write_text("\n".join("  ".join(f"{v:.17g}" for v in row) for row in table) + "\n")
    d3 = load_csv_regression(txt, target=2)
    assert np.array_equal(d3.x, table[:, :2]) and np.array_equal(d3.y, table[:, 2])


def test_csv_loader_error_messages(tmp_path):
    def write(name, text):
        path = tmp_path / name
        path.write_text(text)
        return path

    good = "a,b,y\n" + "\n".join(f"{i},{i * 2},{i * 3}" for i in range(12)) + "\n"
    with pytest.raises(ValueError, match=r"target column 'price' not found; columns are \['a', 'b', 'y'\]"):
        load_csv_regression(write("t.csv", good), target="price")
    bad = good.replace("5,10,15", "5,ten,15")
    with pytest.raises(ValueError, match=r"non-numeric value 'ten' at line 7, column 'b'"):
        load_csv_regression(write("n.csv", bad), target="y")
    with pytest.raises(ValueError, match="at least 10 rows, got 3"):
        load_csv_regression(write("s.csv", "a,y\n1,2\n3,4\n5,6\n"), target="y")
    with pytest.raises(ValueError, match="line 3 has 2 fields, expected 3"):
        load_csv_regression(write("r.csv", good.replace("1,2,3", "1,2")), target="y")
    with pytest.raises(ValueError, match="no header row"):
        load_csv_regression(write("h.csv", "\n".join(f"{i},{i}" for i in range(12))), target="y")
    with pytest.raises(ValueError, match="out of range"):
        load_csv_regression(write("h2.csv", "\n".join(f"{i},{i}" for i in range(12))), target=5)
    with pytest.raises(FileNotFoundError):
        load_csv_regression(tmp_path / "missing.csv", target="y")


# ------------------------------------------------------------------------------------------------ scores
def test_predictive_log_likelihood_is_the_particle_mixture():
    data = make_sine(60, seed=0)
    s = split_dataset(data, *train_test_splits(data.n, n_splits=1, seed=0)[0])
    model = BNNRegression(s.x_train, s.y_train, BNNConfig(n_hidden=5))
    theta = model.initial_particles(3, seed=0)
    y = s.y_test_raw
    mu = model.forward(theta, s.x_test) * s.scaler.y_std + s.scaler.y_mean
    sd = s.scaler.y_std / model.unpack(theta).log_gamma.exp().sqrt()
    dens = torch.exp(-0.5 * ((y - mu) / sd[:, None]) ** 2) / (sd[:, None] * math.sqrt(2 * math.pi))
    sc = predictive_scores(model, theta, s.x_test, y, s.scaler)
    assert sc.log_likelihood == pytest.approx(float(dens.mean(0).log().mean()), rel=1e-10)
    assert sc.rmse == pytest.approx(float((mu.mean(0) - y).square().mean().sqrt()), rel=1e-12)
    one = predictive_scores(model, theta[:1], s.x_test, y, s.scaler)
    same = predictive_scores(model, theta[:1].expand(4, -1), s.x_test, y, s.scaler)
    assert same.log_likelihood == pytest.approx(one.log_likelihood, rel=1e-12)
    assert torch.allclose(one.std, sd[:1].expand(len(y)), rtol=1e-12)


def ex_constant_ll(split) -> float:
    y, mu, sd = split.y_test_raw, split.scaler.y_mean, split.scaler.y_std
    return float((-0.5 * (math.log(2 * math.pi * sd**2) + (y - mu).square() / sd**2)).mean())


def test_map_lowers_the_potential_with_log_lambda_fixed():
    model = tiny_model()
    init = model.initial_particles(1, seed=0)
    theta = fit_map(model, init, n_iter=200, lr=1e-2)
    assert float(model.fn(theta)) < float(model.fn(init)) - 1.0
    assert float(theta[0, -1]) == float(init[0, -1])


@pytest.mark.slow  # torch.optim imports torch._dynamo: seconds
def test_map_steps_are_torch_adams():
    model = tiny_model()
    init = model.initial_particles(1, seed=0)
    ref = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=3e-2)
    for _ in range(5):
        g = model.grad(ref.detach())
        g[:, -1] = 0.0
        ref.grad = g
        opt.step()
    assert torch.allclose(fit_map(model, init, n_iter=5, lr=3e-2), ref.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["PBRWP", "SVGD"])
def test_short_particle_runs_beat_the_constant_predictor(name):
    torch.set_num_threads(1)
    data = make_friedman(200, seed=0)
    s = split_dataset(data, *train_test_splits(data.n, n_splits=1, test_fraction=0.2, seed=0)[0])
    model = BNNRegression(s.x_train, s.y_train, BNNConfig(n_hidden=20))
    init = model.initial_particles(10, seed=0)
    smp = (PBRWP(preconditioner=AdamPreconditioner(warmup=0), T=1.0, step=1e-2, logz="surrogate",
                 uncertainty="particles") if name == "PBRWP" else SVGD(step=3e-3, step_rule="adagrad"))
    final = {}
    smp.run(model, n_particles=10, n_iter=300, rng=0, init=init, progress=False,
            callback=lambda it, x, logs: final.update(x=x))
    sc = predictive_scores(model, final["x"], s.x_test, s.y_test_raw, s.scaler)
    const = float((s.y_test_raw - s.scaler.y_mean).square().mean().sqrt())
    assert sc.rmse < 0.7 * const, (sc.rmse, const)  # measured: 0.53 (PBRWP) and 0.52 (SVGD) of the constant's
    assert sc.log_likelihood > ex_constant_ll(s) + 0.3


# ------------------------------------------------------------------------------------------------ example
def _example_module():
    spec = importlib.util.spec_from_file_location("bnn_regression_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # a fresh interpreter imports torch (seconds on a loaded machine)
def test_example_runs_quick_as_a_script_and_writes_its_figure(tmp_path):
    out = tmp_path / "fig"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--data", "sine", "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("PBRWP", "BRWP", "SVGD", "ULA", "MAP", "constant"):
        assert name in res.stdout
    assert "diverged" not in res.stdout
    assert (out / "bnn_regression.png").stat().st_size > 1000


def test_example_refuses_to_overwrite_and_reports_a_missing_target(tmp_path, capsys):
    ex = _example_module()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(SystemExit) as err:
        ex.main(["--quick", "--out", str(full)])
    assert err.value.code == 2 and "--force" in capsys.readouterr().err
    csv = tmp_path / "t.csv"
    csv.write_text("u,v,z\n" + "\n".join(f"{i},{i % 3},{i * 0.5}" for i in range(20)) + "\n")
    with pytest.raises(SystemExit) as err:
        ex.main(["--quick", "--csv", str(csv), "--target", "w"])
    assert err.value.code == 2 and "target column 'w' not found" in capsys.readouterr().err


def test_example_runs_on_a_csv_in_process(tmp_path, capsys):
    ex = _example_module()
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(40, 2))
    csv = tmp_path / "t.csv"
    csv.write_text("u,v,z\n" + "\n".join(f"{a},{b},{np.sin(a) + b}" for a, b in x) + "\n")
    ex.N_PARTICLES = 8  # smaller than the script's 20: a few seconds
    res = ex.run_all(load_csv_regression(csv, "z"), n_iter=30, methods=("PBRWP", "SVGD", "ULA"))
    text = ex.table(res)
    for name in ("PBRWP", "SVGD", "ULA", "constant"):
        assert name in text
    assert all(res[n][0] is not None and math.isfinite(res[n][0].rmse) for n in ("PBRWP", "SVGD", "ULA"))


def test_readme_bnn_example_prints_what_the_readme_says(tmp_path):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"<!-- readme-example-bnn -->\s*```python\n(.*?)```", readme, re.S)
    assert m, "README lost its marked BNN example"
    said = re.search(r"It prints `test RMSE ([0-9.]+) \(test std ([0-9.]+)\), test log-likelihood (-?[0-9.]+)`", readme)
    assert said, "README lost the BNN example's printed line"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", m.group(1)], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = re.search(r"test RMSE ([0-9.]+) \(test std ([0-9.]+)\), test log-likelihood (-?[0-9.]+)", out.stdout)
    assert got, out.stdout
    for a, b in zip(got.groups(), said.groups(), strict=True):
        assert abs(float(a) - float(b)) <= 0.05 * abs(float(b)) + 0.02, (out.stdout, said.groups())
