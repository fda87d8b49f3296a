"""Figures and GIFs are made from results, returned, and written only where asked."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from captum_daam import DAAM
from captum_daam.visualization import (
    class_names_for,
    display_frames,
    flow_figure,
    flow_gif,
    overlay,
    to_display_image,
)
from conftest import missing_tool
from families import build


@pytest.fixture(scope="module")
def example():
    model = build("vit", torch.float32)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    return images, DAAM(model).attribute(images, return_flow=True)


def test_flow_figure_has_every_block(example, tmp_path):
    images, flow = example
    path = tmp_path / "flow.png"
    figure = flow_figure(images[1], flow, index=1, path=path)
    assert isinstance(figure, Figure)
    blocks = flow.num_blocks
    assert len(figure.axes) == 2 * (blocks + 1) + 1  # two rows of (input + B) and bars
    bars = figure.axes[-1].patches
    heights = np.array([bar.get_height() for bar in bars])
    np.testing.assert_allclose(heights, flow.contributions()[1].numpy(), rtol=1e-6)
    assert path.stat().st_size > 0
    only_d = flow_figure(images[0], flow, show_block_maps=False, mapping="linear")
    assert len(only_d.axes) == (blocks + 1) + 1


def test_gif_has_one_frame_per_block(example, tmp_path):
    images, flow = example
    path = flow_gif(images[0], flow, tmp_path / "flow.gif", scale=2)
    with Image.open(path) as gif:
        assert gif.n_frames == flow.num_blocks
        assert gif.size == (64, 64)


def test_overlay_and_frames(example, tmp_path):
    images, flow = example
    assert isinstance(overlay(images[0], flow.final[0], path=tmp_path / "o.png"), Figure)
    frames = display_frames(flow, 0, "sigmoid")
    assert frames.shape == (flow.num_blocks, 32, 32)
    assert frames.min() >= 0 and frames.max() <= 1
    with pytest.raises(ValueError, match="choose one of"):
        display_frames(flow, 0, "log")


def test_display_image_undoes_normalisation():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.25)
    pixels = torch.rand(3, 5, 7)
    normalised = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    shown = to_display_image(normalised, mean, std)
    np.testing.assert_allclose(shown, pixels.permute(1, 2, 0).numpy(), atol=1e-6)


def test_imagenet_names_only_for_1000_classes():
    names = class_names_for(1000)
    assert len(names) == 1000 and "tabby" in names[281]
    assert class_names_for(10) is None


def test_mp4_needs_an_encoder_and_says_so(example, tmp_path, monkeypatch):
    import shutil

    import captum_daam.visualization as visualization

    images, flow = example
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install ffmpeg.*flow_gif"):
        visualization.flow_mp4(images[0], flow, tmp_path / "flow.mp4")


def test_missing_tool_skips_unless_ci_requires_it():
    def outcome(tool, value):
        environ = {} if value is None else {"CAPTUM_DAAM_REQUIRE_TOOLS": value}
        try:
            missing_tool(tool, f"no {tool} here", environ)
        except pytest.skip.Exception as skipped:
            assert f"no {tool} here" in str(skipped)
            return "skip"
        except pytest.fail.Exception as failed:
            assert f"no {tool} here" in str(failed) and f"requires {tool}" in str(failed)
            return "fail"
        return "returned"

    for value in (None, "", "chromium", " , "):
        assert outcome("ffmpeg", value) == "skip"
    for value in ("ffmpeg", "chromium,ffmpeg", " Chromium , FFmpeg "):
        assert outcome("ffmpeg", value) == "fail"
    assert outcome("chromium", "ffmpeg") == "skip"
    assert outcome("chromium", "chromium,ffmpeg") == "fail"


def test_mp4_has_one_frame_per_block_plus_hold(example, tmp_path):
    import shutil
    import subprocess

    from captum_daam.visualization import flow_mp4

    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        missing_tool(
            "ffmpeg", "no ffmpeg/ffprobe installed: MP4 is written only where an encoder is"
        )
    images, flow = example
    path = flow_mp4(images[0], flow, tmp_path / "flow.mp4", scale=3)  # 96 px: even
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,width,height",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    width, height, frames = (int(v) for v in probe.split(","))
    assert (width, height) == (96, 96) and frames == flow.num_blocks + 3


def test_style_is_one_set_of_options_given_as_object_or_keywords(example):
    from dataclasses import FrozenInstanceError

    from captum_daam.visualization import FlowStyle, flow_stills

    images, flow = example
    style = FlowStyle(mapping="linear", cmap="viridis", alpha=0.3, scale=2)
    by_style = flow_stills(images[0], flow, style=style)
    by_keywords = flow_stills(images[0], flow, mapping="linear", cmap="viridis", alpha=0.3, scale=2)
    mixed = flow_stills(
        images[0], flow, style=FlowStyle(mapping="linear", scale=2), cmap="viridis", alpha=0.3
    )
    for other in (by_keywords, mixed):
        assert len(other) == len(by_style) == flow.num_blocks
        for a, b in zip(by_style, other, strict=True):
            np.testing.assert_array_equal(a, b)
    assert by_style[0].shape == (64, 64, 3)
    assert FlowStyle.resolve(None, alpha=0.3) == FlowStyle(alpha=0.3)
    assert FlowStyle.resolve(style) is style
    assert FlowStyle.split({"style": style, "quality": 50, "title": "T"}) == (
        FlowStyle(mapping="linear", cmap="viridis", alpha=0.3, scale=2, quality=50),
        {"title": "T"},
    )
    with pytest.raises(FrozenInstanceError):
        style.alpha = 0.9


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mapping": "log"}, "choose one of"),
        ({"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
        ({"image_format": "gif"}, "image_format must be one of"),
        ({"quality": 0}, r"quality must lie in \[1, 100\]"),
        ({"frame_ms": 0}, "frame_ms must be at least 1"),
        ({"scale": 0}, "scale must be at least 1"),
        ({"display_size": 0}, "display_size must be at least 1"),
    ],
)
def test_style_refuses_bad_options(options, message):
    from captum_daam.visualization import FlowStyle

    with pytest.raises(ValueError, match=message):
        FlowStyle(**options)


def test_unknown_options_and_styles_are_refused_by_name(example):
    from captum_daam.visualization import FlowStyle

    images, flow = example
    with pytest.raises(TypeError, match=r"unknown display option\(s\) \['colour'\]"):
        flow_figure(images[0], flow, colour="red")
    with pytest.raises(TypeError, match="style must be a FlowStyle, got dict"):
        flow_gif(images[0], flow, "unused.gif", style={"alpha": 0.3})
    with pytest.raises(ValueError, match="which must be one of"):
        display_frames(flow, 0, "sigmoid", "final")
    assert FlowStyle.resolve(None) == FlowStyle()


def test_class_label_falls_back_to_the_index():
    from captum_daam.visualization import class_label

    assert class_label(1, ["a", "b"]) == "b"
    assert class_label(5, ["a", "b"]) == "class 5"
    assert class_label(3) == "class 3"


def test_mp4_speed_follows_the_style(example, tmp_path, monkeypatch):
    import subprocess

    from captum_daam.visualization import flow_mp4

    images, flow = example
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, b"", b"")

    monkeypatch.setattr(subprocess, "run", fake_run)
    flow_mp4(images[0], flow, tmp_path / "a.mp4", ffmpeg="ffmpeg")
    flow_mp4(images[0], flow, tmp_path / "b.mp4", ffmpeg="ffmpeg", frame_ms=200)
    flow_mp4(images[0], flow, tmp_path / "c.mp4", ffmpeg="ffmpeg", fps=7, frame_ms=200)
    rates = [command[command.index("-r") + 1] for command in commands]
    assert rates == ["2.5", "5.0", "7"]


def _shows(axis, picture) -> bool:
    return any(np.array_equal(np.asarray(im.get_array()), picture) for im in axis.images)


def _colour_bars(figure):
    """The colour-bar axes of a figure, inset ones included."""
    axes = list(figure.axes) + [child for a in figure.axes for child in a.child_axes]
    return [a for a in axes if "mapped value" in a.get_xlabel()]


@pytest.mark.parametrize("show_block_maps", [True, False])
def test_flow_figure_reads_on_its_own(example, show_block_maps):
    """Input once, a colour bar of the maps, a caption for D_b and L_b, a logit title."""
    images, flow = example
    figure = flow_figure(images[0], flow, show_block_maps=show_block_maps)
    picture = to_display_image(images[0])
    assert sum(_shows(axis, picture) for axis in figure.axes) == 1
    (bar,) = _colour_bars(figure)
    assert "sigmoid" in bar.get_xlabel()
    caption = " ".join(text.get_text() for text in figure.texts)
    assert "$D_b = L_1 + \\dots + L_b$" in caption and "$L_b$: block $b$'s own map" in caption
    title = figure._suptitle.get_text()
    assert f"logit {float(flow.scores[0]):.2f}" in title and "score" not in title
    linear = flow_figure(images[0], flow, show_block_maps=show_block_maps, mapping="linear")
    assert "linearly" in _colour_bars(linear)[0].get_xlabel()


def test_self_supervised_flow_figure_says_score_not_logit(example):
    from dataclasses import fields

    from captum_daam import SelfSupervisedFlow

    images, flow = example
    n, k = flow.scores.shape[0], 3
    extra = dict(
        voted_class=flow.targets,
        vote_share=torch.ones(n),
        neighbour_indices=torch.zeros(n, k, dtype=torch.long),
        neighbour_similarities=torch.ones(n, k),
        neighbour_labels=torch.zeros(n, k, dtype=torch.long),
        support_indices=torch.zeros(n, k, dtype=torch.long),
        importance=torch.ones(n, 8),
    )
    ssl = SelfSupervisedFlow(**{f.name: getattr(flow, f.name) for f in fields(flow)}, **extra)
    title = flow_figure(images[0], ssl, show_block_maps=False)._suptitle.get_text()
    assert title.startswith("Self-supervised DAAM flow")
    assert f"score <w, f> {float(flow.scores[0]):.2f}" in title and "logit" not in title
