"""Names of classes: ImageNet's from timm, and the label shown for a class index."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple


def class_label(target: int, class_names: Optional[Sequence[str]] = None) -> str:
    """The name of class ``target``, or ``"class <target>"`` where no name is known."""
    if class_names is not None and 0 <= target < len(class_names):
        return str(class_names[target])
    return f"class {target}"


def imagenet_class_names() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions from timm (offline)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def class_names_for(num_classes: int) -> Optional[Tuple[str, ...]]:
    """ImageNet names for a 1000-class model, else ``None``."""
    return imagenet_class_names() if num_classes == 1000 else None
