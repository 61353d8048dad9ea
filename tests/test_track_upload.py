"""``POST /v1/tracks``: a streamed upload becomes an artist, a track, its files and one ingest job, or a clear 4xx."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_PROGRAM_ID
from sqlalchemy import func, select

from models.music import Track, TrackFile, User, UserWallet, Wallet
from models.platform import Job
from roadie import blobs
from roadie.db import transaction
from tests.fixtures.media import MAX_DURATION_S, MAX_UPLOAD_BYTES, AudioFiles, new_wallet, post_track

#: A program-derived address: a valid address off the ed25519 curve, which no one holds the key of.
PROGRAM_DERIVED_ADDRESS = str(Pubkey.find_program_address([b"roadie"], TOKEN_PROGRAM_ID)[0])


@pytest.fixture
def uploader(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client("tracks:write", "jobs:read")


def _count(model: type) -> int:
    with transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _stored_files(blob_dir: Path) -> list[Path]:
    return [path for path in blob_dir.rglob("*") if path.is_file()]


def test_an_upload_creates_the_artist_track_files_and_ingest_job(
    uploader: httpx.Client, audio: AudioFiles, blob_dir: Path
) -> None:
    song, cover, wallet = audio.song("upload.flac"), audio.png(), new_wallet()

    response = post_track(
        uploader,
        song,
        cover=cover,
        artist_wallet=wallet,
        title="First Light",
        genre="Ambient",
        description="Dawn.",
        isrc="us-rc1-76-07839",
        preview_start_s=2.5,
    )

    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == job["url"]
    assert job["type"] == "track.ingest"
    assert job["payload"] == {"track_id": job["track_id"], "mint": False}
    assert uploader.get(job["url"]).status_code == 200
    with transaction() as session:
        track = session.get(Track, job["track_id"])
        assert track is not None
        assert (track.title, track.genre, track.description, track.isrc) == (
            "First Light",
            "Ambient",
            "Dawn.",
            "USRC17607839",
        )
        assert track.status in ("ingesting", "ready")
        assert track.preview_start_ms == 2500
        assert track.source_sha256 == hashlib.sha256(song.read_bytes()).hexdigest()
        artist = session.get(User, track.artist_id)
        assert artist is not None
        assert (artist.wallet_address, artist.is_artist) == (wallet, True)
        wallet_row = session.scalar(select(Wallet).where(Wallet.address == wallet))
        assert wallet_row is not None
        assert wallet_row.chain == "solana"
        assert session.scalar(
            select(UserWallet).where(UserWallet.wallet_id == wallet_row.id, UserWallet.user_id == artist.id)
        )
        files = {f.kind: f for f in session.scalars(select(TrackFile).where(TrackFile.track_id == track.id))}
    source, image = files["source"], files["cover"]
    assert (source.mime_type, source.file_name, source.size_bytes) == ("audio/flac", "upload.flac", song.stat().st_size)
    assert source.pin_state == "unpinned"  # the master stays in the blob store
    assert blobs.blob_path(str(source.storage_key)).read_bytes() == song.read_bytes()
    assert (image.mime_type, image.pin_state, image.sha256) == (
        "image/png",
        "unpinned",  # as uploaded, with its EXIF: kept, not published (its square stills are)
        hashlib.sha256(cover.read_bytes()).hexdigest(),
    )
    assert blobs.blob_path(str(image.storage_key)).read_bytes() == cover.read_bytes()


def test_the_same_upload_with_the_same_idempotency_key_is_one_track(
    uploader: httpx.Client, audio: AudioFiles, blob_dir: Path
) -> None:
    song, wallet = audio.song("upload.flac"), new_wallet()
    key = {"Idempotency-Key": "upload-1"}

    first = post_track(uploader, song, artist_wallet=wallet, headers=key)
    again = post_track(uploader, song, artist_wallet=wallet, headers=key)
    other = post_track(uploader, audio.song("upload.wav"), artist_wallet=wallet, headers=key)

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["track_id"] == first.json()["track_id"]
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    with transaction() as session:  # a worker may already run the pipeline's stages: count the uploads' jobs
        ingests = session.scalar(select(func.count()).select_from(Job).where(Job.type == "track.ingest"))
    assert (_count(Track), ingests, _count(User)) == (1, 1, 1)
    assert len([p for p in _stored_files(blob_dir) if p.name == "source"]) == 1


def test_uploads_of_one_wallet_share_one_artist(uploader: httpx.Client, audio: AudioFiles) -> None:
    wallet = new_wallet()

    for name in ("upload.flac", "upload.wav"):
        assert post_track(uploader, audio.song(name), artist_wallet=wallet).status_code == 202

    assert (_count(Track), _count(User), _count(Wallet), _count(UserWallet)) == (2, 1, 1, 1)


def test_an_isrc_already_used_is_a_conflict(uploader: httpx.Client, audio: AudioFiles) -> None:
    assert post_track(uploader, audio.song("upload.flac"), isrc="USRC17607839").status_code == 202

    response = post_track(uploader, audio.song("upload.wav"), isrc="USRC17607839")

    assert response.status_code == 409
    assert response.json()["error"]["fields"] == [{"field": "metadata.isrc", "reason": "already used"}]


@pytest.mark.parametrize(
    ("make", "status", "code", "field"),
    [
        (lambda a: {"audio": a.png(), "audio_name": "song.mp3"}, 415, "unsupported_media_type", "audio"),
        (
            lambda a: {"audio": a.song("upload.wav"), "cover": a.song("upload.flac")},
            415,
            "unsupported_media_type",
            "cover",
        ),
        (lambda a: {"audio": a.song("upload.wav"), "cover": a.bomb_png()}, 422, "cover_too_large", "cover"),
        (
            lambda a: {"audio": a.song("upload.wav"), "cover": a.broken_exif_jpeg()},
            422,
            "cover_exif_invalid",
            "cover",
        ),
        (lambda a: {"audio": b""}, 422, "empty_file", "audio"),
        (lambda a: {"audio": b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(2000)}, 422, "undecodable_audio", "audio"),
        (lambda a: {"audio": a.song("long.wav", MAX_DURATION_S + 5, channels=1)}, 422, "audio_too_long", "audio"),
        (lambda a: {"audio": a.song("big.wav", 80, rate=48000)}, 413, "file_too_large", "audio"),
        (lambda a: {"audio": None}, 422, "validation_error", "audio"),
        (
            lambda a: {"audio": a.song("upload.wav"), "artist_wallet": "not-a-wallet"},
            422,
            "validation_error",
            "metadata.artist_wallet",
        ),
        (
            lambda a: {"audio": a.song("upload.wav"), "artist_wallet": PROGRAM_DERIVED_ADDRESS},
            422,
            "validation_error",
            "metadata.artist_wallet",
        ),
        (
            lambda a: {"audio": a.song("upload.wav"), "artist_wallet": "11111111111111111111111111111111"},
            422,
            "validation_error",
            "metadata.artist_wallet",
        ),
        (lambda a: {"audio": a.song("upload.wav"), "isrc": "123"}, 422, "validation_error", "metadata.isrc"),
        (lambda a: {"audio": a.song("upload.wav"), "isrc": "ÉÉRC17607839"}, 422, "validation_error", "metadata.isrc"),
        (
            lambda a: {"audio": a.song("upload.wav"), "preview_start_s": 1e300},
            422,
            "validation_error",
            "metadata.preview_start_s",
        ),
        (lambda a: {"audio": a.song("upload.wav"), "title": ""}, 422, "validation_error", "metadata.title"),
        (lambda a: {"audio": a.song("upload.wav"), "title": "a\u0000b"}, 422, "validation_error", "metadata.title"),
        (
            lambda a: {"audio": a.song("upload.wav"), "preview_start_s": 12.5},
            422,
            "validation_error",
            "metadata.preview_start_s",
        ),
        (lambda a: {"audio": a.song("upload.wav"), "tempo": 120}, 422, "validation_error", "metadata.tempo"),
    ],
    ids=[
        "png-renamed-mp3",
        "cover-not-an-image",
        "cover-decompression-bomb",
        "cover-broken-exif",
        "empty-file",
        "not-decodable",
        "too-long",
        "too-large",
        "no-audio",
        "bad-wallet",
        "off-curve-wallet",
        "system-program-wallet",
        "bad-isrc",
        "non-ascii-isrc",
        "absurd-preview-start",
        "empty-title",
        "nul-in-title",
        "preview-after-the-end",
        "unknown-field",
    ],
)
def test_a_bad_upload_is_refused_and_leaves_nothing_behind(
    uploader: httpx.Client,
    audio: AudioFiles,
    blob_dir: Path,
    make: Callable[[AudioFiles], dict[str, object]],
    status: int,
    code: str,
    field: str,
) -> None:
    arguments = make(audio)

    response = post_track(uploader, **arguments)  # type: ignore[arg-type]

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert field in [f["field"] for f in error["fields"]]
    assert (_count(Track), _count(TrackFile), _count(Job), _count(User)) == (0, 0, 0, 0)
    assert _stored_files(blob_dir) == []


def test_a_body_that_is_not_multipart_or_is_cut_short_is_refused(uploader: httpx.Client, blob_dir: Path) -> None:
    not_multipart = uploader.post("/v1/tracks", json={"title": "x"})
    boundary = "b0undary"
    cut = f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\nRIFF'
    cut_short = uploader.post(
        "/v1/tracks", content=cut.encode(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )

    assert (not_multipart.status_code, not_multipart.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert cut_short.status_code in (400, 422)
    assert _stored_files(blob_dir) == []


def test_the_key_and_its_scope_are_checked_before_the_body_is_read(
    make_client: Callable[..., httpx.Client], api_url: str, audio: AudioFiles
) -> None:
    anonymous = post_track(httpx.Client(base_url=api_url), audio.song("upload.wav"))
    reader = post_track(make_client("jobs:read"), audio.song("upload.wav"))

    assert anonymous.status_code == 401
    assert reader.status_code == 403
    assert _count(Track) == 0


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    make_client: Callable[..., httpx.Client], api_url: str
) -> None:
    key = make_client("tracks:write").headers["Authorization"]
    host, port = api_url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/tracks HTTP/1.1\r\nHost: {host}\r\nAuthorization: {key}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {MAX_UPLOAD_BYTES * 3}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode())  # and not one byte of the body
        received = b""
        while not received.endswith(b"}") and (chunk := connection.recv(65536)):
            received += chunk
    answer = received.decode()

    status_line, _, rest = answer.partition("\r\n")
    assert status_line.split()[1] == "413"
    assert json.loads(rest.partition("\r\n\r\n")[2])["error"]["code"] == "body_too_large"
