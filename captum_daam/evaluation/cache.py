"""The evaluation's resumable cache: one JSON record per method and image.

The layout is ``<root>/settings.json`` (the settings the records were made with) and
``<root>/<method>/<image>.json``. Records are written atomically (a temporary file
renamed), so an interrupted run never leaves half a record, and a run resumes by
reading back what is there. A cache made with other settings is refused rather than
mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from ..errors import InvalidInputError

#: One image's measurements by one method (see :func:`~.loop.evaluate`).
Record = Dict[str, Any]


def cache_name(image_id: str) -> str:
    """A file name for ``image_id`` (ids may hold path separators): its safe characters
    (the last 80) and a short hash of the whole id.

    Example::

        >>> cache_name("val/ILSVRC2012_val_00000001.JPEG")
        'val_ILSVRC2012_val_00000001.JPEG-....json'
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)
    digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
    return f"{safe[-80:]}-{digest}.json"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: an interrupted run never leaves half a file


class RecordCache:
    """The per-image records of one evaluation run, in a folder.

    Args:
        root: The cache folder (made when missing).

    Example::

        >>> cache = RecordCache("cache/")
        >>> cache.check_settings({"target": "label"})
        >>> cache.write({"method": "daam", "id": "a.JPEG", "ious": [0.5]})
        >>> cache.read("daam", "a.JPEG")["ious"]
        [0.5]
    """

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)

    def path(self, method: str, image_id: str) -> Path:
        """Where the record of ``method`` on ``image_id`` lives."""
        return self.root / method / cache_name(image_id)

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Store ``settings`` in a new cache; refuse an existing cache made with others.

        Raises:
            ValueError: The cache holds other settings; it names the ones that differ.
        """
        path = self.root / "settings.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != settings:
                changed = sorted(
                    k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k)
                )
                raise InvalidInputError(
                    f"the cache {self.root} was made with other settings ({', '.join(changed)} "
                    "differ); use another cache folder or delete this one"
                )
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, json.dumps(settings, indent=1, sort_keys=True))

    def prepare(self, methods: Iterable[str]) -> None:
        """Make the folder of every method."""
        for name in methods:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def read(
        self, method: str, image_id: str, needs_curves: bool = False, needs_metrics: bool = False
    ) -> Optional[Record]:
        """The cached record if it exists with everything asked for: the deletion and
        insertion curves with ``needs_curves``, Captum's metrics with ``needs_metrics``;
        ``None`` otherwise (to be measured)."""
        path = self.path(method, image_id)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if (needs_curves and "deletion" not in record) or (
            needs_metrics and "infidelity" not in record
        ):
            return None
        return record

    def write(self, record: Record) -> None:
        """Store ``record`` (its ``"method"`` and ``"id"`` say where), atomically."""
        _write_atomically(self.path(record["method"], record["id"]), json.dumps(record))


__all__ = ["Record", "RecordCache", "cache_name"]
