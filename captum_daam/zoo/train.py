"""Train the embedded default ViT on :class:`~.synthetic.SyntheticShapes`.

Usage::

    python -m captum_daam.zoo.train --out captum_daam/zoo/weights/daam_shapes_vit.safetensors

Recipe (all defaults of this script):

* data: a fixed training set rendered from ``--train-seed`` (disjoint from the
  test seed), random horizontal flips;
* initialisation: 2-D sin-cos patch position embeddings and "mimetic" attention
  weights (:func:`mimetic_init`), a locality prior that speeds up training a ViT
  from scratch on little data;
* losses: label-smoothed cross-entropy on the class token, plus two dense
  auxiliary losses on the final patch tokens through training-only linear heads:
  *token labelling* (each 8x8 patch predicts "background" or the class of the
  object covering it) and *patch masks* (each patch predicts its 64 object-mask
  pixels).  They tie the class evidence to the patch tokens that cover the object,
  which the class token then reads out.  The heads are discarded: the checkpoint
  is a plain timm ViT;
* optimiser: AdamW (no decay on biases, norms, tokens and position embeddings),
  linear warm-up then per-step cosine decay, gradient clipping at 1.

After training, the script reports accuracy on a freshly rendered test split of
``--test-seed`` and on the same test scenes with the object deleted (near chance
level means the model relies on the object, not on the background), then saves
float16 weights with the metadata of :class:`~.model.ModelInfo` in the
safetensors header.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.layers import Attention, build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .model import DEFAULT_MODEL_INFO, DEFAULT_WEIGHTS_PATH, ModelInfo, create_default_model
from .synthetic import SyntheticShapes

__all__ = [
    "AuxiliaryHeads",
    "evaluate",
    "hflip_augment",
    "main",
    "mimetic_init",
    "parse_args",
    "patch_pixels",
    "token_labels",
    "train",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_WEIGHTS_PATH, help="checkpoint path (.safetensors)"
    )
    p.add_argument("--train-images", type=int, default=16000)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--test-images", type=int, default=DEFAULT_MODEL_INFO.test_images)
    p.add_argument("--test-seed", type=int, default=DEFAULT_MODEL_INFO.test_seed)
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=150)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument(
        "--token-loss", type=float, default=1.0, help="weight of the token-labelling loss (0: off)"
    )
    p.add_argument(
        "--mask-loss", type=float, default=4.0, help="weight of the per-patch mask loss (0: off)"
    )
    p.add_argument(
        "--token-cover",
        type=float,
        default=0.25,
        help="object fraction of a patch to label it with the class",
    )
    p.add_argument(
        "--no-mimetic-init", dest="mimetic_init", action="store_false", help="plain timm init"
    )
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, augmentation)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--eval-every", type=int, default=1, help="evaluate every N epochs (0: only at the end)"
    )
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def hflip_augment(generator: torch.Generator, *grids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mirror a random half of the items left-right.

    Every tensor in ``grids`` is ``(N, ..., W)``; item ``n`` is flipped in all of
    them or in none, so images and their masks stay aligned.  The dataset's
    distribution is mirror-symmetric (upright shapes with symmetric tilt), so this
    augmentation does not shift it.
    """
    n = grids[0].shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    out = []
    for g in grids:
        f = flip.to(g.device).view((n,) + (1,) * (g.dim() - 1))
        out.append(torch.where(f, g.flip(-1), g))
    return tuple(out)


@torch.no_grad()
def mimetic_init(model: VisionTransformer, generator: torch.Generator) -> None:
    """Locality-biased initialisation for training a small ViT from scratch.

    Patch position embeddings start as 2-D sin-cos features (neighbouring patches
    have similar embeddings), and every attention layer starts "mimetic" (Trockman
    & Kolter, 2023): per head ``W_q W_k^T ~ 0.7 Z + 0.7 I`` and over the layer
    ``W_v W_o ~ 0.4 Z - 0.4 I`` with ``Z ~ N(0, 1/d)``, so attention initially
    prefers tokens similar to the query, i.e. spatial neighbours.  Only the
    initial values change; the architecture is the plain timm ViT.
    """
    d = model.embed_dim
    grid = model.patch_embed.grid_size
    sincos = build_sincos2d_pos_embed(list(grid), dim=d)
    pos_embed = model.pos_embed
    assert pos_embed is not None  # create_default_model builds learned position embeddings
    pos_embed[0, model.num_prefix_tokens :] = sincos.to(pos_embed)

    def factor(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        u, sv, vh = torch.linalg.svd(m)
        root = sv[:rank].sqrt()
        return u[:, :rank] * root, vh[:rank].T * root  # m ~= a @ b.T

    eye = torch.eye(d)
    for block in model.blocks:
        attn = cast(Attention, block.attn)  # the plain timm ViT's blocks
        heads, head_dim = attn.num_heads, attn.head_dim
        w = attn.qkv.weight  # (3d, d); q = x @ w[:d].T
        for h in range(heads):
            z = torch.randn(d, d, generator=generator) / math.sqrt(d)
            wq, wk = factor(0.7 * z + 0.7 * eye, head_dim)
            rows = slice(h * head_dim, (h + 1) * head_dim)
            w[rows] = wq.T.to(w)
            w[d:][rows] = wk.T.to(w)
        z = torch.randn(d, d, generator=generator) / math.sqrt(d)
        wv, wo = factor(0.4 * z - 0.4 * eye, d)
        w[2 * d :] = wv.T.to(w)
        attn.proj.weight.copy_(wo.to(attn.proj.weight))


def patch_pixels(masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Split ``(N, H, W)`` masks into per-patch pixel targets ``(N, G*G, P*P)`` (float),
    patches in the row-major order of the ViT's patch tokens."""
    n, h, w = masks.shape
    p = patch_size
    grid = masks.float().view(n, h // p, p, w // p, p).permute(0, 1, 3, 2, 4)
    return grid.reshape(n, (h // p) * (w // p), p * p)


def token_labels(
    masks: torch.Tensor, labels: torch.Tensor, patch_size: int, cover: float
) -> torch.Tensor:
    """Per-patch targets ``(N, 1, G, G)``: 0 background, ``label + 1`` where the object
    covers at least ``cover`` of the patch, ``-100`` (ignored) for slight overlaps."""
    frac = F.avg_pool2d(masks[:, None].float(), patch_size)
    target = torch.where(
        frac >= cover, labels.view(-1, 1, 1, 1) + 1, torch.full_like(frac, -100, dtype=torch.long)
    )
    return torch.where(frac == 0, torch.zeros_like(target), target)


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``images``."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size].to(device))
        correct += int((logits.argmax(-1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(len(images), 1)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class AuxiliaryHeads(nn.Module):
    """Training-only dense heads on the final patch tokens (see the module doc)."""

    def __init__(
        self, info: ModelInfo, token_weight: float, mask_weight: float, cover: float
    ) -> None:
        super().__init__()
        self.patch_size, self.cover = info.patch_size, cover
        self.token_weight, self.mask_weight = token_weight, mask_weight
        self.token_head = nn.Linear(info.embed_dim, info.num_classes + 1)
        self.mask_head = nn.Linear(info.embed_dim, info.patch_size**2)

    def forward(
        self, patches: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Weighted auxiliary loss for patch tokens ``(N, G*G, D)`` and masks ``(N, H, W)``."""
        loss = patches.new_zeros(())
        if self.token_weight > 0:
            target = token_labels(masks, labels, self.patch_size, self.cover)
            logits = self.token_head(patches).flatten(0, 1)
            loss = loss + self.token_weight * F.cross_entropy(logits, target.flatten())
        if self.mask_weight > 0:
            target = patch_pixels(masks, self.patch_size)
            loss = loss + self.mask_weight * F.binary_cross_entropy_with_logits(
                self.mask_head(patches), target
            )
        return loss


def _param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: decay matrices only (not biases, norms, class token, position embedding)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for name, param in module.named_parameters():
            exempt = param.ndim < 2 or name in ("cls_token", "pos_embed")
            (no_decay if exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _to_float16(model: nn.Module) -> dict[str, torch.Tensor]:
    """Round the model's weights to float16 in place (as shipped) and return them."""
    state = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()
    }
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return state


def train(args: argparse.Namespace) -> dict[str, float]:
    """Run the full recipe, save the checkpoint to ``args.out``; return the measured numbers."""
    if args.train_seed == args.test_seed:
        raise ValueError("train and test seeds must differ")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()

    info = DEFAULT_MODEL_INFO
    train_set = SyntheticShapes(args.train_images, args.train_seed, info.image_size).batch()
    test_set = SyntheticShapes(args.test_images, args.test_seed, info.image_size)
    test = test_set.batch()
    print(
        f"rendered {len(train_set)} train + {len(test)} test images in "
        f"{time.perf_counter() - t0:.1f}s",
        flush=True,
    )

    model = create_default_model(info)
    if args.mimetic_init:
        mimetic_init(model, generator)
    aux = AuxiliaryHeads(info, args.token_loss, args.mask_loss, args.token_cover)
    model, aux = model.to(args.device), aux.to(args.device)
    params = list(model.parameters()) + list(aux.parameters())
    optimizer = torch.optim.AdamW(_param_groups([model, aux], args.weight_decay), lr=args.lr)
    steps_per_epoch = len(train_set) // args.batch_size
    total = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, total, args.warmup_steps)
    )

    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        running, hits, seen = 0.0, 0, 0
        t_epoch = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            x, m = hflip_augment(generator, train_set.images[idx], train_set.masks[idx])
            x, m, y = x.to(args.device), m.to(args.device), train_set.labels[idx].to(args.device)
            tokens = model.forward_features(x)
            logits = model.forward_head(tokens)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            loss = loss + aux(tokens[:, model.num_prefix_tokens :], m, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(idx)
            hits += int((logits.argmax(-1) == y).sum())
            seen += len(idx)
        msg = f"epoch {epoch + 1}/{args.epochs} loss {running / seen:.4f}"
        msg += f" train-acc(aug) {hits / seen:.4f}"
        msg += f" ({time.perf_counter() - t_epoch:.0f}s)"
        if epoch + 1 == args.epochs or (args.eval_every and (epoch + 1) % args.eval_every == 0):
            msg += f" test-acc {evaluate(model, test.images, test.labels):.4f}"
        print(msg, flush=True)
    t_train = time.perf_counter() - t0

    # Every reported number is measured with the float16 weights that ship.
    state = _to_float16(model)
    train_acc = evaluate(model, train_set.images[:5000], train_set.labels[:5000])
    test_acc = evaluate(model, test.images, test.labels)
    deleted = test_set.batch(range(min(2000, len(test_set))), with_object=False)
    deleted_acc = evaluate(model, deleted.images, deleted.labels)
    print(f"train accuracy (first {min(5000, len(train_set))}, no aug): {train_acc:.4f}")
    print(f"test accuracy (seed {args.test_seed}, {len(test)} images): {test_acc:.4f}")
    print(
        f"test accuracy with the object deleted ({len(deleted)} images, chance 1/6): "
        f"{deleted_acc:.4f}"
    )
    print(f"time for rendering + training: {t_train:.0f}s")

    final = dataclasses.replace(
        info, test_seed=args.test_seed, test_images=len(test), test_accuracy=round(test_acc, 4)
    )
    metadata = final.to_metadata()
    recipe = {k: v for k, v in vars(args).items() if k not in ("out", "device", "eval_every")}
    metadata["train_recipe"] = json.dumps(recipe)
    metadata["train_accuracy"] = json.dumps(round(train_acc, 4))
    metadata["object_deleted_accuracy"] = json.dumps(round(deleted_acc, 4))
    metadata["train_seconds"] = json.dumps(round(t_train))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out), metadata=metadata)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "object_deleted_accuracy": deleted_acc,
    }


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
