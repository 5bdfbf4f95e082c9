"""The course as a learner meets it: JupyterLab in a real (headless) browser.

nbval proves each cell gives its stored output in a bare kernel. This proves the notebooks
open in the Lab the README starts, run from the Run menu, and show what they should: no
error output, their key printed lines, every Mermaid diagram drawn (Lab renders each as an
image of its SVG) and every plot drawn as an image. A screenshot per notebook is saved
under artifacts/screenshots/ for a person to look at.

Needs Debian's chromium at /usr/bin/chromium (.ci/run installs it) and the playwright
package (a test extra; never `playwright install`: we drive the system's browser).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# What varies between runs is masked in stored outputs (notebooks/sanitize.cfg); lines with
# such parts are not used as "key outputs" to look for.
VARYING = re.compile(r"127\.0\.0\.1|0x[0-9a-f]{6,}|\bfd\b|\d+(\.\d+)?\s?(s|ms|µs|us)\b|/tmp/")

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
    pytest.mark.timeout(900),
]


def expectations(path: Path) -> dict:
    """What the page must show, read from the committed notebook itself."""
    nb = json.loads(path.read_text())
    mermaid = sum(
        "".join(c["source"]).count("```mermaid")
        for c in nb["cells"]
        if c["cell_type"] == "markdown"
    )
    plots, lines = 0, []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        varies = "nbval-ignore-output" in cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}):
                plots += 1
            if out.get("output_type") == "stream" and out.get("name") == "stdout" and not varies:
                lines += [
                    ln.strip()
                    for ln in "".join(out["text"]).splitlines()
                    if len(ln.strip()) > 12 and not VARYING.search(ln)
                ]
    # The longest few stable lines: distinctive enough to mean "this cell really ran".
    key = sorted(set(lines), key=len, reverse=True)[:3]
    return {"mermaid": mermaid, "plots": plots, "key_lines": key}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab from this environment, on a free port with a token, over a copy of the
    notebooks (running them in the browser must not rewrite the committed files)."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    settings = home / "settings"
    # The news toast covers cells; windowing would leave cells off-screen unrendered.
    for ext, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        target = settings / f"{ext}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [
        str(jupyter),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(home / "lab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log_text = (home / "lab.log").read_text()
                raise RuntimeError(f"JupyterLab did not start:\n{log_text}") from None
            time.sleep(0.5)
    try:
        yield {"url": url, "token": token, "home": home}
    finally:
        proc.send_signal(signal.SIGINT)  # Jupyter asks twice, or shuts down on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(lab["home"] / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1400, "height": 1800},
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield context
        finally:
            context.close()


def wait_for_kernel_idle(page, timeout_s: float) -> None:
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')];
            return prompts.length > 0 && !prompts.some(p => p.textContent.includes('*'));
        }""",
        timeout=timeout_s * 1000,
    )


def wait_until_open(page, lab, name: str, timeout_s: float = 120) -> None:
    """Wait until the notebook is really there: every cell of the file in the page, and its
    kernel started, idle and connected to this page.

    Not sooner: while the file loads, the page shows an empty notebook of one cell, and its
    execution indicator says "idle" before any kernel exists. A click on Clear Outputs then
    clears that placeholder, and the file's stored outputs (and execution numbers) arrive
    after it; a Run All then runs nothing. How long that phase lasts depends on the machine
    (the first notebook of a fresh Lab waits longest: bundles to load, a first kernel to
    start), which is why this once failed only on fresh machines.
    """
    cells = len(json.loads((lab["home"] / "notebooks" / name).read_text())["cells"])
    deadline = time.monotonic() + timeout_s
    page.wait_for_function(
        "n => document.querySelectorAll('.jp-Notebook .jp-Cell').length === n",
        arg=cells,
        timeout=timeout_s * 1000,
    )
    auth = {"Authorization": f"token {lab['token']}"}
    while True:
        with urllib.request.urlopen(
            urllib.request.Request(f"{lab['url']}/api/sessions", headers=auth), timeout=10
        ) as r:
            kernels = [s["kernel"] for s in json.load(r) if s["path"] == name and s.get("kernel")]
        if any(k["execution_state"] == "idle" and k.get("connections", 0) > 0 for k in kernels):
            break
        assert time.monotonic() < deadline, f"{name}: no idle kernel connected to the page"
        time.sleep(0.2)
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']",
        timeout=max(1, deadline - time.monotonic()) * 1000,
    )


def run_all(page, lab, name: str, timeout_s: float = 240) -> None:
    # A workspace of its own, reset: only this notebook is open in the page.
    workspace = re.sub(r"\W", "", name) + secrets.token_hex(3)
    page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}")
    wait_until_open(page, lab, name)
    # The stored outputs go first, so that everything checked below was made by this run.
    page.click(".lm-MenuBar-itemLabel:text-is('Edit')")
    page.click(".lm-Menu-itemLabel:text-is('Clear Outputs of All Cells')")
    try:
        page.wait_for_function(
            """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                     .every(p => !/\\d/.test(p.textContent))""",
            timeout=30_000,
        )
    except playwright_api.TimeoutError:
        raise AssertionError(f"{name}: outputs not cleared\n{progress(page)}") from None
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    # Every code cell gets an execution number; none is left waiting or running ([*]).
    try:
        page.wait_for_function(
            """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                     .every(p => /\\[\\d+\\]/.test(p.textContent))""",
            timeout=timeout_s * 1000,
        )
    except playwright_api.TimeoutError:
        raise AssertionError(f"{name}: Run All did not finish\n{progress(page)}") from None


def progress(page) -> str:
    """Where Run All is: each code cell's prompt, its first line, and its last output line."""
    cells = page.evaluate(
        """() => [...document.querySelectorAll('.jp-CodeCell')].map(c => [
            c.querySelector('.jp-InputPrompt')?.textContent ?? '',
            c.querySelector('.jp-InputArea-editor .cm-line')?.textContent ?? '',
            (c.querySelector('.jp-OutputArea')?.textContent ?? '').trim().split('\\n').pop(),
        ])"""
    )
    status = page.locator(".jp-Notebook-ExecutionIndicator").get_attribute("data-status")
    rows = [
        f"  {i:2} {p.strip():8} {src[:50]:50} | {out[-70:]}"
        for i, (p, src, out) in enumerate(cells)
    ]
    return f"kernel {status}\n" + "\n".join(rows)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab(lab, browser, path):
    expected = expectations(path)
    page = browser.new_page()
    try:
        run_all(page, lab, path.name)
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, f"error output in {path.name}: {errors.first.inner_text()}"
        text = page.locator(".jp-Notebook").inner_text()
        for line in expected["key_lines"]:
            assert line in text, f"{path.name}: expected output line not shown: {line!r}"
        page.wait_for_function(
            "n => document.querySelectorAll('.jp-RenderedMermaid figure img').length >= n",
            arg=expected["mermaid"],
            timeout=30_000,
        )
        mermaid = page.locator(".jp-RenderedMermaid figure img").count()
        assert mermaid == expected["mermaid"], f"{path.name}: {mermaid} Mermaid diagrams drawn"
        plots = page.locator(".jp-OutputArea .jp-RenderedImage img").count()
        assert plots == expected["plots"], f"{path.name}: {plots} plots drawn"
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # The top of the notebook, as a learner first sees it after Run All.
        page.evaluate("document.querySelector('.jp-WindowedPanel-outer')?.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / f"{path.stem}.png"))
        page.close()
        shut_down_kernels(lab)


def shut_down_kernels(lab) -> None:
    """Each notebook's kernel goes when its test is done (its servers are stopped already)."""
    api = f"{lab['url']}/api/sessions"
    auth = {"Authorization": f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(api, headers=auth), timeout=10) as r:
        sessions = json.load(r)
    for session in sessions:
        request = urllib.request.Request(f"{api}/{session['id']}", headers=auth, method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def test_restart_kernel_and_run_all_works(lab, browser):
    """A notebook whose server lives across cells, run twice in one Lab session: the second
    time through Kernel > Restart Kernel and Run All Cells (no "address in use")."""
    page = browser.new_page()
    name = "04-rooms-and-broadcast.ipynb"
    try:
        run_all(page, lab, name)
        page.click(".lm-MenuBar-itemLabel:text-is('Kernel')")
        page.click(".lm-Menu-itemLabel:text-is('Restart Kernel and Run All Cells…')")
        page.click(".jp-Dialog-button.jp-mod-accept")
        page.wait_for_timeout(2000)
        wait_for_kernel_idle(page, 240)
        page.wait_for_function(
            """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                     .every(p => /\\[\\d+\\]/.test(p.textContent))""",
            timeout=240_000,
        )
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, errors.first.inner_text()
    finally:
        page.close()
        shut_down_kernels(lab)


def test_interrupt_then_run_all_again(lab, browser):
    """The stop button mid-run, then Run All again in the same kernel: the interrupted
    cell's servers were stopped on the way out (with blocks), and nothing is in the way."""
    page = browser.new_page()
    name = "03-framing.ipynb"
    try:
        run_all(page, lab, name)
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        page.wait_for_function(
            """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                     .some(p => p.textContent.includes('*'))""",
            timeout=30_000,
        )
        page.wait_for_timeout(1500)  # somewhere in the middle of the notebook
        page.click(".lm-MenuBar-itemLabel:text-is('Kernel')")
        page.click(".lm-Menu-itemLabel:text-is('Interrupt Kernel')")
        wait_for_kernel_idle(page, 60)
        run_all(page, lab, name)  # the same notebook, the same kernel, from the top
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, errors.first.inner_text()
    finally:
        page.close()
        shut_down_kernels(lab)


def test_make_lab_serves_the_course(tmp_path):
    """The README's main command itself: `make lab` starts JupyterLab on notebooks/, at
    00-start-here (read-only requests here: the browser tests above use a copy)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port, token = free_port(), secrets.token_hex(16)
    venv = Path(sys.executable).parent.parent
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"VENV={venv}", f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # make and jupyter in one process group, stopped together
    )
    try:
        url = f"http://127.0.0.1:{port}/api/contents/00-start-here.ipynb?content=0&token={token}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    model = json.load(response)
                break
            except OSError:
                assert proc.poll() is None, "make lab exited"
                assert time.monotonic() < deadline, "make lab did not serve within 90 s"
                time.sleep(0.5)
        assert model["name"] == "00-start-here.ipynb" and model["type"] == "notebook"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
