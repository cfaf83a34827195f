"""The installed app: the wheel, not the checkout, trains, checks a theorem and plans a sweep from
an unrelated directory (the pattern of Hydra's ``examples/advanced/hydra_app_example``); and so
does an editable install (``pip install -e``), whose configs are the checkout's top-level
``conf/`` (pyproject's package-dir mapping of ``sdexp.conf``)."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, user_env

NOT_SOURCE = (".*", "outputs", "multirun", "build", "dist", "*.egg-info", "data", "wandb")


def sh(*command: str | Path, cwd: Path) -> str:
    """``command`` in a user's shell outside the checkout: no PYTHONPATH that leads into it."""
    env = {k: v for k, v in user_env().items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module", params=["wheel", "editable"])
def kind(request) -> str:
    """How the package is installed: a wheel, or ``pip install -e``."""
    return request.param


@pytest.fixture(scope="module")
def installed(kind, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from this checkout, or an editable install of a copy
    of it. Its dependencies are this venv's (a path line in a .pth file, which does not run this
    venv's editable finder), so that the test does not download PyTorch again; the sdexp it
    imports is the wheel's, or the copy's."""
    tmp = tmp_path_factory.mktemp(kind)
    source = tmp / "source"  # a copy: setuptools builds in the source tree (build/)
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    venv = tmp / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    purelib = sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp)
    (Path(purelib.strip()) / "dependencies.pth").write_text("\n".join(site.getsitepackages()))
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    if kind == "editable":
        sh(*pip, "--no-build-isolation", "-e", source, cwd=tmp)
        return venv / "bin"
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
       "-w", tmp / "dist", source, cwd=tmp)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("sdexp-*.whl")
    sh(*pip, wheel, cwd=tmp)
    return venv / "bin"


@pytest.mark.slow
def test_the_wheel_imports_itself_not_the_checkout(installed, kind, tmp_path):
    code = "import sdexp, sdexp.conf; print(sdexp.__file__); print(sdexp.conf.__file__)"
    where = sh(installed / "python", "-c", code, cwd=tmp_path)
    package, configs = map(Path, where.split())
    home = installed.parent if kind == "wheel" else installed.parent.parent / "source"
    assert package.is_relative_to(home) and str(ROOT) not in where
    # the configs: the wheel's own copy (sdexp/conf/), or the editable copy's top-level conf/
    assert configs.parent == (package.parent / "conf" if kind == "wheel" else home / "conf")


@pytest.mark.slow
def test_the_installed_app_trains_from_another_directory(installed, tmp_path):
    out = sh(installed / "sdexp-train", "+scale=tiny", "logger=csv", "budget=0.3", cwd=tmp_path)
    (path,) = tmp_path.glob("outputs/runs/*/*/results.json")
    results = json.loads(path.read_text())
    assert results["status"] == "ok" and results["budget"] == 0.3
    assert out.strip().splitlines()[-1].startswith("ok: test MSE")
    assert (path.parent / "train.log").exists()  # the job's name, as with python train.py


@pytest.mark.slow
def test_the_installed_theory_check_runs_from_another_directory(installed, tmp_path):
    out = sh(installed / "sdexp-theory", "experiment=depth_quick", cwd=tmp_path)
    (summary,) = tmp_path.glob("outputs/theory/depth_quick/*/*/summary.md")
    assert "done in" in out and (summary.parent / "theory.log").exists()


@pytest.mark.slow
def test_the_installed_sweeper_plans_a_preset(installed, tmp_path):
    out = sh(installed / "sdexp-train", "+sweep=smoke", "hydra.sweeper.dry_run=true", cwd=tmp_path)
    assert "Planning 16 cells" in out and "12 runs: 0 already done (skipped), 12 to launch" in out
    assert not list(tmp_path.glob("**/results.json"))  # planned, nothing run
