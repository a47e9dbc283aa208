"""End-to-end: JupyterLab + headless Chromium run notebook 03 in smoke mode and a slider redraws the explorer."""
from __future__ import annotations

import json
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

from vavae_lab.analysis.uniformity import METRICS

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "03_latent_uniformity.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The explorer's control and read-outs the test drives (see uniformity_explorer in vavae_lab/analysis/widgets.py).
SLIDER_LABEL = "bandwidth"
# the read-out's first two metrics as plots.format_metrics writes them ("density CV 0.263 · Gini 0.145 · ...")
_SHORT = [m.short for m in METRICS.values()]
METRICS_PATTERN = re.compile(re.escape(_SHORT[0]) + r"\s+\S+\s+·\s+" + re.escape(_SHORT[1]))
RUN_TIMEOUT_S = float(os.environ.get("VAVAE_LAB_BROWSER_TIMEOUT", "150"))
# JupyterLab user settings: no news or update checks (the network is closed), every cell kept in the DOM
# (the test reads all prompts), no autosave.
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False},
                "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False}}


@pytest.fixture
def browser_api():
    """playwright.sync_api, or a skip (a failure under VAVAE_LAB_REQUIRE_BROWSER=1) naming what is missing."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("the Python package playwright")
    if missing:
        reason = f"browser test needs {' and '.join(missing)}; run scripts/install_browser.sh"
        if os.environ.get("VAVAE_LAB_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (VAVAE_LAB_REQUIRE_BROWSER=1 turns this skip into a failure)")
        pytest.skip(reason)
    return sync_api


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Poll the Jupyter server's status API until it answers; fail with its log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"JupyterLab did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server this test started (it shuts its kernels down on SIGTERM), then anything left in its group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


@pytest.fixture
def lab_server(tmp_path):
    """A JupyterLab on a free localhost port serving a copy of the notebook, kernels in smoke mode.

    Yields (base_url, token, notebook name). The copy keeps JupyterLab's autosave away from the repository.
    """
    notebook = Path(os.environ.get("VAVAE_LAB_BROWSER_NOTEBOOK", NOTEBOOK))
    if not notebook.is_file():
        pytest.fail(f"{notebook} does not exist; the browser test runs that notebook (set "
                    "VAVAE_LAB_BROWSER_NOTEBOOK to try another one)")
    root, home = tmp_path / "lab", tmp_path / "jupyter"
    root.mkdir()
    shutil.copy2(notebook, root / notebook.name)
    for rel, values in LAB_SETTINGS.items():
        target = home / "settings" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    # the kernel reads the smoke study from the repository's cache, which `make test` (run first by CI) filled while
    # executing notebooks 01-03; a cold cache trains every smoke tokenizer first (several minutes on 2 cores)
    data = os.environ.get("VAVAE_LAB_BROWSER_DATA", str(REPO / "data"))
    env = dict(os.environ, VAVAE_LAB_PRESET="smoke", VAVAE_LAB_OFFLINE="1", VAVAE_LAB_DATA=data,
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               IPYTHONDIR=str(home / "ipython"), MPLBACKEND="Agg")
    env.pop("VAVAE_LAB_STATIC", None)  # the explorer must see the live front end
    port, token = _free_port(), os.urandom(12).hex()
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", proc, log)
        yield base, token, notebook.name, log
    finally:
        _stop(proc)


def _cell_report(page) -> dict:
    """How many code cells there are, how many ran, whether one is running, and the text of any error output."""
    return page.evaluate("""() => {
        const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
        const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
        const errors = [...document.querySelectorAll(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
            .map(e => e.textContent).filter(t => /Traceback|Error/.test(t));
        return {cells: cells.length, ran: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
                running: prompts.some(p => p.includes('*')), errors: errors};
    }""")


def _wait_for_kernel(base: str, token: str, name: str, timeout: float = 60.0) -> None:
    """Wait until the server has an idle kernel in a session for the notebook (the page started it)."""
    deadline, sessions = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as response:
            sessions = json.load(response)
        if any(s.get("path", "").endswith(name) and (s.get("kernel") or {}).get("execution_state") == "idle"
               for s in sessions):
            return
        time.sleep(0.5)
    pytest.fail(f"no idle kernel for {name} after {timeout:.0f} s; sessions: {sessions}")


def _accept_kernel_dialog(page) -> None:
    """Click 'Select' if JupyterLab asks which kernel to use (it keeps the notebook's own python3 kernel)."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()


def _run_all(page, timeout_s: float) -> None:
    """Run every cell from the Run menu and wait until all have run; fail with the first error output."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    deadline = time.monotonic() + timeout_s
    report = _cell_report(page)
    while time.monotonic() < deadline:
        _accept_kernel_dialog(page)
        report = _cell_report(page)
        if report["errors"]:
            pytest.fail("notebook cell failed in the browser:\n" + report["errors"][0][-3000:])
        if report["cells"] and report["ran"] == report["cells"] and not report["running"]:
            return
        page.wait_for_timeout(500)
    pytest.fail(f"notebook did not finish within {timeout_s:.0f} s: {report}")


def _wait_changed(page, script: str, locator, old: str, message: str, timeout_ms: int = 30_000) -> None:
    """Wait until `script(element, old)` holds in the page, else fail with the message (and a screenshot)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, arg=[locator.element_handle(), old], timeout=timeout_ms)
    except PlaywrightTimeout:
        pytest.fail(message)


def _save_screenshot(page, tmp_path: Path) -> Path:
    """Screenshot the page into the test's tmp dir and, when VAVAE_LAB_SCREENSHOT_DIR is set, copy it there."""
    shot = tmp_path / "notebook03_browser.png"
    page.screenshot(path=str(shot), full_page=False)
    extra = os.environ.get("VAVAE_LAB_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(extra) / shot.name)
    return shot


def test_slider_redraws_plot_and_metrics(browser_api, lab_server, tmp_path):
    """Moving the explorer's bandwidth slider in a real JupyterLab changes the scatter image and the metrics line."""
    sync_api = browser_api
    base, token, name, log = lab_server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/{name}?token={token}", wait_until="domcontentloaded", timeout=60_000)
            page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
            _wait_for_kernel(base, token, name)
            _run_all(page, RUN_TIMEOUT_S)

            label = page.locator(".widget-label", has_text=re.compile(rf"^\s*{SLIDER_LABEL}\s*$"))
            slider = page.locator(".widget-slider", has=label).first
            explorer = slider.locator(  # the nearest VBox around the slider: the explorer it belongs to
                "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' widget-vbox ')][1]")
            metrics = explorer.locator(".widget-html", has_text=METRICS_PATTERN).first
            image = explorer.locator("img").first
            try:
                slider.wait_for(timeout=10_000)
            except sync_api.TimeoutError:
                pytest.fail(f"no ipywidgets slider labelled {SLIDER_LABEL!r} on the page: the notebook must display "
                            "uniformity_explorer(...) as a live widget (as a cell's last expression or display())")
            slider.scroll_into_view_if_needed(timeout=10_000)
            image.wait_for(timeout=10_000)
            before_src, before_text = image.get_attribute("src"), metrics.inner_text()
            before_value = slider.locator(".widget-readout").inner_text()
            assert METRICS_PATTERN.search(before_text), f"no metrics line under the slider: {before_text!r}"

            slider.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            _wait_changed(page, "([img, old]) => img.getAttribute('src') !== old", image, before_src,
                          f"the plot image did not change within 30 s of moving the {SLIDER_LABEL} slider")
            _wait_changed(page, "([el, old]) => el.innerText !== old", metrics, before_text,
                          f"the metrics line {before_text!r} did not change within 30 s of moving the slider")
            after_value = slider.locator(".widget-readout").inner_text()
            after_text = metrics.inner_text()
            shot = _save_screenshot(page, tmp_path)
        except BaseException:  # pytest.fail raises a BaseException; keep a picture of what went wrong
            try:
                _save_screenshot(page, tmp_path)
            except sync_api.Error:
                pass
            raise
        finally:
            browser.close()
    assert after_value != before_value, f"slider readout stayed at {before_value!r}"
    assert METRICS_PATTERN.search(after_text), f"metrics line lost its format: {after_text!r}"
    assert after_text != before_text
    assert shot.stat().st_size > 10_000, "screenshot is suspiciously small (blank page?)"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
