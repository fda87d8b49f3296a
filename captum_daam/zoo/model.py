"""The embedded default model: a tiny timm ViT trained on :mod:`.synthetic` shapes.

The weights ship inside the package (``zoo/weights/daam_shapes_vit.safetensors``,
stored as float16), so :func:`load_default_model` works offline and downloads
nothing.  See ``docs/embedded_model.md`` for the training recipe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

from .synthetic import CLASS_NAMES, MEAN, STD

__all__ = [
    "DEFAULT_MODEL_INFO",
    "DEFAULT_WEIGHTS_PATH",
    "ModelInfo",
    "create_default_model",
    "load_default_model",
    "read_checkpoint_metadata",
]

#: Location of the shipped checkpoint inside the installed package.
DEFAULT_WEIGHTS_PATH: Path = (
    Path(__file__).resolve().parent / "weights" / "daam_shapes_vit.safetensors"
)


@dataclass(frozen=True)
class ModelInfo:
    """Everything needed to use the default model, in one place.

    Attributes:
        class_names: label names, indexed by class id.
        mean, std: per-channel input normalisation (inputs are ``[0, 1]`` before it).
        image_size: input side in pixels (square inputs).
        patch_size: ViT patch side; the token grid is ``image_size // patch_size``.
        embed_dim, depth, num_heads, mlp_ratio: ViT architecture.
        test_seed, test_images: the held-out :class:`~.synthetic.SyntheticShapes`
            split on which ``test_accuracy`` was measured.
        test_accuracy: top-1 accuracy of the shipped weights on that split.
    """

    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    test_seed: int
    test_images: int
    test_accuracy: float

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def grid_size(self) -> int:
        """Side of the patch-token grid (8 for 64 px images and 8 px patches)."""
        return self.image_size // self.patch_size

    def to_metadata(self) -> dict[str, str]:
        """String-to-string form stored in the safetensors header."""
        return {key: json.dumps(value) for key, value in asdict(self).items()}


#: Metadata of the shipped checkpoint (``test_accuracy`` as measured by ``train.py``).
DEFAULT_MODEL_INFO = ModelInfo(
    class_names=CLASS_NAMES,
    mean=MEAN,
    std=STD,
    image_size=64,
    patch_size=8,
    embed_dim=96,
    depth=4,
    num_heads=3,
    mlp_ratio=2.0,
    test_seed=1_000_000,
    test_images=5000,
    test_accuracy=0.9582,
)


def create_default_model(info: ModelInfo = DEFAULT_MODEL_INFO) -> VisionTransformer:
    """Build the (randomly initialised) default architecture.

    A timm :class:`~timm.models.vision_transformer.VisionTransformer` with a class
    token, ``global_pool='token'``, ``info.image_size`` inputs and
    ``info.patch_size`` patches.
    """
    return VisionTransformer(
        img_size=info.image_size,
        patch_size=info.patch_size,
        in_chans=3,
        num_classes=info.num_classes,
        global_pool="token",
        class_token=True,
        embed_dim=info.embed_dim,
        depth=info.depth,
        num_heads=info.num_heads,
        mlp_ratio=info.mlp_ratio,
    )


def read_checkpoint_metadata(path: str | Path = DEFAULT_WEIGHTS_PATH) -> dict[str, object]:
    """The JSON-decoded metadata stored in a checkpoint's safetensors header."""
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    return {key: json.loads(value) for key, value in raw.items()}


def load_default_model(
    device: str | torch.device = "cpu", path: str | Path = DEFAULT_WEIGHTS_PATH
) -> VisionTransformer:
    """Load the shipped weights (strictly) into :func:`create_default_model`.

    Tensors are stored as float16 and cast to float32.  The model is returned in
    eval mode on ``device``.
    """
    state = {key: value.float() for key, value in load_file(str(path)).items()}
    model = create_default_model()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
