"""Reading back what a viewer page embeds: its JSON data and its image data URLs."""

import base64
import io
import json
import re

import numpy as np
from PIL import Image


def page_data(page: str) -> dict:
    """The JSON the page embeds for its script."""
    match = re.search(r'<script type="application/json" id="daam-data">(.*?)</script>', page, re.S)
    assert match, "the page embeds its data"
    return json.loads(match.group(1))


def decode(url: str) -> np.ndarray:
    """A PNG or JPEG data URL as an RGB uint8 array."""
    header, payload = url.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        return np.asarray(image.convert("RGB"))
