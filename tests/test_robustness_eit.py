"""The error contract of ``invprob eit`` and ``invprob train``: one line, exit code 2, nothing written; and a real
SIGTERM during an EIT reconstruction keeps the finished MAP (exit 143, no staging folder left)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")

from invprob.apps.cli import main  # noqa: E402

SCRIPT = Path(sys.executable).with_name("invprob")


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("eit")
    assert main(["eit", "simulate", "--out", str(d / "sim"), "--h", "0.1", "--quiet"]) == 0
    with np.load(d / "sim" / "data.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(d / "nan.npz", **{**arrays, "voltages": np.where(np.arange(arrays["voltages"].size).reshape(
        arrays["voltages"].shape) == 3, np.nan, arrays["voltages"])})
    np.savez(d / "zero.npz", **{**arrays, "voltages": 0 * arrays["voltages"],
                                "reference_voltages": 0 * arrays["reference_voltages"]})
    np.savez(d / "nokeys.npz", currents=arrays["currents"])
    np.savez(d / "cut.npz", **{**arrays, "currents": arrays["currents"][:, :-1]})
    np.savez(d / "cut_rows.npz", **{**arrays, "currents": arrays["currents"][:-1]})
    np.savez(d / "pickled.npz", currents=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "short_ref.npz", **{**arrays, "voltages": arrays["voltages"][:-2], "measurements":
                                     arrays["measurements"][:-2]} if arrays["voltages"].ndim == 1 else
             {**arrays, "voltages": arrays["voltages"][:, :-1]})
    np.savez(d / "novalues.npz", xy=np.zeros((0, 2)), values=np.zeros(0))
    (d / "list.json").write_text("[1, 2]")
    (d / "unknown.json").write_text(json.dumps({"mode": "generative", "modle": {}}))
    (d / "ok.json").write_text(json.dumps({"mode": "generative", "training": {"n_iter": 2}}))
    return d


def _rec(d: Path, name: str, *extra):
    return ["eit", "reconstruct", str(d / name), "--method", "gn", "--h", "0.15", "--quiet", *extra]


EIT_CASES = [
    ("nan voltages", lambda d, o: [*_rec(d, "nan.npz"), "--out", o], "NaN"),
    ("all-zero voltages", lambda d, o: [*_rec(d, "zero.npz"), "--out", o], "zero"),
    ("missing keys", lambda d, o: [*_rec(d, "nokeys.npz"), "--out", o], "missing"),
    ("cut currents", lambda d, o: [*_rec(d, "cut.npz"), "--out", o], "currents"),
    ("cut current rows", lambda d, o: [*_rec(d, "cut_rows.npz"), "--out", o], "currents hold"),
    ("pickled npz", lambda d, o: [*_rec(d, "pickled.npz"), "--out", o], "pickled"),
    ("difference protocol", lambda d, o: [*_rec(d, "sim/data.npz"), "--difference", str(d / "short_ref.npz"),
                                          "--out", o], "short_ref"),
    ("nan in the difference file", lambda d, o: [*_rec(d, "sim/data.npz"), "--difference", str(d / "nan.npz"),
                                                 "--out", o], "nan.npz"),
    ("reconstruct seed", lambda d, o: [*_rec(d, "sim/data.npz"), "--seed", "-1", "--out", o], "seed"),
    ("reconstruct mesh", lambda d, o: [*_rec(d, "sim/data.npz"), "--h", "0.0005", "--out", o], "--h"),
    ("simulate electrodes 1000", lambda d, o: ["eit", "simulate", "--electrodes", "1000", "--out", o], "electrodes"),
    ("simulate electrodes too small", lambda d, o: ["eit", "simulate", "--electrodes", "200", "--out", o],
     "electrodes"),
    ("simulate mesh", lambda d, o: ["eit", "simulate", "--h", "0.0005", "--out", o], "--h"),
    ("simulate values with no rows", lambda d, o: ["eit", "simulate", "--values", str(d / "novalues.npz"),
                                                   "--out", o], "no points"),
    ("simulate seed", lambda d, o: ["eit", "simulate", "--seed", "99999999999999999999999", "--out", o], "seed"),
    ("train config is a list", lambda d, o: ["train", "rwpo", "--config", str(d / "list.json"), "--out", o],
     "object"),
    ("train unknown keys", lambda d, o: ["train", "rwpo", "--config", str(d / "unknown.json"), "--out", o],
     "modle"),
    ("train device", lambda d, o: ["train", "rwpo", "--config", str(d / "ok.json"), "--device", "tpu", "--out", o],
     "device"),
    ("train resume without checkpoint", lambda d, o: ["train", "rwpo", "--config", str(d / "ok.json"), "--resume",
                                                      "--out", o], "checkpoint"),
]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", EIT_CASES, ids=[c[0] for c in EIT_CASES])
def test_eit_and_train_bad_input_is_one_line_exit_2(case, sim, tmp_path, capsys):
    _, argv, words = case
    before, before_sim = _tree(tmp_path), _tree(sim)
    rc = main(argv(sim, str(tmp_path / "out")))
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert rc == 2 and len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err and "internal error" not in err, err
    assert words.lower() in lines[0].lower(), lines[0]
    assert _tree(tmp_path) == before and _tree(sim) == before_sim


def test_sigterm_during_eit_sampling_keeps_the_map(sim, tmp_path):
    out = tmp_path / "rec"
    cmd = [str(SCRIPT), "eit", "reconstruct", str(sim / "sim" / "data.npz"), "--method", "pbrwp", "--iters",
           "100000", "--particles", "8", "--h", "0.15", "--no-xdmf", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # the MAP is done: the sampler starts
            if line.startswith("MAP ("):
                break
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "partial results written" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert "SIGTERM" in summary["interrupted"] and "MAP" in summary["interrupted"]
    with np.load(out / "result.npz") as z:
        assert np.isfinite(z["map"]).all() and z["map"].shape == z["cells_xy"].shape[:1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
