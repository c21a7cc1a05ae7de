"""The README's particle-methods example (SVGD, Wasserstein and mirror descent) runs and prints what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
NUM = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


def _block() -> str:
    m = re.search(r"<!-- readme-example-particles -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert m, "README lost its marked particle-methods example"
    return m.group(1)


def _pair(label: str, text: str) -> tuple[list[float], list[float]]:
    m = re.search(rf"{label} \[{NUM}, {NUM}\] truth \[{NUM}, {NUM}\]", text)
    assert m, f"no '{label} [..] truth [..]' line in:\n{text}"
    v = [float(g) for g in m.groups()]
    return v[:2], v[2:]


def test_readme_particles_example_runs_and_converges(tmp_path):
    code = _block()
    assert len(code.strip().splitlines()) <= 14
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    mean, truth_mean = _pair("SVGD mean", out.stdout)
    std, truth_std = _pair("SVGD std", out.stdout)
    assert all(abs(a - b) < 0.2 for a, b in zip(mean, truth_mean, strict=True)), out.stdout
    assert all(abs(a - b) < 0.2 * b for a, b in zip(std, truth_std, strict=True)), out.stdout
    runs = dict(
        (name, (float(a), float(b)))
        for name, a, b in re.findall(rf"(\w+): W start {NUM} final {NUM}", out.stdout)
    )
    assert set(runs) == {"WassersteinGD", "MirrorDescent"}, out.stdout
    for start, final in runs.values():
        assert final < start, out.stdout  # both descend (a NaN final fails here too)
    assert runs["MirrorDescent"][1] < runs["WassersteinGD"][1], out.stdout  # the README's claim
    assert abs(runs["MirrorDescent"][1] + 1 / 12) < 1e-3, out.stdout  # the -1/12 level it names


def test_readme_pbrwp_variants_example_runs_and_says_what_it_prints(tmp_path):
    m = re.search(r"<!-- readme-example-pbrwp-variants -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert m, "README lost its marked PBRWP-variants example"
    code = m.group(1)
    assert len(code.strip().splitlines()) <= 14
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    err = {k: float(v) for k, v in re.findall(r"^(plain|momentum|drift h\*): mean error " + NUM, out.stdout, re.M)}
    assert err["momentum"] < 0.01 < 0.2 < err["plain"] < err["drift h*"], out.stdout  # as the comment says
    std, truth = _pair("MLA \\+ Fisher std", out.stdout)
    assert all(abs(a - b) < 0.1 * b for a, b in zip(std, truth, strict=True)), out.stdout
