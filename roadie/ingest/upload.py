"""Accepting an upload: the track's fields, the artist, the track, its files and its ingest job, at once.

The API streams the files into uncommitted blobs first; this module checks them (ffprobe), then in
one transaction finds or creates the artist by wallet, creates the track (``ingesting``), moves the
blobs onto the track's keys, records them as track files and creates ``track.ingest`` with
``roadie.jobs.creation``, the same rules and statement as ``POST /v1/jobs``: the same upload with the
same Idempotency-Key is the same track and job. If the transaction fails, the blobs it moved are
deleted again.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.music import Track, TrackFile, User, UserWallet, Wallet
from models.platform import ApiClient
from roadie import blobs
from roadie.chain.addresses import SolanaWallet
from roadie.jobs.batches import join_batch
from roadie.jobs.creation import JobRequest, Submission, fingerprint, insert_jobs, resolve_keys
from roadie.jobs.intake import IntakeError, field_error
from roadie.jobs.options import RunOptions
from roadie.jobs.types import job_types
from roadie.media.ffmpeg import Probe
from roadie.webhooks.dispatch import check_callback_url
from roadie.webhooks.urls import CallbackUrl

ISRC = re.compile(r"[A-Z]{2}[A-Z0-9]{3}[0-9]{7}")  # the same pattern as the tracks table's check
Text = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^\x00]*$")]


class TrackFields(RunOptions):
    """The ``metadata`` part of an upload: a JSON object; ``run_at`` or ``delay_s`` delay its ingest."""

    model_config = ConfigDict(extra="forbid")

    title: Annotated[Text, StringConstraints(min_length=1, max_length=200)]
    artist_wallet: SolanaWallet = Field(
        description="The artist's Solana wallet (base58, on the ed25519 curve, not a program); the NFT is minted to it."
    )
    genre: Annotated[Text, StringConstraints(max_length=64)] | None = None
    description: Annotated[Text, StringConstraints(max_length=5000)] | None = None
    isrc: str | None = Field(default=None, description="International Standard Recording Code, e.g. USRC17607839.")
    preview_start_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="Start of the preview in seconds; default a third of the way in.",
    )
    mint: bool = Field(default=False, description="Mint the track's NFT to the artist's wallet once ingested.")
    callback_url: CallbackUrl | None = None
    batch_id: uuid.UUID | None = Field(
        default=None, description="Join this batch (made with expected_jobs for an album); 422 when it is full."
    )

    @field_validator("isrc")
    @classmethod
    def _isrc(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.replace("-", "").strip().upper()
        if not ISRC.fullmatch(code):
            raise ValueError("an ISRC is CC-XXX-YY-NNNNN: 2 letters, 3 letters or digits, 7 digits")
        return code


def check_audio(probe: Probe, fields: TrackFields, max_duration_s: float) -> None:
    """What ffprobe tells about the upload, against the limits and the chosen preview start."""
    duration = probe.duration_s
    if duration is not None and duration > max_duration_s:
        raise IntakeError(
            422,
            "audio_too_long",
            f"the track lasts {duration:.1f} s; the limit is {max_duration_s:.0f} s",
            [field_error("audio", f"longer than {max_duration_s:.0f} s")],
        )
    if duration is not None and fields.preview_start_s is not None and fields.preview_start_s >= duration:
        raise IntakeError(
            422,
            "validation_error",
            f"the preview cannot start at {fields.preview_start_s} s of a {duration:.1f} s track",
            [field_error("metadata.preview_start_s", "after the end of the track")],
        )


@dataclass(frozen=True)
class StagedFile:
    """An uploaded file in an uncommitted blob, sniffed and hashed."""

    blob: blobs.BlobWriter
    mime_type: str
    file_name: str | None


def request_fingerprint(fields: TrackFields, audio: StagedFile, cover: StagedFile | None) -> str:
    """An upload's identity for its Idempotency-Key: the fields and the bytes of each file."""
    return fingerprint(
        {
            "type": "track.upload",
            "fields": fields.model_dump(mode="json"),
            "audio": audio.blob.sha256,
            "cover": cover.blob.sha256 if cover else None,
        }
    )


async def artist_for_wallet(session: AsyncSession, address: str) -> uuid.UUID:
    """The user owning this Solana wallet, created (user, wallet, link) when new; safe under concurrency."""
    user_id = await session.scalar(
        select(UserWallet.user_id).join(Wallet, Wallet.id == UserWallet.wallet_id).where(Wallet.address == address)
    )
    user_id = user_id or await session.scalar(select(User.id).where(User.wallet_address == address))
    if user_id is None:
        await session.execute(
            insert(User)
            .values(id=uuid.uuid4(), wallet_address=address, is_artist=True)
            .on_conflict_do_nothing(index_elements=[User.wallet_address])
        )
        user_id = await session.scalar(select(User.id).where(User.wallet_address == address))
    await session.execute(
        insert(Wallet)
        .values(id=uuid.uuid4(), address=address, chain="solana", is_primary=True)
        .on_conflict_do_nothing(index_elements=[Wallet.address])
    )
    wallet_id = await session.scalar(select(Wallet.id).where(Wallet.address == address))
    await session.execute(
        insert(UserWallet)
        .values(id=uuid.uuid4(), user_id=user_id, wallet_id=wallet_id)
        .on_conflict_do_nothing(index_elements=[UserWallet.user_id, UserWallet.wallet_id])
    )
    await session.execute(update(User).where(User.id == user_id, ~User.is_artist).values(is_artist=True))
    assert user_id is not None
    return user_id


@dataclass(frozen=True)
class Accepted:
    submission: Submission
    track_id: uuid.UUID
    placed: list[str]  # blob keys to delete if the transaction does not commit


async def accept(
    session: AsyncSession,
    client: ApiClient,
    fields: TrackFields,
    audio: StagedFile,
    cover: StagedFile | None,
    *,
    idempotency_key: str | None,
) -> Accepted:
    """Create the artist (if new), the track, its source and cover files and its ``track.ingest`` job.

    Must run inside the caller's transaction; on a replay (same key, same upload) it creates nothing.
    """
    track_id, now = uuid.uuid4(), dt.datetime.now(dt.UTC)
    request = JobRequest(
        job_types()["track.ingest"],
        {"track_id": str(track_id), "mint": fields.mint},
        client,
        idempotency_key,
        request_fingerprint(fields, audio, cover),
        callback_url=fields.callback_url,
        batch_id=fields.batch_id,
        options=fields,
    )
    (settled,) = await resolve_keys(session, [request], now)
    if isinstance(settled, IntakeError):
        raise settled
    if settled is not None:
        return Accepted(settled, uuid.UUID(settled.job.payload["track_id"]), [])
    if fields.callback_url is not None:
        await check_callback_url(session, client.id, fields.callback_url, "metadata.callback_url")
    if fields.batch_id is not None:
        await join_batch(session, fields.batch_id, client, "metadata.batch_id")
    if fields.isrc and await session.scalar(select(Track.id).where(Track.isrc == fields.isrc)):
        raise IntakeError(
            409, "isrc_taken", f"a track with ISRC {fields.isrc} exists", [field_error("metadata.isrc", "already used")]
        )
    track = Track(
        id=track_id,
        title=fields.title,
        description=fields.description,
        artist_id=await artist_for_wallet(session, fields.artist_wallet),
        genre=fields.genre,
        isrc=fields.isrc,
        status="ingesting",
        source_sha256=audio.blob.sha256,
        preview_start_ms=None if fields.preview_start_s is None else round(fields.preview_start_s * 1000),
    )
    session.add(track)
    await session.flush()
    # The source and the cover as uploaded are kept in the blob store and never published on IPFS: the
    # renditions and the cover's square stills (EXIF stripped) are.
    files: list[tuple[str, StagedFile, str]] = [("source", audio, "unpinned")]
    if cover is not None:
        files.append(("cover", cover, "unpinned"))
    placed: list[str] = []
    try:
        for kind, staged, pin_state in files:
            # A rename of a file already fsynced: quick, and atomic.
            blob = staged.blob.commit(f"tracks/{track.id}/{kind}")
            placed.append(blob.key)
            session.add(
                TrackFile(
                    track_id=track.id,
                    kind=kind,
                    storage_key=blob.key,
                    sha256=blob.sha256,
                    size_bytes=blob.size,
                    mime_type=staged.mime_type,
                    file_name=staged.file_name,
                    pin_state=pin_state,
                )
            )
        await session.flush()
        (created,) = await insert_jobs(await session.connection(), [request], now)
        if isinstance(created, IntakeError):  # the client was revoked since its key was looked up
            raise created
        track.job_id = request.job_id  # its client hears of the track's events (the job exists only now)
        await session.flush()
    except BaseException:
        delete_blobs(placed)
        raise
    return Accepted(created, track.id, placed)


def delete_blobs(keys: list[str]) -> None:
    for key in keys:
        blobs.delete(key)
