"""The live widgets in a real browser: JupyterLab in headless Chromium, as a learner has it.

A notebook written here (not one of the course's: it must leave its server running for the
test to poke) shows two chat widgets and a live view. The tests type into alice's widget
and read the line in bob's, press "slow reader" and watch its output-queue bar grow, and
check that the page shows no error (no error output, no widget that failed to draw).

The Lab and the browser are test_lab_browser.py's fixtures (module-scoped: this module gets
a Lab of its own), and so are its helpers to open a notebook and run all of it.
"""

from __future__ import annotations

import os

import pytest

# JupyterLab and ipywidgets come with the notebooks' extra (make test); make test-matrix
# installs the test extra only, and skips this file with that reason.
pytest.importorskip("jupyterlab", reason="the notebooks' extra is not installed here")
pytest.importorskip("ipywidgets", reason="the notebooks' extra is not installed here")

import nbformat  # noqa: E402
from test_lab_browser import (  # noqa: E402, F401 (lab and browser are fixtures)
    CHROMIUM,
    SCREENSHOTS,
    browser,
    lab,
    run_all,
    shut_down_kernels,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
    pytest.mark.timeout(600),
]

NAME = "live-widgets-under-test.ipynb"
CELLS = [
    """\
from IPython.display import display
from ipywidgets import HBox

import chatlab
from chatlab.live import ClientHub, EchoBot
from chatlab.live.widgets import ChatWidget, LiveView
from chatlab.server import Limits

limits = Limits(max_output_buffer=64 * 1024, kernel_send_buffer=4096)
server = chatlab.ChatServer(limits=limits).start()
hub = ClientHub()
alice = ChatWidget(hub, server.address, "alice", room=1)
bob = ChatWidget(hub, server.address, "bob", room=1)
echo = EchoBot(hub, server.address, room=1)
display(HBox([alice, bob]))
print("chat widgets ready")""",
    """\
view = LiveView(server, hub, room=1)
display(view)
print(view.summary())""",
]


@pytest.fixture(scope="module")
def page(lab, browser):  # noqa: F811 (the imported fixtures)
    """The notebook above, run once in the Lab; its kernel keeps the server running."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, str(lab["home"] / "notebooks" / NAME))
    page = browser.new_page()
    try:
        run_all(page, lab, NAME)
        # Every widget drawn: two chats and the view (the hub's and view's threads run on).
        page.wait_for_selector(".chatlab-chat-bob .chatlab-chat-log", timeout=60_000)
        page.wait_for_selector(".chatlab-live button.chatlab-live-slow-reader", timeout=60_000)
        yield page
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # for a person to look at
        page.screenshot(path=str(SCREENSHOTS / "live-widgets.png"))
        page.close()
        shut_down_kernels(lab)


def no_error_on(page) -> None:
    errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.first.inner_text()
    text = page.locator(".jp-Notebook").inner_text()
    assert "Error displaying widget" not in text and "Error rendering" not in text


def test_a_line_typed_in_one_chat_widget_arrives_in_another(page):
    line = "hello from the browser"
    box = page.locator(".chatlab-chat-alice .chatlab-chat-input input")
    box.fill(line)
    box.press("Enter")
    page.wait_for_function(
        """line => [...document.querySelectorAll('.chatlab-chat-bob .chatlab-chat-log')]
                   .some(el => el.textContent.includes('<alice> ' + line))""",
        arg=line,
        timeout=30_000,
    )
    # alice's widget shows her own line; the input is empty again
    assert f"<alice> {line}" in page.locator(".chatlab-chat-alice .chatlab-chat-log").inner_text()
    assert box.input_value() == ""
    # the bot answers a line addressed to it, in both widgets
    box.fill("echo: ping")
    box.press("Enter")
    page.wait_for_function(
        """() => document.querySelector('.chatlab-chat-bob .chatlab-chat-log')
                 .textContent.includes('<echo> alice said: ping')""",
        timeout=30_000,
    )
    no_error_on(page)


def test_slow_reader_button_makes_its_buffer_bar_grow(page):
    bar = ".chatlab-conn[data-name='slow-reader1']"
    assert page.locator(bar).count() == 0  # not there before the button
    page.click(".chatlab-live button.chatlab-live-slow-reader")
    # the status line says what happened, and the view's thread redraws the bar
    page.wait_for_function(
        """() => document.querySelector('.chatlab-live-status')
                 .textContent.includes('slow-reader1 joined room 1 and stopped reading')""",
        timeout=60_000,
    )
    page.wait_for_function(
        """sel => {
            const row = document.querySelector(sel);
            return row && Number(row.dataset.queued) > 0
                && parseFloat(row.querySelector('.chatlab-bar').style.width) > 0;
        }""",
        arg=bar,
        timeout=30_000,
    )
    first = int(page.locator(bar).get_attribute("data-queued"))
    assert 0 < first < 64 * 1024
    # more traffic: the queue grows to the limit, and the server cuts the reader off
    page.click(".chatlab-live button.chatlab-live-talk")
    page.wait_for_function(
        """([sel, first]) => {
            const row = document.querySelector(sel);
            return !row || Number(row.dataset.queued) > first || !row.textContent.includes('open');
        }""",
        arg=[bar, first],
        timeout=60_000,
    )
    page.wait_for_function(
        """() => document.querySelector('.chatlab-live').textContent
                 .includes('output buffer over 65536 bytes 1')""",
        timeout=60_000,
    )
    no_error_on(page)
