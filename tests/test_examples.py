"""The examples run as written (with small settings) and produce their figures, as DOLFINx's demos do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _needs_dolfinx():
    pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")


@pytest.mark.slow
def test_eit_forward_demo(tmp_path):
    _needs_dolfinx()
    _run([str(EXAMPLES / "eit_forward_demo.py"), "--out", str(tmp_path / "fwd")], tmp_path)
    assert list((tmp_path / "fwd").glob("*.xdmf")), "no ParaView file written"


@pytest.mark.slow
def test_eit_synthetic_example_on_a_coarse_mesh(tmp_path):
    _needs_dolfinx()
    out = tmp_path / "syn"
    _run([str(EXAMPLES / "eit_synthetic.py"), "--out", str(out), "--h", "0.16", "--method", "gn"], tmp_path)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"one.png", "two.png", "std_profile.png"} <= set(pngs), pngs


@pytest.mark.slow
def test_eit_kit4_example_on_two_cases(tmp_path):
    eit = pytest.importorskip("invprob.operators.eit", reason="needs DOLFINx")
    if not (eit.kit4_data_dir() / "datamat_1_0.mat").exists():
        pytest.skip("KIT4 data not available (set INVPROB_KIT4_DIR)")
    out = tmp_path / "kit4"
    _run([str(EXAMPLES / "eit_kit4.py"), "--out", str(out), "--h", "0.14", "--cases", "1_1", "8_2"], tmp_path)
    assert (out / "eit_kit4_absolute.png").exists() and (out / "eit_kit4_difference.png").exists()
    summary = json.loads((out / "eit_kit4_summary.json").read_text())
    assert "8_2" in json.dumps(summary) and "1_1" in json.dumps(summary)


@pytest.mark.slow
def test_rwpo_sampling_example(tmp_path):
    _run([str(EXAMPLES / "rwpo_sampling.py"), "--steps", "20", "--out", str(tmp_path / "s.png")], tmp_path)
    assert (tmp_path / "s.png").stat().st_size > 1000
