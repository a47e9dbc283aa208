"""The install files agree (pyproject, lock, torch pins, environment.yml) and `make lab` serves JupyterLab."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name.strip())] = version.split(";")[0].strip()
    return pins


def _pyproject_requirements() -> list[str]:
    """Every requirement name in pyproject.toml: dependencies plus the dev and lab extras."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as the lock
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in ("dev", "lab") for r in project["optional-dependencies"][extra]]
    return sorted({_norm(NAME.match(r).group(1)) for r in reqs})


def test_lock_pins_every_requirement_and_the_tested_torch_build():
    lock, torch_pins = _pins(ROOT / "requirements/lock.txt"), _pins(ROOT / "requirements/torch.txt")
    missing = [name for name in _pyproject_requirements() if name not in lock]
    assert not missing, f"requirements/lock.txt lacks {missing}; run `make lock`"
    assert set(torch_pins) == {"torch", "torchvision"}
    assert all(lock[name] == version for name, version in torch_pins.items()), "run `make lock`"


def test_environment_yml_installs_the_project_under_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-c requirements/lock.txt" in pip_lines and "-e .[dev,lab]" in pip_lines
    lock_python = re.search(r"--python-version (\S+)", (ROOT / "requirements/lock.txt").read_text()).group(1)
    assert f"python={lock_python}" in env["dependencies"]


def _free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_jupyterlab(tmp_path):
    venv = Path(sys.prefix)
    if shutil.which("make") is None or not (venv / ".installed").is_file():
        pytest.skip("needs make and a venv installed by `make install` (CI has both)")
    port, token = _free_port(), "vavae-lab-test"
    args = f"--no-browser --port {port} --ServerApp.token={token} --ServerApp.port_retries=0"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"VENV={venv}", f"LAB_ARGS={args}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, body = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(1)
        if body is None:
            os.killpg(proc.pid, signal.SIGTERM)
            out = proc.communicate(timeout=30)[0]
            pytest.fail(f"`make lab` served nothing on port {port} (uid {os.getuid()}):\n{out[-3000:]}")
        assert "JupyterLab" in body
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
