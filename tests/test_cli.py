"""The command line: outputs written, user errors reported in one line with status 2."""

import json
import os
import re

import numpy as np
import pytest
import timm
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from captum_daam.cli import main
from captum_daam.zoo import DEFAULT_WEIGHTS_PATH
from viewer_pages import decode, page_data

MODEL = "test_vit"  # timm's tiny test ViT: 160 px, 6 blocks, 64 channels


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Random weights for a 5-class test ViT, saved as a local file."""
    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False, num_classes=5)
    path = tmp_path_factory.mktemp("weights") / "vit.safetensors"
    save_file(model.state_dict(), str(path))
    return path


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def explain_tiny(capsys, folder, weights, out, *args):
    """``captum-daam explain FOLDER --model MODEL --weights WEIGHTS --out OUT ARGS...``."""
    return run(
        capsys, "explain", folder, "--model", MODEL, "--weights", weights, "--out", out, *args
    )


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_folder_writes_outputs_and_skips_bad_files(
    capsys, tmp_path, image_folder, tiny_weights
):
    out = tmp_path / "out"
    code, stdout, stderr = explain_tiny(
        capsys,
        image_folder,
        tiny_weights,
        out,
        "--topk",
        "2",
        "--gif",
        "--html",
        "--batch-size",
        "1",
    )
    assert code == 0, stderr
    assert "notes.txt: not an image file, skipped" in stderr
    assert "broken.png: cannot read image" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["file"].split("/")[-1] for r in summary["images"]] == ["a.png", "b.jpg"]
    for record in summary["images"]:
        assert len(record["explained"]) == 2
        assert [e["class"] for e in record["explained"]] == [
            p["class"] for p in record["predictions"][:2]
        ]
        for entry in record["explained"]:
            assert (
                abs(sum(entry["block_contributions"]) - 1) < 1e-3
                or sum(entry["block_contributions"]) == 0
            )
    maps = np.load(out / "a_maps.npz")
    assert maps["block_maps"].shape == (2, 6, 10, 10)
    np.testing.assert_allclose(maps["accumulated"], maps["block_maps"].cumsum(1), rtol=1e-5)
    for suffix in ("_flow_top1.png", "_flow_top2.png", "_flow_top1.gif"):
        assert (out / f"a{suffix}").stat().st_size > 0
    page = (out / "viewer.html").read_text()
    assert "a.png" in page and "b.jpg" in page and "http://" not in page


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "/no/such/image.png", "--model", MODEL], "no such file or folder"),
        (["explain", "{folder}", "--model", "not_a_timm_model"], "unknown model name"),
        (
            ["explain", "{folder}", "--model", "test_vit2", "--weights", "{weights}"],
            "do not fit test_vit2",
        ),
        (
            ["explain", "{folder}", "--model", MODEL, "--weights", "/no/weights.pth"],
            "weights file not found",
        ),
        (
            ["explain", "{folder}", "--model", MODEL, "--weights", "{weights}", "--target", "7"],
            "--target 7 out of range",
        ),
        (
            [
                "explain",
                "{folder}",
                "--model",
                MODEL,
                "--weights",
                "{weights}",
                "--out",
                "{folder}/notes.txt",
            ],
            "cannot write to",
        ),
        (
            ["explain", "{folder}/notes.txt", "--model", MODEL, "--weights", "{weights}"],
            "none of the images could be read",
        ),
    ],
)
def test_user_errors_are_one_line(capsys, tmp_path, image_folder, tiny_weights, args, message):
    filled = [a.format(folder=image_folder, weights=tiny_weights) for a in args]
    if "--out" not in filled:
        filled += ["--out", str(tmp_path / "out")]
    code, _, stderr = run(capsys, *filled)
    assert code == 2
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.skipif(not DEFAULT_WEIGHTS_PATH.is_file(), reason="embedded weights missing")
def test_demo_runs_offline_and_localises(capsys, tmp_path):
    out = tmp_path / "demo"
    code, stdout, stderr = run(capsys, "demo", "--out", out, "--images", "4")
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["images"]) == 4
    assert len(list((out / "inputs").glob("*.png"))) == 4
    assert len(list(out.glob("*_flow.png"))) == 4
    loc = summary["localisation"]
    assert loc["mean_energy_in_box"] > loc["mean_box_area_fraction"]
    assert "mass inside the object boxes" in stdout


def test_self_supervised_explain_with_a_bank(capsys, tmp_path, image_folder, tiny_weights):
    from captum_daam import MemoryBank

    model = timm.create_model(MODEL, pretrained=False, num_classes=5)
    model.load_state_dict(load_file(str(tiny_weights)))
    images = torch.randn(12, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    bank = MemoryBank.build(model.eval(), images, torch.arange(12) % 3, progress=False)
    bank_path = tmp_path / "bank.safetensors"
    bank.save(bank_path)
    out = tmp_path / "ssl"
    code, _, stderr = explain_tiny(
        capsys, image_folder, tiny_weights, out, "--ssl", "--bank", bank_path, "--k", "4"
    )
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    for record in summary["images"]:
        vote = record["predictions"][0]
        assert vote["class"] in (0, 1, 2) and 0 < vote["vote_share"] <= 1
        assert record["explained"][0]["class"] == vote["class"]
    code, _, stderr = explain_tiny(capsys, image_folder, tiny_weights, out, "--ssl")
    assert code == 2 and "--ssl and --bank FILE go together" in stderr
    code, _, stderr = explain_tiny(
        capsys, image_folder, tiny_weights, out, "--ssl", "--bank", tmp_path / "no.st"
    )
    assert code == 2 and "cannot use memory bank" in stderr and "Traceback" not in stderr


def test_evaluation_protocol_splits_by_id_and_grows_both_splits():
    from captum_daam.evaluation.protocol import interleave, item_id, split_tuning_and_report

    ids = ["c", "a", "e", "b", "d"]  # id order: a b c d e = positions 1 3 0 4 2
    assert split_tuning_and_report(ids, "parity") == ([1, 0, 2], [3, 4])
    assert split_tuning_and_report(ids, "halves") == ([1, 3], [0, 4, 2])
    with pytest.raises(ValueError, match="split must be one of"):
        split_tuning_and_report(ids, "random")
    assert interleave([1, 0, 2], [3, 4]) == [1, 3, 0, 4, 2]
    assert item_id([(None, 0, None, "x7")], 0) == "x7"


def test_method_options_are_literals_or_strings():
    from captum_daam.cli import UserError
    from captum_daam.cli.evaluate import method_options

    parsed = method_options(
        ["integrated_gradients.n_steps=16", "daam.token=dist", "rollout.residual=0.5"]
    )
    assert parsed == {
        "integrated_gradients": {"n_steps": 16},
        "daam": {"token": "dist"},
        "rollout": {"residual": 0.5},
    }
    with pytest.raises(UserError, match="METHOD.NAME=VALUE"):
        method_options(["n_steps=16"])


def test_oversized_and_truncated_images_are_skipped_not_fatal(capsys, tmp_path, tiny_weights):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / "good.jpg")
    Image.new("L", (15000, 15000)).save(folder / "huge.png")  # 225 Mpx, ~200 kB on disk
    data = (folder / "good.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, stdout, stderr = run(
        capsys, "explain", folder, "--model", MODEL, "--weights", tiny_weights, "--out", out
    )
    assert code == 0, stderr
    assert "Traceback" not in stderr and "DecompressionBomb" not in stderr
    assert "huge.png: image too large (15000 x 15000 = 225,000,000 pixels" in stderr
    assert "--max-pixels" in stderr and "skipped" in stderr
    assert "cut.jpg: cannot read image" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["file"].split("/")[-1] for r in summary["images"]] == ["good.jpg"]
    assert len(summary["skipped"]) == 2
    # a cap below every image: all reported, then one error line, status 2
    code, _, stderr = explain_tiny(
        capsys, folder / "good.jpg", tiny_weights, out, "--max-pixels", "100"
    )
    assert code == 2 and "over the cap of 100" in stderr
    assert stderr.strip().splitlines()[-1] == "captum-daam: error: none of the images could be read"
    code, _, stderr = run(capsys, "explain", folder, "--out", out, "--max-pixels", "-1")
    assert code == 2 and "--max-pixels must be 0" in stderr


def _one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("captum-daam: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bad_weights_and_bank_files_are_one_line(capsys, tmp_path, image_folder, tiny_weights):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, evil)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(tiny_weights.read_bytes()[:1000])
    random_pth = tmp_path / "random.pth"
    random_pth.write_bytes(bytes(range(256)) * 4)
    expected = {
        evil: "is not a plain weights file: it holds Python objects that "
        "torch.load(weights_only=True) refuses to load (it asks for posix.system); "
        "re-save it with torch.save(model.state_dict()) or use .safetensors",
        corrupt: "is not a readable .safetensors file",
        random_pth: "is not a readable PyTorch weights file",
    }
    for weights, message in expected.items():
        code, stdout, stderr = explain_tiny(
            capsys, image_folder / "a.png", weights, tmp_path / "out"
        )
        assert code == 2 and "pwned" not in stdout
        line = _one_error_line(stderr)
        assert f"{weights} {message}" in line, line
    bank = tmp_path / "bank.safetensors"
    bank.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage header}")
    code, _, stderr = run(
        capsys,
        "explain",
        image_folder / "a.png",
        "--ssl",
        "--bank",
        bank,
        "--out",
        tmp_path / "out",
    )
    assert code == 2
    line = _one_error_line(stderr)
    assert "cannot use memory bank" in line and "not a captum_daam memory bank" in line
    assert "rebuild it with MemoryBank.build" in line


def test_state_dict_from_raises_the_librarys_file_error(tmp_path, tiny_weights):
    from captum_daam.cli.weights import state_dict_from
    from captum_daam.errors import InvalidFileError

    assert set(state_dict_from(tiny_weights)) == set(load_file(str(tiny_weights)))
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "wrapped.pth")
    assert list(state_dict_from(tmp_path / "wrapped.pth")) == ["w"]
    torch.save([1, 2, 3], tmp_path / "list.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "loop.pth").symlink_to(tmp_path / "loop.pth")
    for name, message in [
        ("list.pth", "does not hold a state dict"),
        ("empty.pth", "not a readable PyTorch weights file"),
        ("loop.pth", "broken or looping symbolic link"),
        ("missing.pth", "weights file not found"),
        (".", "is a folder"),
    ]:
        with pytest.raises(InvalidFileError, match=message):
            state_dict_from(tmp_path / name)


# --- help: at once, every option explained, examples -------------------------------------

HEAVY = ("torch", "timm", "matplotlib", "captum", "numpy", "PIL", "transformers")


def _modules_after(code: str) -> set:
    """The top-level modules a fresh interpreter holds after ``code``."""
    import subprocess
    import sys

    script = code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_help_imports_nothing_heavy():
    loaded = _modules_after(
        "import contextlib, io\n"
        "from captum_daam.cli import build_parser\n"
        "for command in ([], ['explain'], ['evaluate'], ['demo']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "        try:\n"
        "            build_parser().parse_args(command + ['--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    assert 'usage: captum-daam' in text.getvalue()\n"
    )
    assert not loaded & set(HEAVY), f"--help imported {sorted(loaded & set(HEAVY))}"


def test_package_imports_lazily_and_keeps_its_names():
    assert not _modules_after("import captum_daam") & {"torch", "timm", "captum"}
    import captum_daam
    from captum_daam import DAAM
    from captum_daam.attr import DAAM as defined

    assert DAAM is defined and captum_daam.upsample.__module__ == "captum_daam.display"
    assert set(captum_daam.__all__) <= set(dir(captum_daam))
    for name in captum_daam.__all__:
        assert getattr(captum_daam, name) is not None


@given(st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True))
def test_unknown_package_names_raise_attribute_error(name):
    import captum_daam

    if name in dir(captum_daam):
        return
    with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
        getattr(captum_daam, name)


def _subcommands():
    import argparse

    from captum_daam.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, commands.choices


def test_every_option_has_help_with_its_default():
    parser, commands = _subcommands()
    assert set(commands) == {"explain", "evaluate", "demo"}
    for name, command in commands.items():
        formatter = command.formatter_class(prog=command.prog)
        for action in command._actions:
            if action.dest == "help":
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.metavar}"
            assert action.help and len(action.help) > 10, f"{what} has no help text"
            if action.option_strings:
                assert "default" in formatter._get_help_string(action), (
                    f"{what} does not say its default"
                )
    target = {a.dest: a for a in commands["explain"]._actions}["target"]
    assert "class index" in target.help
    target = {a.dest: a for a in commands["evaluate"]._actions}["target"]
    assert "class index" in target.help


def test_top_level_help_ends_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    examples = text[text.index("examples:") :]
    assert "captum-daam demo" in examples and "captum-daam explain" in examples
    assert "captum-daam evaluate" in examples and "--target 281" in examples
    for command in ("explain", "evaluate", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "(default: " in capsys.readouterr().out


# What the command line reports, recomputed from the files it wrote ----------------------


def _shares(block_maps: np.ndarray) -> np.ndarray:
    """Each block's share of the final map's mass, (..., blocks), by its definition."""
    masses = block_maps.astype(np.float64).sum(axis=(-2, -1))
    totals = masses.sum(axis=-1, keepdims=True)
    return np.where(totals > 0, masses / np.where(totals > 0, totals, 1.0), 0.0)


def _centres_in_box(box, size) -> np.ndarray:
    """(H, W) mask of the pixels whose centre lies in box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    ys = np.arange(size[0]) + 0.5
    xs = np.arange(size[1]) + 0.5
    return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


@pytest.mark.skipif(not DEFAULT_WEIGHTS_PATH.is_file(), reason="embedded weights missing")
def test_demo_energy_in_boxes_is_the_mass_of_the_written_maps_inside_the_boxes(capsys, tmp_path):
    """summary.json's and stdout's energies, recomputed from the ``*_maps.npz`` the demo
    wrote: the final map upsampled (bilinear) to the image, its non-negative mass inside
    the object box (pixel centres) over its whole mass. The boxes are those of the demo's
    generator (SyntheticShapes, seed 2026)."""
    from captum_daam.zoo import SyntheticShapes

    out = tmp_path / "demo"
    code, stdout, stderr = run(capsys, "demo", "--out", out, "--images", "4")
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    dataset = SyntheticShapes(4, seed=2026)
    energies, areas = [], []
    for i, record in enumerate(summary["images"]):
        image, _, box = dataset[i]
        size = tuple(image.shape[-2:])
        maps = np.load(out / f"{os.path.basename(record['file'])[:-4]}_maps.npz")
        assert maps["accumulated"].shape[0] == 1 and len(record["explained"]) == 1
        entry = record["explained"][0]
        assert entry["class"] == int(maps["targets"][0])
        np.testing.assert_allclose(
            entry["block_contributions"], _shares(maps["block_maps"][0]), atol=1e-5
        )
        final = torch.from_numpy(maps["accumulated"][0, -1]).double()[None, None]
        upsampled = torch.nn.functional.interpolate(
            final, size=size, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        mass = np.clip(upsampled, 0, None)
        mask = _centres_in_box(box.tolist(), size)
        energy = float((mass * mask).sum() / mass.sum())
        area = float(mask.mean())
        assert entry["energy_in_box"] == pytest.approx(energy, abs=1e-4)
        assert entry["box_area_fraction"] == pytest.approx(area, abs=1e-4)
        energies.append(energy)
        areas.append(area)
    loc = summary["localisation"]
    assert loc["mean_energy_in_box"] == pytest.approx(np.mean(energies), abs=1e-4)
    assert loc["mean_box_area_fraction"] == pytest.approx(np.mean(areas), abs=1e-4)
    shown = re.search(
        r"mass inside the object boxes: ([0-9.]+) \(a uniform map: ([0-9.]+)\)", stdout
    )
    assert shown, stdout
    assert float(shown.group(1)) == pytest.approx(np.mean(energies), abs=6e-4)
    assert float(shown.group(2)) == pytest.approx(np.mean(areas), abs=6e-4)


def _tiles(picture: np.ndarray, side: int = 16) -> np.ndarray:
    """Means of side x side tiles of an (H, W, 3) picture: what JPEG keeps well."""
    rows, cols = picture.shape[0] // side, picture.shape[1] // side
    return picture.reshape(rows, side, cols, side, 3).mean(axis=(1, 3))


def _sigmoid_frames(maps: torch.Tensor, size) -> np.ndarray:
    """The paper's display mapping of one flow of maps (blocks, rows, cols), written out:
    bilinear upsampling, ``sigmoid(5 * m / max(last map)) - 0.5``, min-max per frame."""
    up = torch.nn.functional.interpolate(
        maps[None].double(), size=size, mode="bilinear", align_corners=False
    )[0]
    squashed = torch.sigmoid(5 * up / up[-1].max().clamp(min=1e-30)) - 0.5
    low = squashed.amin(dim=(1, 2), keepdim=True)
    span = squashed.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (squashed - low) / span.clamp(min=1e-30), 0.0).numpy()


def test_explain_viewer_shows_each_class_rank_with_its_own_daam_call(
    capsys, tmp_path, image_folder, tiny_weights
):
    """The viewer page of ``explain --topk 2 --html`` (in batches of one), per image and
    class rank: the class is the rank's class of the model's logits, and the score,
    shares and frames are those of a separate ``DAAM.attribute(image, target=class)``."""
    from matplotlib import colormaps

    from captum_daam import DAAM
    from captum_daam.cli.models import load_model
    from captum_daam.image_files import read_image

    out = tmp_path / "out"
    args = ["explain", image_folder, "--model", MODEL, "--weights", tiny_weights]
    code, _, stderr = run(capsys, *args, "--out", out, "--topk", "2", "--html", "--batch-size", "1")
    assert code == 0, stderr
    data = page_data((out / "viewer.html").read_text(encoding="utf-8"))
    loaded = load_model(MODEL, str(tiny_weights))
    model = timm.create_model(MODEL, pretrained=False, num_classes=5).eval()
    model.load_state_dict(load_file(str(tiny_weights)))
    jet = colormaps["jet"]
    assert [image["name"] for image in data["images"]] == ["a.png", "b.jpg"]
    for image in data["images"]:
        x = loaded.transform(read_image(image_folder / image["name"]))[None]
        with torch.no_grad():
            ranked = model(x)[0].topk(2).indices.tolist()
        assert [entry["target"] for entry in image["classes"]] == ranked
        for rank, entry in enumerate(image["classes"]):
            flow = DAAM(model).attribute(x, target=ranked[rank], return_flow=True)
            assert entry["score"] == pytest.approx(float(flow.scores[0]), rel=1e-4, abs=1e-5)
            np.testing.assert_allclose(
                entry["contributions"], _shares(flow.block_maps[0].numpy()), atol=1e-5
            )
            for which in ("accumulated", "block_maps"):
                frames = _sigmoid_frames(getattr(flow, which)[0], tuple(x.shape[-2:]))
                assert len(entry[which]) == len(frames) == 6
                for b, frame in enumerate(frames):
                    expected = _tiles(np.clip(jet(frame)[..., :3], 0, 1) * 255)
                    shown = _tiles(decode(entry[which][b]).astype(np.float64))
                    # JPEG keeps tile means within ~2 levels; another class's or
                    # another block's frame is 10 to 100 levels away.
                    assert np.abs(shown - expected).mean() < 4, (image["name"], rank, which, b)
