"""Explanations from several threads: each call gives the map it gives alone, one model's
explanations run one after another, different models do not wait for each other, and a
module that really runs twice is still named as shared."""

import copy
import gc
import threading
import warnings

import pytest
import torch
from torch import nn

from captum_daam import DAAM, MemoryBank, SelfSupervisedDAAM
from captum_daam._core.capture import AttentionRecorder, lock_registry_size
from captum_daam.adapters import get_adapter
from captum_daam.attr import model_lock
from families import attention_modules, build
from model_state import assert_unchanged, snapshot

THREADS = 4
CALLS = 4


def _images(batch, seed):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _target(kind, batch):
    return [None, 3, list(range(batch)), torch.tensor([5])][kind % 4]


def _run_threads(jobs):
    """Run ``jobs`` (callables) in threads started together; their results, in order.
    A job that raises re-raises here."""
    results = [None] * len(jobs)
    errors = []
    barrier = threading.Barrier(len(jobs))

    def run(i):
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except BaseException as error:  # noqa: BLE001 - reported to the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    if errors:
        raise errors[0]
    return results


def test_threads_on_one_model_give_the_maps_of_calls_alone():
    model = build("deit", torch.float32)
    before = snapshot(model)
    calls = [
        (1 + (t + c) % 4, _target(t + c, 1 + (t + c) % 4), 10 * t + c)
        for t in range(THREADS)
        for c in range(CALLS)
    ]
    alone = [
        DAAM(model).attribute(_images(b, seed), target=target, return_flow=True)
        for b, target, seed in calls
    ]

    def thread_job(t):
        daam = DAAM(model)  # one explainer per thread, and one shared below

        def job():
            out = []
            for c in range(CALLS):
                b, target, seed = calls[t * CALLS + c]
                explainer = daam if c % 2 else shared
                out.append(explainer.attribute(_images(b, seed), target=target, return_flow=True))
            return out

        return job

    shared = DAAM(model)
    results = _run_threads([thread_job(t) for t in range(THREADS)])
    flat = [flow for out in results for flow in out]
    for got, expected in zip(flat, alone):
        torch.testing.assert_close(got.accumulated, expected.accumulated)
        torch.testing.assert_close(got.targets, expected.targets)
    assert_unchanged(model, before)


def test_explainers_of_different_layers_and_methods_side_by_side():
    model = build("dino", torch.float64)
    blocks = attention_modules(model)
    features = torch.randn(
        12, model.embed_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    bank = MemoryBank(features, torch.arange(12) % 3)
    explainers = [
        DAAM(model, layer=blocks[0]),
        DAAM(model, layer=blocks[-1]),
        DAAM(model, queries="all"),
        SelfSupervisedDAAM(model, bank, k=3),
    ]
    images = [_images(2, seed).double() for seed in range(len(explainers))]
    alone = [e.attribute(x) for e, x in zip(explainers, images)]
    jobs = [
        (lambda e=e, x=x: [e.attribute(x) for _ in range(CALLS)])
        for e, x in zip(explainers, images)
    ]
    for maps, expected in zip(_run_threads(jobs), alone):
        for got in maps:
            torch.testing.assert_close(got, expected)


def test_hooks_firing_in_worker_threads_do_not_deadlock():
    """Under ``DataParallel`` the replicas' forwards (and the hooks) run in worker threads
    while the caller holds the model's lock."""

    class ThreadedDataParallel(nn.DataParallel):
        def forward(self, *inputs):
            out = {}
            worker = threading.Thread(target=lambda: out.update(y=self.module(*inputs)))
            worker.start()
            worker.join()
            return out["y"]

    model = build("deit", torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no GPU: DataParallel warns
        wrapped = ThreadedDataParallel(model)
    images = _images(3, 0).double()
    torch.testing.assert_close(DAAM(wrapped).attribute(images), DAAM(model).attribute(images))


def test_one_model_waits_and_another_does_not():
    held, other = build("deit", torch.float32), build("deit", torch.float32, seed=1)
    images = _images(2, 0)
    finished = {}

    def explain(name, model):
        finished[name] = DAAM(model).attribute(images)

    with model_lock(held):
        waiting = threading.Thread(target=explain, args=("held", held))
        free = threading.Thread(target=explain, args=("other", other))
        waiting.start()
        free.start()
        free.join(timeout=120)
        assert "other" in finished, "an explanation of another model waited"
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and "held" not in finished
    waiting.join(timeout=120)
    torch.testing.assert_close(finished["held"], DAAM(held).attribute(images))


def test_lock_registry_holds_no_model_alive():
    gc.collect()
    before = lock_registry_size()
    for seed in range(3):
        model = copy.deepcopy(build("deit", torch.float32))  # build() caches its models
        DAAM(model).attribute(_images(1, seed))
        del model
    gc.collect()
    assert lock_registry_size() <= before


def test_a_module_that_runs_twice_is_named_shared():
    model = copy.deepcopy(build("deit", torch.float32))  # not the cached model
    first = model.blocks[0]
    model.blocks = nn.Sequential(first, first, *list(model.blocks)[1:])
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r"blocks\.0\.attn ran more than once.*shared"):
        DAAM(model).attribute(_images(1, 0))
    assert_unchanged(model, before)


def test_a_forward_from_another_thread_during_an_explanation_is_named():
    """A plain forward of the model in another thread while the hooks are installed
    is reported as such, not as a shared module."""
    model = build("deit", torch.float32)
    site = get_adapter(model).sites[0]
    recorder = AttentionRecorder([site])
    sink = recorder.sink(site)
    a0, v = torch.rand(1, 3, 5), torch.rand(1, 3, 5, 4)
    sink(a0, v)
    errors = []

    def other_thread():
        try:
            sink(a0, v)
        except RuntimeError as error:
            errors.append(str(error))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert errors and "another thread ran the same model" in errors[0]
    assert "model_lock" in errors[0] and "shared" not in errors[0]
    with pytest.raises(RuntimeError, match="is the module shared"):
        sink(a0, v)


def test_baselines_beside_daam_in_threads_give_the_maps_of_calls_alone():
    """Grad-CAM's and the rollouts' hooks and forwards wait for DAAM's on one model."""
    from captum_daam import (
        ViTLayerGradCam,
        attention_rollout,
        gradient_weighted_rollout,
        raw_attention,
    )

    model = build("deit", torch.float32)
    before = snapshot(model)
    layer = get_adapter(model).gradcam_layer
    images = [_images(2, seed) for seed in range(4)]
    methods = [
        lambda x: DAAM(model).attribute(x, target=[1, 2]),
        lambda x: ViTLayerGradCam(model, layer).attribute(x, target=[1, 2]),
        lambda x: gradient_weighted_rollout(model, x, [1, 2]),
        lambda x: attention_rollout(model, x),
        lambda x: raw_attention(model, x),
    ]
    alone = [[method(x) for x in images] for method in methods]
    jobs = [
        lambda m=m: [methods[m](x) for x in images] for m in range(len(methods)) for _ in range(2)
    ]
    results = _run_threads(jobs)
    for j, result in enumerate(results):
        for got, expected in zip(result, alone[j // 2]):
            torch.testing.assert_close(got, expected)
    assert_unchanged(model, before)


def test_one_grad_cam_instance_shared_by_threads():
    """ViTLayerGradCam keeps the grid of the call in progress on the instance: threads
    sharing one instance must each get their own call's map."""
    from captum_daam import ViTLayerGradCam

    model = build("deit", torch.float32)
    gradcam = ViTLayerGradCam(model, get_adapter(model).gradcam_layer)
    images = [_images(1 + seed % 3, seed) for seed in range(8)]
    alone = [gradcam.attribute(x, target=1) for x in images]
    results = _run_threads(
        [
            lambda i=i: [gradcam.attribute(images[j], target=1) for j in range(i, 8, 4)]
            for i in range(4)
        ]
    )
    for i, result in enumerate(results):
        for got, j in zip(result, range(i, 8, 4)):
            torch.testing.assert_close(got, alone[j])


def test_reading_images_from_threads_keeps_pil_s_bomb_check(tmp_path):
    """read_image switches PIL's global limit off while it opens a file; threads reading
    at the same time must leave PIL's own limit as it was."""
    from PIL import Image

    from captum_daam.image_files import read_image

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    limit = Image.MAX_IMAGE_PIXELS
    results = _run_threads(
        [lambda: [read_image(tmp_path / "a.png").size for _ in range(50)] for _ in range(8)]
    )
    assert all(sizes == [(16, 16)] * 50 for sizes in results)
    assert Image.MAX_IMAGE_PIXELS == limit
