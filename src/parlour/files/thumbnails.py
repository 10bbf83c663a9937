"""Image thumbnails with Pillow, bounded (docs/design/files.md).

At most `MAX_SIDE` x `MAX_SIDE`, PNG. Decoding is bounded: Pillow's `MAX_IMAGE_PIXELS` is set
to `MAX_PIXELS`, and a `DecompressionBombWarning` (over it) or `DecompressionBombError` (over
twice it) means no thumbnail; the image's declared size is checked before any pixel is
decoded, and `draft` lets JPEG decode at a reduced scale. Any decoder error means no thumbnail
(the file is still served as a download).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from PIL import Image

__all__ = ["MAX_PIXELS", "MAX_SIDE", "make_thumbnail"]

log = logging.getLogger("parlour.files.thumbnails")

MAX_SIDE = 320
#: the largest image (in pixels) a thumbnail is made of: 40 megapixels
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def make_thumbnail(source: Path, target: Path) -> bool:
    """Write a thumbnail of image `source` to `target` (temporary file + rename); False when
    none can be made (not an image Pillow reads, too large, a bomb, broken)."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
                    return False
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))
                img.seek(0)
                frame = img.convert("RGBA") if img.mode not in ("RGB", "RGBA") else img.copy()
            frame.thumbnail((MAX_SIDE, MAX_SIDE))
            frame.save(tmp, format="PNG", optimize=False)
        os.replace(tmp, target)
        return True
    except (
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,  # some of Pillow's decoders raise it for broken files
        MemoryError,
        EOFError,
    ) as exc:
        log.info("no thumbnail", extra={"fields": {"file": source.name, "why": str(exc)}})
        tmp.unlink(missing_ok=True)
        return False
