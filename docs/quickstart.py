"""Quick start: explain a batch with DAAM and print how the map builds up block by block.

    python docs/quickstart.py

Uses DeiT-Tiny with real ImageNet weights when ``CAPTUM_DAAM_DATA`` points at the shared
data folder, and otherwise a randomly initialised DeiT-Tiny (the maps are then only a
smoke test of the machinery, not an explanation).
"""

import os
from pathlib import Path

import timm
import torch

from captum_daam import DAAM, sigmoid_mapping

weights = Path(os.environ.get("CAPTUM_DAAM_DATA", "")) / "deit_tiny_patch16_224/model.safetensors"
if weights.is_file():
    model = timm.create_model("deit_tiny_patch16_224", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(weights)))
    print(f"DeiT-Tiny, ImageNet weights from {weights}")
else:
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    print("DeiT-Tiny with random weights (set CAPTUM_DAAM_DATA for real ones)")
model.eval()

torch.manual_seed(0)
images = torch.randn(2, 3, 224, 224)
flow = DAAM(model).attribute(images, return_flow=True)   # one forward + one backward

print(f"explained classes {flow.targets.tolist()}, logits {flow.scores.tolist()}")
print(f"block maps {tuple(flow.block_maps.shape)}, final map {tuple(flow.final.shape)}")
print("share of the final map contributed by each block:")
for b, share in enumerate(flow.contributions()[0].tolist()):
    print(f"  block {b + 1:2d} {'#' * round(share * 60)} {share:.3f}")
frames = sigmoid_mapping(flow.accumulated)               # the paper's display mapping
print(f"display frames in [0, 1]: {tuple(frames.shape)}")
