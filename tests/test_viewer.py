"""The flow viewer: one self-contained HTML page, checked in a real headless Chromium.

The browser test drives Debian's ``chromium`` over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no websocket, no Python dependency): it loads the page from
disk, drags the block slider with the mouse, presses keys, clicks the mode switch and the
class buttons, and checks which frame is shown and that the screenshots change. It skips
only where no Chromium binary is installed.
"""

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import tempfile
import time

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from captum_daam import DAAM
from captum_daam.viewer import explain_top_k, render_flow_viewer, write_flow_viewer
from captum_daam.visualization import display_frames
from conftest import missing_tool
from families import NUM_CLASSES, build
from viewer_pages import decode, page_data

NAMES = [f"name {i} <b>&amp;</b>" for i in range(NUM_CLASSES)]


@pytest.fixture(scope="module")
def explained():
    model = build("vit", torch.float32)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    flows = explain_top_k(DAAM(model), images, k=2)
    return model, images, flows


def test_top_k_flows_explain_the_ranked_classes(explained):
    model, images, flows = explained
    with torch.no_grad():
        ranked = model(images).topk(2, dim=1)
    assert len(flows) == 2
    for rank, flow in enumerate(flows):
        assert torch.equal(flow.targets, ranked.indices[:, rank])
        torch.testing.assert_close(flow.scores, ranked.values[:, rank], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="k must lie in"):
        explain_top_k(DAAM(model), images, k=NUM_CLASSES + 1)


def test_page_embeds_the_display_frames_and_nothing_external(explained, tmp_path):
    _, images, flows = explained
    path = write_flow_viewer(
        tmp_path / "flow.html",
        images,
        flows,
        class_names=NAMES,
        image_names=["a.jpg", "b.jpg"],
        image_format="png",
    )
    page = path.read_text(encoding="utf-8")
    data = page_data(page)
    blocks = flows[0].num_blocks
    assert data["blocks"] == blocks and data["layer_names"] == list(flows[0].layer_names)
    assert [image["name"] for image in data["images"]] == ["a.jpg", "b.jpg"]
    jet = colormaps["jet"]
    for i, image in enumerate(data["images"]):
        assert decode(image["src"]).shape == (32, 32, 3)
        for rank, entry in enumerate(image["classes"]):
            flow = flows[rank]
            assert entry["target"] == int(flow.targets[i])
            assert entry["label"] == NAMES[entry["target"]]
            np.testing.assert_allclose(entry["contributions"], flow.contributions()[i], rtol=1e-6)
            for which in ("accumulated", "block_maps"):
                assert len(entry[which]) == blocks
                frames = display_frames(flow, i, "sigmoid", which)
                for b in range(blocks):
                    expected = np.clip(jet(frames[b])[..., :3], 0, 1) * 255 + 0.5
                    np.testing.assert_array_equal(
                        decode(entry[which][b]), expected.astype(np.uint8)
                    )
    # Offline: no scripts, styles, images or fonts from anywhere but the page itself.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "url(" not in page and "@import" not in page
    # Class names are data, never markup: no "<" survives inside the embedded JSON.
    json_text = re.search(r'id="daam-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in json_text and "\\u003cb>" in json_text


def test_page_rejects_mismatched_flows(explained):
    _, images, flows = explained
    with pytest.raises(ValueError, match="same images"):
        render_flow_viewer(images[:1], flows)
    with pytest.raises(ValueError, match="choose one of"):
        render_flow_viewer(images, flows, mapping="log")


# --- a real browser ----------------------------------------------------------------


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """Headless Chromium on the DevTools protocol over a pipe (fds 3 and 4 in the child,
    NUL-separated JSON messages)."""

    def __init__(self, binary: str, width: int = 1100, height: int = 800) -> None:
        self.profile = tempfile.mkdtemp(prefix="daam-chromium-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        child = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (to_child_r, from_child_w)]
        os.close(to_child_r)
        os.close(from_child_w)
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={width},{height}",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        actions = [
            (os.POSIX_SPAWN_DUP2, child[0], 3),
            (os.POSIX_SPAWN_DUP2, child[1], 4),
            (os.POSIX_SPAWN_DUP2, self.log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, self.log.fileno(), 2),
        ]
        self.pid = os.posix_spawn(binary, args, os.environ, file_actions=actions)
        for fd in child:
            os.close(fd)
        self.writer, self.reader = to_child_w, from_child_r
        self.buffer = b""
        self.last_id = 0
        self.events: list = []
        self.session = None

    def _messages(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            if b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                yield json.loads(raw)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer; log: {self.log.name}")
            ready, _, _ = select.select([self.reader], [], [], left)
            if ready:
                chunk = os.read(self.reader, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe; log: {self.log.name}")
                self.buffer += chunk

    def send(self, method: str, params=None, browser: bool = False, timeout: float = 60):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if self.session and not browser:
            message["sessionId"] = self.session
        os.write(self.writer, json.dumps(message).encode() + b"\0")
        for reply in self._messages(timeout):
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        for position, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(position)
        for event in self._messages(timeout):
            if event.get("method") == method:
                return event
            self.events.append(event)

    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
        self.session = self.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            browser=True,
        )["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout}s: {expression}")
            time.sleep(0.05)

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def key(self, key: str, code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code},
            )

    def screenshot(self) -> np.ndarray:
        shot = self.send("Page.captureScreenshot", {"format": "png"})
        with Image.open(io.BytesIO(base64.b64decode(shot["data"]))) as image:
            return np.asarray(image.convert("RGB"))

    def close(self) -> None:
        try:
            os.write(self.writer, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.writer)
        os.close(self.reader)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    binary = chromium_binary()
    if binary is None:
        missing_tool(
            "chromium",
            "no Chromium binary on PATH: install Debian's chromium package "
            "(apt-get install -y chromium), as .ci/run does",
        )
    chromium = Chromium(binary)
    try:
        chromium.open_page()
        yield chromium
    finally:
        chromium.close()


def rect(browser, selector: str) -> dict:
    return browser.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
        ".getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; })()"
    )


def shown(browser, panel: int) -> dict:
    return browser.evaluate(
        f"(() => {{ const h = document.querySelector('#panel-{panel} img.heat'); "
        "return {src: h.src, frame: h.dataset.frame, opacity: h.style.opacity, "
        "done: h.complete && h.naturalWidth > 0}; })()"
    )


def crop(picture: np.ndarray, box: dict) -> np.ndarray:
    x, y = int(box["x"]), int(box["y"])
    return picture[y : y + int(box["h"]), x : x + int(box["w"])]


def test_viewer_in_headless_chromium(explained, browser, tmp_path):
    _, images, flows = explained
    path = write_flow_viewer(tmp_path / "viewer.html", images, flows, class_names=NAMES)
    data = page_data(path.read_text(encoding="utf-8"))
    frames = [[entry for entry in image["classes"]] for image in data["images"]]
    blocks = data["blocks"]
    browser.navigate(path.as_uri())
    assert browser.evaluate("document.body.dataset.ready") == "true"

    # Opens on the final accumulated map of the top class.
    for panel in (0, 1):
        state = shown(browser, panel)
        assert state["src"] == frames[panel][0]["accumulated"][blocks - 1]
        assert state["done"], "the frame decodes in the browser"
    assert browser.evaluate("document.getElementById('block').value") == str(blocks)
    stack = rect(browser, "#panel-0 .stack")
    before = browser.screenshot()

    # Drag the block slider to its left end with the mouse.
    slider = rect(browser, "#block")
    browser.click(slider["x"] + 2, slider["y"] + slider["h"] / 2)
    assert browser.evaluate("document.getElementById('block').value") == "1"
    for panel in (0, 1):
        state = shown(browser, panel)
        assert state["src"] == frames[panel][0]["accumulated"][0]
        assert state["frame"] == f"{panel}/0/accumulated/0"
    assert "block=1" in browser.evaluate("location.hash")
    assert browser.evaluate("document.getElementById('block-label').textContent").startswith(
        "D1 of 3"
    )
    after = browser.screenshot()
    assert before.shape == after.shape
    changed = np.abs(crop(before, stack).astype(int) - crop(after, stack).astype(int))
    assert changed.max() > 40, "the image panel looks different after moving the slider"
    Image.fromarray(after).save(tmp_path / "viewer.png")

    # Arrow key on the focused slider: one block on.
    browser.evaluate("document.getElementById('block').focus()")
    browser.key("ArrowRight", 39)
    assert shown(browser, 0)["src"] == frames[0][0]["accumulated"][1]

    # Per-block maps instead of accumulated ones.
    radio = rect(browser, "input[name=mode][value=block_maps]")
    browser.click(radio["x"] + radio["w"] / 2, radio["y"] + radio["h"] / 2)
    assert shown(browser, 0)["src"] == frames[0][0]["block_maps"][1]

    # The second image's second class; the first image keeps its top class.
    button = rect(browser, "#panel-1 .classes button[data-rank='1']")
    browser.click(button["x"] + 10, button["y"] + button["h"] / 2)
    assert shown(browser, 1)["src"] == frames[1][1]["block_maps"][1]
    assert shown(browser, 0)["src"] == frames[0][0]["block_maps"][1]
    label = browser.evaluate("document.querySelector('#panel-1 button.active').textContent")
    assert NAMES[frames[1][1]["target"]] in label

    # Opacity slider to the left end: the map disappears from the picture.
    opacity = rect(browser, "#opacity")
    browser.click(opacity["x"] + 1, opacity["y"] + opacity["h"] / 2)
    assert float(shown(browser, 0)["opacity"]) == 0.0

    # Editing the link changes the view; a shared link opens in its state.
    browser.evaluate("location.hash = '#block=3&mode=block&rank=0'")
    browser.wait_for(
        "document.querySelector('#panel-1 img.heat').dataset.frame === '1/0/block_maps/2'"
    )
    assert shown(browser, 1)["src"] == frames[1][0]["block_maps"][2]
    browser.navigate("about:blank")
    browser.navigate(path.as_uri() + "#block=2&mode=acc&rank=1&opacity=0.8")
    for panel in (0, 1):
        state = shown(browser, panel)
        assert state["src"] == frames[panel][1]["accumulated"][1]
        assert float(state["opacity"]) == pytest.approx(0.8)

    requests = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests
    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    assert not errors, errors


def test_page_is_the_package_assets_filled_once(explained):
    from importlib.resources import files

    from captum_daam.visualization import FlowStyle

    _, images, flows = explained
    names = [f"{{{{title}}}} {{{{data}}}} {i}" for i in range(NUM_CLASSES)]
    page = render_flow_viewer(
        images,
        flows,
        class_names=names,
        title="T {{css}} <&>",
        alpha=0.3,
        display_size=200,
        frame_ms=250,
    )
    assets = files("captum_daam.viewer").joinpath("assets")
    css = assets.joinpath("viewer.css").read_text(encoding="utf-8")
    script = assets.joinpath("viewer.js").read_text(encoding="utf-8")
    assert css.replace("{{size}}", "200") in page
    assert (script.replace("{{alpha}}", "0.3").replace("{{frame_ms}}", "250")) in page
    assert page.count("<title>T {{css}} &lt;&amp;&gt;</title>") == 1
    # Names are data: the braces in them are not filled in.
    assert page_data(page)["images"][0]["classes"][0]["label"].startswith("{{title}} {{data}}")
    # A style object gives the same page as its keywords.
    style = FlowStyle(alpha=0.3, display_size=200, frame_ms=250)
    assert (
        render_flow_viewer(images, flows, class_names=names, title="T {{css}} <&>", style=style)
        == page
    )


def test_page_refuses_bad_options_by_name(explained):
    _, images, flows = explained
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        render_flow_viewer(images, flows, alpha=1.5)
    with pytest.raises(ValueError, match="image_format must be one of"):
        render_flow_viewer(images, flows, image_format="gif")
    with pytest.raises(TypeError, match="colour"):
        render_flow_viewer(images, flows, colour="red")


def _mapped(maps: torch.Tensor, mapping: str, size) -> np.ndarray:
    """A display mapping of one flow of maps (blocks, rows, cols), written out: bilinear
    upsampling, then ``linear`` (one min-max over all blocks) or ``sigmoid``
    (``sigmoid(5 * m / max(last map)) - 0.5``, min-max per frame)."""
    up = torch.nn.functional.interpolate(
        maps[None].double(), size=size, mode="bilinear", align_corners=False
    )[0]
    if mapping == "sigmoid":
        up = torch.sigmoid(5 * up / up[-1].max().clamp(min=1e-30)) - 0.5
        dims = (1, 2)
    else:
        dims = (0, 1, 2)
    low = up.amin(dim=dims, keepdim=True)
    span = up.amax(dim=dims, keepdim=True) - low
    return torch.where(span > 0, (up - low) / span.clamp(min=1e-30), 0.0).numpy()


@pytest.mark.parametrize("mapping", ["sigmoid", "linear"])
def test_each_class_rank_shows_its_own_separate_daam_call(explained, mapping):
    """Per image and class rank, the page's class is the model's class of that rank, and
    its score, shares and frames are those of a separate ``DAAM.attribute`` call on that
    image alone with that class as target, mapped and coloured as written out here."""
    model, images, flows = explained
    data = page_data(render_flow_viewer(images, flows, image_format="png", mapping=mapping))
    assert data["mapping"] == mapping
    jet = colormaps["jet"]
    for i, image in enumerate(data["images"]):
        with torch.no_grad():
            ranked = model(images[i : i + 1])[0].topk(2).indices.tolist()
        assert [entry["target"] for entry in image["classes"]] == ranked
        for entry, target in zip(image["classes"], ranked, strict=True):
            flow = DAAM(model).attribute(images[i : i + 1], target=target, return_flow=True)
            assert entry["score"] == pytest.approx(float(flow.scores[0]), rel=1e-4, abs=1e-5)
            masses = flow.block_maps[0].double().sum(dim=(-2, -1))
            np.testing.assert_allclose(entry["contributions"], masses / masses.sum(), atol=1e-5)
            for which in ("accumulated", "block_maps"):
                frames = _mapped(getattr(flow, which)[0], mapping, (32, 32))
                assert len(entry[which]) == len(frames)
                for b, frame in enumerate(frames):
                    expected = np.clip(jet(frame)[..., :3], 0, 1) * 255
                    error = np.abs(decode(entry[which][b]).astype(np.float64) - expected)
                    # Lossless PNG: only rounding and a colour-map bin at a boundary.
                    assert error.mean() < 1.5 and np.quantile(error, 0.99) < 12, (i, which, b)
