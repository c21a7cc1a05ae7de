"""The README's Python example runs as written and does what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_improves_psnr():
    text = README.read_text()
    m = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its marked Python example"
    code = m.group(1)
    assert len([ln for ln in code.strip().splitlines() if ln.strip()]) <= 12
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    nums = [float(v) for v in re.findall(r"([0-9.]+) dB", out.stdout)]
    assert len(nums) == 2 and nums[1] > nums[0] + 3.0, out.stdout


def test_readme_sampling_example_continues_the_first(tmp_path):
    text = README.read_text()
    first = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    m = re.search(r"<!-- readme-example-sampling -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README lost its marked sampling example"
    out = subprocess.run([sys.executable, "-c", first + m.group(1)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "posterior-langevin" in out.stdout, out.stdout
    assert "\nconverged" in out.stdout, out.stdout  # the run's own diagnostics passed on this small posterior
    std = float(re.search(r"mean std ([0-9.]+)", out.stdout).group(1))
    assert 0.02 < std < 0.2, out.stdout  # the exact-posterior scale here is about 0.07 (RESULTS.md)
    assert (tmp_path / "pbrwp_run" / "result.npz").exists() and (tmp_path / "pbrwp_run" / "info.json").exists()


def _layout_tree() -> str:
    text = README.read_text()
    m = re.search(r"## Layout\n(.*?)\n## ", text, re.S)
    assert m, "README lost its Layout section"
    tree = re.search(r"```\n(invprob/.*?)```", m.group(1), re.S)
    assert tree, "the Layout section lost its tree"
    return tree.group(1).split("\ntests/")[0]  # the package, without the project's other folders


def test_readme_layout_names_every_room_and_only_real_files():
    """The Layout tree agrees with the code: every name it lists exists, every module and subpackage is listed."""
    tree = _layout_tree()
    pkg = README.parent / "invprob"
    names = set(re.findall(r"[A-Za-z_]\w*\.(?:py|json)|[A-Za-z_]\w*/", tree))
    names.discard("invprob/")
    for name in names:
        hits = list(pkg.rglob(name.rstrip("/"))) if name.endswith("/") else list(pkg.rglob(name))
        assert hits, f"README Layout names {name}, which is not in invprob/"
    for path in sorted(pkg.rglob("*")):
        rel = path.relative_to(pkg)
        if "__pycache__" in rel.parts or path.name == "__init__.py" or path.suffix not in (".py", ".json", ""):
            continue
        if len(rel.parts) > 2:
            continue  # two levels are shown; deeper files are summarised by their folder
        label = f"{path.name}/" if path.is_dir() else path.name
        stem = path.stem if path.is_file() else path.name
        assert label in names or stem in tree, f"invprob/{rel} is missing from the README Layout tree"
