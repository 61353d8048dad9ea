"""Cover art: checked at intake, then normalised to square JPEGs of 3000, 1000 and 300 px, metadata stripped.

The check reads only the header and the EXIF block, so it is cheap enough for the API: a decompression
bomb (a huge pixel count in a small file) is refused by its declared size before a pixel is decoded, and
EXIF that does not parse is refused rather than silently dropped (its orientation could not be trusted).
The stills are the first frame (an animated GIF's too), turned upright by the EXIF orientation, flattened
onto white, cropped to the centred square and resized with Lanczos. They are saved with no EXIF, ICC
profile or comment, and the same input always gives the same bytes (so the same CIDs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from roadie.jobs.errors import PermanentError

#: Edge lengths of the stills, largest first; the kinds of ``track_files`` they are kept as.
SIZES = (3000, 1000, 300)
MIME_TYPE, EXTENSION, JPEG_QUALITY = "image/jpeg", "jpg", 90


def kind(size: int) -> str:
    return f"cover_{size}"


class CoverError(PermanentError):
    """A cover that cannot be published; ``code`` says why."""

    code = "cover_invalid"


@dataclass(frozen=True)
class Still:
    kind: str
    path: Path


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse what is too large or not an image."""
    try:
        with warnings.catch_warnings():  # our own pixel limit and EXIF check below say what is wrong, once
            warnings.simplefilter("ignore")
            image = Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, far above ours
        raise CoverError(f"the cover declares too many pixels: {exc}", code="cover_too_large") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CoverError(f"the cover is not a readable image: {exc}", code="cover_undecodable") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise CoverError(
            f"the cover is {width}x{height} px ({width * height:,} pixels); the limit is {max_pixels:,} pixels",
            code="cover_too_large",
        )
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 when there is no EXIF); CoverError when the EXIF block does not parse."""
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow only warns about a corrupt IFD and then drops it
        try:
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        except (SyntaxError, ValueError, TypeError, OSError, UserWarning) as exc:
            raise CoverError(f"the cover's EXIF block is broken: {exc}", code="cover_exif_invalid") from exc


def check(path: Path, max_pixels: int) -> tuple[int, int]:
    """What intake checks before accepting a cover; returns its width and height."""
    with _open(path, max_pixels) as image:
        _orientation(image)
        return image.size


def _square(image: Image.Image) -> Image.Image:
    """The first frame, upright, opaque RGB, cropped to the centred square."""
    image.seek(0)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise CoverError(f"the cover does not decode: {exc}", code="cover_undecodable") from exc
    upright = ImageOps.exif_transpose(image) if _orientation(image) != 1 else image.copy()
    rgba = upright.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    edge = min(flat.size)
    left, top = (flat.width - edge) // 2, (flat.height - edge) // 2
    return flat.crop((left, top, left + edge, top + edge))


def normalise(path: Path, work: Path, max_pixels: int) -> list[Still]:
    """Write the square stills of the cover at ``path`` into ``work``, largest first."""
    with _open(path, max_pixels) as image:
        square = _square(image)
    stills = []
    for size in SIZES:
        out = work / f"{kind(size)}.{EXTENSION}"
        # Each from the square itself: Lanczos from the source, whether it is scaled up or down.
        square.resize((size, size), Image.Resampling.LANCZOS).save(out, "JPEG", quality=JPEG_QUALITY)
        stills.append(Still(kind(size), out))
    return stills
