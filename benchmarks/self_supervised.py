"""Self-supervised DAAM: speed of the memory bank and of attribute, and real-image figures.

    python benchmarks/self_supervised.py build        # bank build throughput (images/s)
    python benchmarks/self_supervised.py attribute    # SelfSupervisedDAAM vs DAAM, same backbone
    python benchmarks/self_supervised.py search       # top-k in a synthetic 1.28 M x 384 bank
    CAPTUM_DAAM_DATA=../shared/data python benchmarks/self_supervised.py real
    python benchmarks/self_supervised.py all --device cuda

``build``: ``MemoryBank.build`` over random 224x224 images (a ``DataLoader`` of an
in-memory tensor dataset, so decoding is not measured), images per second and process
CPU seconds per image.
``attribute``: median wall and process-CPU time of
``SelfSupervisedDAAM.attribute(x, return_flow=True)`` and of
``DAAM.attribute(x, return_flow=True)`` on the same backbone and batch, runs interleaved,
with a random bank of ``--bank-size`` entries. On a shared machine the CPU times are the
steadier measure of cost. ``search``: ``MemoryBank.search`` (chunked top-k, k=20)
of 1, 8 and 64 queries in a random 1,281,167 x 384 float32 bank (ImageNet-1k train
size, ViT-S width; about 2 GB), checked against a brute-force ``topk`` for one query.
Weights are random (speed does not depend on them). ``real``: DeiT-Tiny with its real
weights as a backbone (pre-logits feature, no head), a bank from one set of real
ImageNet images, evaluated on another: k-NN vote accuracy against chance, and the DAAM
maps' mass inside the ground-truth boxes against a uniform map. Splits: ``select`` 2-fold
(bank on its even positions, evaluation on its odd ones; where settings are chosen) and
``report`` (bank on all of "select", evaluation on "report"; what the tests check).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_time(fn, device: str, repeats: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_build(args) -> None:
    import timm

    from captum_daam import MemoryBank

    torch.manual_seed(0)
    print(f"## bank build ({args.device}, {torch.get_num_threads()} threads)\n")
    print("| model | batch | images | images/s | CPU s/image |\n| --- | --- | --- | --- | --- |")
    for name in args.models:
        model = timm.create_model(name, pretrained=False, num_classes=0).eval().to(args.device)
        images = torch.randn(args.build_images, 3, 224, 224)
        labels = torch.randint(0, 1000, (args.build_images,))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, labels), batch_size=args.build_batch
        )
        MemoryBank.build(
            model, images[: args.build_batch], labels=labels[: args.build_batch], progress=False
        )  # warm-up
        _sync(args.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        bank = MemoryBank.build(model, loader, progress=False)
        _sync(args.device)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        assert len(bank) == args.build_images
        print(
            f"| {name} | {args.build_batch} | {args.build_images} | "
            f"{args.build_images / elapsed:.1f} | {cpu / args.build_images:.3f} |",
            flush=True,
        )
    print()


def bench_attribute(args) -> None:
    import timm

    from captum_daam import DAAM, MemoryBank, SelfSupervisedDAAM

    print(
        f"## attribute ({args.device}, bank {args.bank_size} entries, k=20, median of "
        f"{args.repeats})\n"
    )
    print(
        "| model | batch | DAAM s | SelfSupervisedDAAM s | ratio | DAAM CPU s | "
        "SSL CPU s | CPU ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval().to(args.device)
        g = torch.Generator().manual_seed(0)
        bank = MemoryBank(
            torch.randn(args.bank_size, model.num_features, generator=g),
            torch.randint(0, 1000, (args.bank_size,), generator=g),
        ).to(args.device)
        daam, ssl = DAAM(model), SelfSupervisedDAAM(model, bank)
        for batch in args.batches:
            images = torch.randn(batch, 3, 224, 224, device=args.device)
            runs = {
                "daam": lambda: daam.attribute(images, return_flow=True),
                "ssl": lambda: ssl.attribute(images, return_flow=True),
            }
            times = {key: [] for key in runs}
            cpu = {key: [] for key in runs}
            for run in runs.values():  # warm-up
                run()
            for _ in range(args.repeats):  # interleaved, so load drifts hit both alike
                for key, run in runs.items():
                    _sync(args.device)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run()
                    _sync(args.device)
                    times[key].append(time.perf_counter() - start)
                    cpu[key].append(time.process_time() - start_cpu)
            t_daam, t_ssl = (statistics.median(times[key]) for key in runs)
            c_daam, c_ssl = (statistics.median(cpu[key]) for key in runs)
            print(
                f"| {name} | {batch} | {t_daam:.3f} | {t_ssl:.3f} | "
                f"{t_ssl / t_daam:.2f} | {c_daam:.3f} | {c_ssl:.3f} | "
                f"{c_ssl / c_daam:.2f} |",
                flush=True,
            )
    print()


def bench_search(args) -> None:
    from captum_daam import MemoryBank

    size, dim = 1_281_167, 384
    print(
        f"## top-k search, {size} x {dim} float32 bank "
        f"({size * dim * 4 / 2**30:.2f} GiB), k=20, {args.device}\n"
    )
    g = torch.Generator().manual_seed(0)
    features = torch.empty(size, dim)
    for start in range(0, size, 100_000):  # fill in slabs: no second copy in memory
        features[start : start + 100_000] = torch.randn(
            min(100_000, size - start), dim, generator=g
        )
    features = torch.nn.functional.normalize(features, dim=1, out=features)
    bank = MemoryBank(features, torch.randint(0, 1000, (size,), generator=g), normalize=False).to(
        args.device
    )
    print("| queries | chunk rows | seconds | ms/query |\n| --- | --- | --- | --- |")
    for queries in (1, 8, 64):
        q = torch.randn(queries, dim, generator=g).to(args.device)
        for chunk in (65536, 262144):
            seconds = _median_time(
                lambda: bank.search(q, 20, chunk_size=chunk), args.device, args.repeats
            )
            print(
                f"| {queries} | {chunk} | {seconds:.3f} | {1000 * seconds / queries:.1f} |",
                flush=True,
            )
    q = torch.randn(1, dim, generator=g).to(args.device)
    sims, idx = bank.search(q, 20)
    brute = (torch.nn.functional.normalize(q, dim=1) @ bank.features.T).topk(20, dim=1)
    print(
        f"\nbrute-force check (1 query): indices equal {torch.equal(idx, brute.indices)}, "
        f"max |sim diff| {float((sims - brute.values).abs().max()):.2e}\n"
    )


def _knn_and_boxes(model, bank_set, eval_set, k: int, temperature: float):
    from captum_daam import MemoryBank, SelfSupervisedDAAM, upsample
    from captum_daam.evaluation import energy_in_boxes

    start = time.perf_counter()
    bank = MemoryBank.build(
        model, torch.utils.data.DataLoader(bank_set, batch_size=50), progress=False
    )
    built = time.perf_counter() - start
    explainer = SelfSupervisedDAAM(model, bank, k=k, temperature=temperature)
    hits, energies, areas, top_sims, reachable = [], [], [], [], []
    start = time.perf_counter()
    for images, labels, masks in torch.utils.data.DataLoader(eval_set, batch_size=50):
        flow = explainer.attribute(images, return_flow=True)
        hits.append(flow.voted_class == labels)
        reachable.append(torch.isin(labels, bank.classes))
        top_sims.append(flow.neighbour_similarities[:, 0])
        energies.append(energy_in_boxes(upsample(flow.final, masks.shape[-2:]), masks))
        areas.append(masks.double().mean(dim=(-2, -1)))
    explained = time.perf_counter() - start
    hits, reachable = torch.cat(hits).double(), torch.cat(reachable)
    energy, area, top_sims = torch.cat(energies), torch.cat(areas), torch.cat(top_sims)
    ratio = energy / area  # NaN where the box falls outside the crop: counts as not > 1
    return (
        f"bank={len(bank)} classes={len(bank.classes)} chance={1 / len(bank.classes):.4f} | "
        f"n={len(hits)} knn_acc={hits.mean():.3f} reachable={reachable.double().mean():.3f} "
        f"acc_on_reachable={hits[reachable].mean():.3f} | top1_sim class in bank "
        f"{top_sims[reachable].mean():.3f}, not in bank {top_sims[~reachable].mean():.3f} | "
        f"energy={energy.mean():.3f} uniform={area.mean():.3f} "
        f"ratio_median={ratio[area > 0].median():.3f} "
        f"share(ratio>1)={(ratio > 1).double().mean():.3f} | "
        f"build {len(bank) / built:.1f} img/s, attribute {explained / len(hits):.3f} s/img"
    )


def bench_real(args) -> None:
    import sys

    from timm.data import create_transform, resolve_data_config

    from captum_daam.evaluation import ImageNetSubset

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from localization_deit_tiny import load_deit_tiny, split_files

    data = Path(args.data)
    model = load_deit_tiny(data)
    transform = create_transform(**resolve_data_config({}, model=model))
    root = data / "imagenet_val_subset"
    select = split_files(data, "select")
    report = split_files(data, "report")
    print(f"## real weights: DeiT-Tiny backbone, k={args.k}, T={args.temperature}\n")
    if "select" in args.splits:
        line = _knn_and_boxes(
            model,
            ImageNetSubset(root, transform, select[0::2]),
            ImageNetSubset(root, transform, select[1::2]),
            args.k,
            args.temperature,
        )
        print(f"select 2-fold: {line}", flush=True)
    if "report" in args.splits:
        line = _knn_and_boxes(
            model,
            ImageNetSubset(root, transform, select),
            ImageNetSubset(root, transform, report),
            args.k,
            args.temperature,
        )
        print(f"report:        {line}", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["build", "attribute", "search", "real", "all"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bank-size", type=int, default=100_000)
    parser.add_argument("--build-images", type=int, default=256)
    parser.add_argument("--build-batch", type=int, default=32)
    parser.add_argument("--data", default=os.environ.get("CAPTUM_DAAM_DATA", "../shared/data"))
    parser.add_argument("--splits", nargs="+", default=["select", "report"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.07)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = {
        "build": bench_build,
        "attribute": bench_attribute,
        "search": bench_search,
        "real": bench_real,
    }
    for name, step in steps.items():
        if args.what in (name, "all"):
            step(args)


if __name__ == "__main__":
    main()
