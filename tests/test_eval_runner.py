"""The evaluation harness: measurements, tau tuned on another split, resumable cache,
and two-process sharding under torchrun.

Run as a script under torchrun, this file is the worker of the two-process test.
"""

import json
import sys
from pathlib import Path

import pytest
import timm
import torch

from captum_daam.evaluation.runner import (
    evaluate,
    markdown_table,
    paired_comparison,
    paired_markdown,
    summarize,
    write_report,
)
from torchrun import run_two_processes

SIZE, PATCH = 32, 8


class Squares(torch.utils.data.Dataset):
    """Images that show their own box: a bright square on a dark background."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        side = int(torch.randint(8, 17, (1,), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, SIZE - side + 1, (2,), generator=g))
        image = torch.full((3, SIZE, SIZE), -1.0)
        image[:, y0 : y0 + side, x0 : x0 + side] = 1.0
        box = torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float64)
        return image, index % 5, box, f"square-{index:03d}"


def _model():
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=SIZE,
        patch_size=PATCH,
        embed_dim=48,
        num_heads=3,
        depth=2,
        num_classes=5,
    ).eval()


class Counting:
    """An explainer that counts the images it explains."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, images, targets):
        self.calls += images.shape[0]
        return self.fn(images)


def _oracle(images):  # the bright square itself: IoU 1 at any tau in (0, 1)
    return (images[:, 0] > 0).float()


def _uniform(images):
    return torch.ones(images.shape[0], SIZE // PATCH, SIZE // PATCH)


def test_measurements_tau_from_the_tuning_split_and_the_report(tmp_path):
    data, model = Squares(10), _model()
    oracle, uniform = Counting(_oracle), Counting(_uniform)
    records = evaluate(
        model,
        data,
        {"oracle": oracle, "uniform": uniform},
        tmp_path / "c",
        batch_size=4,
        deletion_steps=4,
        progress=False,
    )
    assert len(records) == 20
    ids = sorted({r["id"] for r in records})
    table = summarize(records, ids[0::2], ids[1::2])
    assert table["oracle"]["max_box_acc@0.7"] == 1.0 and table["oracle"]["mean_iou"] == 1.0
    assert 0 < table["oracle"]["tau"] < 1
    assert table["uniform"]["max_box_acc@0.3"] < 1.0  # the whole image is not the box
    # Energy: all of the oracle's mass is inside the box; the uniform map's is the area.
    assert table["oracle"]["energy"] == pytest.approx(1.0)
    areas = [
        float(((b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1])) / SIZE**2)
        for _, _, b, i in (data[k] for k in range(10))
        if i in ids[1::2]
    ]
    assert table["uniform"]["energy"] == pytest.approx(sum(areas) / len(areas))
    for row in records:
        assert len(row["deletion"]) == 5 and 0 <= row["deletion_auc"] <= 1
    paths = write_report(records, table, tmp_path / "out", ids[1::2])
    assert json.loads(paths["json"].read_text())["oracle"]["box_acc"] == 1.0
    assert "| oracle |" in paths["markdown"].read_text() and paths["box_accuracy"].exists()
    assert "MaxBoxAccV2" in markdown_table(table)


def test_tau_is_chosen_on_tuning_images_only():
    taus = torch.tensor([0.2, 0.5, 0.8])

    def record(i, ious):
        return {
            "method": "m",
            "id": f"{i}",
            "ious": ious,
            "energy": 0.5,
            "seconds": 0.0,
            "correct": True,
        }

    tuning = [record(i, [0.0, 0.0, 0.9]) for i in range(3)]  # best at tau 0.8
    evaluation = [record(i + 3, [0.9, 0.0, 0.1]) for i in range(3)]  # best at tau 0.2
    table = summarize(tuning + evaluation, ["0", "1", "2"], ["3", "4", "5"], taus=taus)
    assert table["m"]["tau"] == pytest.approx(0.8)
    assert table["m"]["box_acc"] == 0.0 and table["m"]["max_box_acc@0.5"] == 1.0
    with pytest.raises(ValueError, match="both the tuning and the evaluation"):
        summarize(tuning, ["0", "1"], ["1", "2"], taus=taus)


def test_runs_resume_from_the_cache_and_refuse_other_settings(tmp_path):
    data, model = Squares(6), _model()
    first = Counting(_oracle)
    records = evaluate(
        model, data, {"oracle": first}, tmp_path, batch_size=4, faithfulness=False, progress=False
    )
    assert first.calls == 6 + 1  # + the untimed warm-up call
    again = Counting(_oracle)
    assert (
        evaluate(
            model,
            data,
            {"oracle": again},
            tmp_path,
            batch_size=4,
            faithfulness=False,
            progress=False,
        )
        == records
    )
    assert again.calls == 0
    victim = next((tmp_path / "oracle").glob("square-003*.json"))
    victim.unlink()
    evaluate(
        model, data, {"oracle": again}, tmp_path, batch_size=4, faithfulness=False, progress=False
    )
    assert again.calls == 1 + 1 and victim.exists()
    with pytest.raises(ValueError, match="other settings.*faithfulness"):
        evaluate(model, data, {"oracle": again}, tmp_path, faithfulness=True, progress=False)


def test_faithfulness_on_chosen_images_and_completed_on_resume(tmp_path):
    data, model, oracle = Squares(4), _model(), Counting(_oracle)
    records = evaluate(
        model,
        data,
        {"oracle": oracle},
        tmp_path,
        deletion_steps=2,
        faithfulness_indices=[1, 3],
        progress=False,
    )
    assert [("deletion" in r) for r in records] == [False, True, False, True]
    records = evaluate(model, data, {"oracle": oracle}, tmp_path, deletion_steps=2, progress=False)
    assert all("deletion" in r for r in records)
    assert oracle.calls == (1 + 4) + (1 + 2)  # per run: a warm-up; then only the two missing


def test_captum_metrics_on_chosen_images_equal_a_direct_call(tmp_path):
    from captum_daam.evaluation.faithfulness import captum_metrics

    data, model = Squares(4), _model()
    oracle, uniform = Counting(_oracle), Counting(_uniform)
    options = {"n_perturb_samples": 3}
    records = evaluate(
        model,
        data,
        {"oracle": oracle, "uniform": uniform},
        tmp_path,
        faithfulness=False,
        captum_indices=[1, 2],
        captum_options=options,
        progress=False,
    )
    assert [("infidelity" in r) for r in records] == [False, True, True, False] * 2
    images = torch.stack([data[i][0] for i in (1, 2)])
    labels = torch.tensor([data[i][1] for i in (1, 2)])
    for name, explain in (("oracle", _oracle), ("uniform", _uniform)):
        direct = captum_metrics(
            model, lambda x, t: explain(x), images, labels, max_examples_per_batch=2, **options
        )
        got = [r for r in records if r["method"] == name and "infidelity" in r]
        for key in ("infidelity", "sensitivity_max"):
            assert [r[key] for r in got] == pytest.approx(direct[key].tolist(), rel=1e-5)
    assert all(
        r["sensitivity_max"] == 0 for r in records if r["method"] == "uniform" and "infidelity" in r
    )  # a constant map
    table = summarize(records, ["square-000"], ["square-001", "square-002", "square-003"])
    assert table["oracle"]["infidelity"] == pytest.approx(
        sum(r["infidelity"] for r in records if r["method"] == "oracle" and "infidelity" in r) / 2
    )
    assert "infidelity ↓" in markdown_table(table)
    comparison = paired_comparison(records, table, ["square-001", "square-002"], "oracle")
    assert comparison["uniform"]["n_captum"] == 2
    calls = oracle.calls
    evaluate(
        model,
        data,
        {"oracle": oracle},
        tmp_path / "again",
        faithfulness=False,
        captum_indices=[1],
        captum_options=options,
        progress=False,
    )
    with pytest.raises(ValueError, match="other settings.*captum_metrics"):
        evaluate(
            model,
            data,
            {"oracle": oracle},
            tmp_path,
            faithfulness=False,
            captum_indices=[1],
            captum_options={"n_perturb_samples": 5},
            progress=False,
        )
    with pytest.raises(ValueError, match="not options of captum_metrics"):
        evaluate(
            model,
            data,
            {"oracle": oracle},
            tmp_path / "x",
            captum_options={"steps": 2},
            progress=False,
        )
    assert oracle.calls > calls


def test_evaluate_command_end_to_end(tmp_path):
    from captum_daam.cli import main

    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--num-images",
            "4",
            "--methods",
            "daam",
            "uniform",
            "--steps",
            "2",
            "--sanity",
            "1",
            "--sanity-methods",
            "daam",
            "--captum-metrics",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    table = json.loads((out / "summary.json").read_text())
    assert set(table) == {"daam", "uniform"} and table["daam"]["num_images"] == 2
    assert table["daam"]["num_tuning_images"] == 2
    assert (out / "sanity_daam.png").exists() and "cascading" in (out / "sanity.md").read_text()
    assert (out / "sanity_spearman.png").exists()
    assert table["daam"]["sensitivity_max"] > 0 and "infidelity" in table["uniform"]
    assert main(["evaluate", "--methods", "nonsense", "--out", str(tmp_path / "x")]) == 2
    assert main(["evaluate", "--captum-metrics", "-1", "--out", str(tmp_path / "x")]) == 2


def test_the_registry_methods_run_through_the_harness(tmp_path):
    records = evaluate(
        _model(),
        Squares(3),
        ["daam", "rollout"],
        tmp_path,
        batch_size=3,
        deletion_steps=2,
        progress=False,
    )
    assert {r["method"] for r in records} == {"daam", "rollout"}
    with pytest.raises(ValueError, match="method_options for methods not evaluated"):
        evaluate(
            _model(),
            Squares(3),
            ["daam"],
            tmp_path / "x",
            method_options={"gradcam": {}},
            progress=False,
        )


def test_maps_with_and_without_the_channel_axis_give_the_same_records(tmp_path):
    data, model = Squares(4), _model()
    flat = evaluate(
        model,
        data,
        {"m": Counting(_uniform)},
        tmp_path / "flat",
        deletion_steps=2,
        captum_indices=[1],
        captum_options={"n_perturb_samples": 2},
        progress=False,
    )
    channel = evaluate(
        model,
        data,
        {"m": Counting(lambda x: _uniform(x)[:, None])},
        tmp_path / "channel",
        deletion_steps=2,
        captum_indices=[1],
        captum_options={"n_perturb_samples": 2},
        progress=False,
    )
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(flat) == strip(channel)
    with pytest.raises(ValueError, match=r"\(N, 1, h, w\) or \(N, h, w\)"):
        evaluate(
            model,
            data,
            {"m": lambda x, t: torch.ones(x.shape[0], 2, 4, 4)},
            tmp_path / "two",
            faithfulness=False,
            progress=False,
        )


def test_record_cache_round_trip_and_resume_rules(tmp_path):
    from captum_daam.evaluation.cache import RecordCache, cache_name

    cache = RecordCache(tmp_path)
    cache.check_settings({"a": 1})
    cache.check_settings({"a": 1})  # the same settings: accepted
    with pytest.raises(ValueError, match=r"other settings \(a, b differ\)"):
        cache.check_settings({"a": 2, "b": 0})
    cache.prepare(["m"])
    record = {"method": "m", "id": "val/x.JPEG", "ious": [0.5], "deletion": [1.0, 0.0]}
    cache.write(record)
    assert cache.path("m", "val/x.JPEG").name == cache_name("val/x.JPEG")
    assert "/" not in cache_name("val/x.JPEG") and cache_name("a/b") != cache_name("a_b")
    assert cache.read("m", "val/x.JPEG", needs_curves=True) == record
    assert cache.read("m", "val/x.JPEG", needs_metrics=True) is None  # no infidelity yet
    assert cache.read("m", "other") is None
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporary files


def test_paired_comparison_by_hand(tmp_path):
    def record(method, image, iou, energy, auc=None):
        r = {
            "method": method,
            "id": image,
            "ious": [iou] * 100,
            "energy": energy,
            "seconds": 0.1,
            "correct": True,
        }
        if auc is not None:
            r.update(
                deletion_auc=auc,
                insertion_auc=1 - auc,
                deletion=[1, auc, 0],
                insertion=[0, 1 - auc, 1],
            )
        return r

    ref = {"e0": 0.6, "e1": 0.4, "e2": 0.7, "e3": 0.5}
    records = [record("daam", i, v, v, 0.3 if i in ("e0", "e1") else None) for i, v in ref.items()]
    records += [record("other", i, 0.5, 0.5, 0.2 if i in ("e0", "e1") else None) for i in ref]
    records += [record(m, "t0", 0.9, 0.5) for m in ("daam", "other")]
    table = summarize(records, ["t0"], list(ref))
    result = paired_comparison(records, table, list(ref))
    assert list(result) == ["other"]
    row = result["other"]
    diffs = torch.tensor([0.5 - v for v in ref.values()], dtype=torch.float64)
    half = 1.96 * float(diffs.std()) / 2
    assert row["n"] == 4 and row["mean_iou"] == pytest.approx(-0.05)
    assert row["mean_iou_low"] == pytest.approx(-0.05 - half)
    assert row["mean_iou_high"] == pytest.approx(-0.05 + half)
    assert row["box_acc"] == pytest.approx(0.25)  # e1 becomes a hit (0.4 -> 0.5)
    assert row["energy"] == pytest.approx(-0.05)
    assert row["n_faithfulness"] == 2 and row["deletion_auc"] == pytest.approx(-0.1)
    assert row["deletion_auc_low"] == pytest.approx(-0.1)  # no spread: an exact interval
    assert row["insertion_auc"] == pytest.approx(0.1)
    text = paired_markdown(result)
    assert text.splitlines()[0].startswith("| method - daam | images | Δ mean IoU")
    assert "| other | 4 | -0.050 [" in text
    assert "Δ deletion AUC (2 images)" in text and "Δ mean IoU |" in text
    with pytest.raises(ValueError, match="reference method 'chefer'"):
        paired_comparison(records, table, list(ref), reference="chefer")
    paths = write_report(records, table, tmp_path, list(ref))
    assert "Paired differences to daam" in paths["markdown"].read_text()
    assert json.loads(paths["comparison"].read_text())["other"]["n"] == 4


def test_cli_interleaves_tuning_and_evaluation_images():
    from captum_daam.evaluation.protocol import interleave

    assert interleave([0, 2, 4], [1, 3, 5]) == [0, 1, 2, 3, 4, 5]
    assert interleave([0, 1, 2], [3]) == [0, 3, 1, 2]
    assert interleave([], [7, 8]) == [7, 8]


# ----------------------------------------------------------------------------- torchrun
def _worker(out: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    records = evaluate(
        _model(),
        Squares(7),
        {"oracle": Counting(_oracle), "uniform": Counting(_uniform)},
        out / "cache",
        batch_size=2,
        deletion_steps=3,
        progress=False,
    )
    mine = sorted(p.name for p in (out / "cache" / "oracle").glob("*.json"))
    (out / f"rank{rank}.json").write_text(json.dumps({"records": records, "files": mine}))
    dist.destroy_process_group()


def test_two_processes_shard_and_gather(tmp_path):
    run_two_processes(__file__, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = evaluate(
        _model(),
        Squares(7),
        {"oracle": Counting(_oracle), "uniform": Counting(_uniform)},
        tmp_path / "single",
        batch_size=2,
        deletion_steps=3,
        progress=False,
    )
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(ranks[0]["records"]) == strip(ranks[1]["records"]) == strip(single)
    assert len(single) == 14


def test_evaluate_command_under_torchrun_equals_one_process(tmp_path):
    from captum_daam.cli import main

    args = [
        "evaluate",
        "--num-images",
        "6",
        "--methods",
        "daam",
        "uniform",
        "--steps",
        "2",
        "--device",
        "cpu",
    ]
    run_two_processes("-m", "captum_daam.cli", *args, "--out", str(tmp_path / "two"), timeout=300)
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    tables = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("two", "one")]
    for table in tables:
        for row in table.values():
            row.pop("ms_per_image")
    assert tables[0] == tables[1]
    # the two ranks wrote their shares of the records into the one cache
    assert len(list((tmp_path / "two" / "cache" / "daam").glob("*.json"))) == 6


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
