"""Cover art: square JPEG stills of 3000, 1000 and 300 px without EXIF, and the covers that are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from models.music import TrackFile
from roadie import blobs
from roadie.db import transaction
from roadie.ingest import stages
from roadie.media import cover
from tests.fixtures.ipfs import MakeTrack
from tests.fixtures.media import ORIENTATION, AudioFiles

MAX_PIXELS = 50_000_000
RED, BLUE = (220, 20, 20), (20, 20, 220)


def _photo(path: Path) -> Path:
    """A 1200 x 800 JPEG, red left half and blue right half, with a camera's EXIF: orientation 6 and GPS."""
    image = Image.new("RGB", (1200, 800), RED)
    image.paste(BLUE, (600, 0, 1200, 800))
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored on its side: turned 90° clockwise to view, the red half is on top
    exif[0x010F] = "Camera maker"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # GPS latitude: where the photo was taken
    image.save(path, "JPEG", exif=exif.tobytes())
    return path


def _animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (300, 500), colour) for colour in (RED, BLUE, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _close(colour: tuple[int, ...], wanted: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour, wanted, strict=False))


def test_a_photo_becomes_upright_square_jpegs_of_three_sizes_without_its_exif(tmp_path: Path) -> None:
    source = _photo(tmp_path / "photo.jpg")

    stills = cover.normalise(source, tmp_path, MAX_PIXELS)

    assert [still.kind for still in stills] == ["cover_3000", "cover_1000", "cover_300"]
    for still, size in zip(stills, cover.SIZES, strict=True):
        with Image.open(still.path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (size, size))
            assert "exif" not in image.info
            assert not image.getexif()
            assert "icc_profile" not in image.info
            # Turned upright by its orientation: the red half on top, the blue half below.
            assert _close(image.getpixel((size // 2, size // 8)), RED)  # type: ignore[arg-type]
            assert _close(image.getpixel((size // 2, size * 7 // 8)), BLUE)  # type: ignore[arg-type]


def test_the_same_cover_always_gives_the_same_bytes(tmp_path: Path) -> None:
    source = _photo(tmp_path / "photo.jpg")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    first = [still.path.read_bytes() for still in cover.normalise(source, tmp_path / "a", MAX_PIXELS)]
    again = [still.path.read_bytes() for still in cover.normalise(source, tmp_path / "b", MAX_PIXELS)]

    assert first == again


def test_an_animated_gif_keeps_its_first_frame(tmp_path: Path) -> None:
    source = _animated_gif(tmp_path / "cover.gif")

    stills = cover.normalise(source, tmp_path, MAX_PIXELS)

    for still in stills:
        with Image.open(still.path) as image:
            assert image.format == "JPEG"
            assert image.size[0] == image.size[1]
            assert _close(image.getpixel((image.size[0] // 2, image.size[1] // 2)), RED)  # type: ignore[arg-type]


def test_a_decompression_bomb_is_refused_before_a_pixel_is_decoded(audio: AudioFiles, tmp_path: Path) -> None:
    bomb = audio.bomb_png()
    assert bomb.stat().st_size < 100_000

    for refuse in (cover.check, lambda path, limit: cover.normalise(path, tmp_path, limit)):
        with pytest.raises(cover.CoverError) as raised:
            refuse(bomb, MAX_PIXELS)
        assert raised.value.code == "cover_too_large"
        assert "10000x10000" in raised.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_cover_with_broken_exif_is_refused(audio: AudioFiles, tmp_path: Path) -> None:
    for refuse in (cover.check, lambda path, limit: cover.normalise(path, tmp_path, limit)):
        with pytest.raises(cover.CoverError) as raised:
            refuse(audio.broken_exif_jpeg(), MAX_PIXELS)
        assert raised.value.code == "cover_exif_invalid"
    assert list(tmp_path.iterdir()) == []


def test_the_cover_stage_records_the_stills_and_a_bad_cover_leaves_no_blob(
    make_track: MakeTrack, audio: AudioFiles, tmp_path: Path
) -> None:
    good = make_track({"cover": _photo(tmp_path / "photo.jpg").read_bytes()})
    bad = make_track({"cover": audio.bomb_png().read_bytes()})

    result = stages.cover_track(good)
    with pytest.raises(cover.CoverError) as raised:
        stages.cover_track(bad)

    assert raised.value.code == "cover_too_large"
    with transaction() as session:
        rows = {(f.track_id, f.kind): f for f in session.scalars(select(TrackFile))}
    for kind in ("cover_3000", "cover_1000", "cover_300"):
        row = rows[(good, kind)]
        data = blobs.blob_path(str(row.storage_key)).read_bytes()
        assert (row.mime_type, row.pin_state, row.sha256) == (
            "image/jpeg",
            "pending",
            hashlib.sha256(data).digest().hex(),
        )
        assert result["files"][kind]["sha256"] == row.sha256
        assert (bad, kind) not in rows
    assert sorted(p.name for p in blobs.blob_path(f"tracks/{bad}").iterdir()) == ["cover"]
