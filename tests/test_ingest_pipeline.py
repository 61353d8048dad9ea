"""One step of ``track.ingest`` on prepared ledger rows: which stages start, wait, fail or resume."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from models.music import Track, TrackFingerprint, User
from models.platform import Job, JobEvent, JobStatus
from roadie.db import transaction
from roadie.ingest import pipeline
from roadie.jobs.creation import new_job
from roadie.jobs.errors import PermanentError, WaitForChildren
from roadie.jobs.runtime import Claim, claim
from roadie.jobs.types import job_types

pytestmark = pytest.mark.usefixtures("without_relay_or_workers")


def _track() -> uuid.UUID:
    with transaction() as session:
        artist = User(wallet_address=f"wallet-{uuid.uuid4().hex[:20]}", is_artist=True)
        session.add(artist)
        session.flush()
        track = Track(title="t", artist_id=artist.id, source_sha256="0" * 64)
        session.add(track)
        session.flush()
        return track.id


def _parent(track_id: uuid.UUID) -> uuid.UUID:
    with transaction() as session:
        job = new_job(job_types()["track.ingest"], {"track_id": str(track_id)})
        session.add(job)
        session.flush()
        return job.id


def _child(parent_id: uuid.UUID, job_type: str, status: str, error_code: str | None = None) -> uuid.UUID:
    with transaction() as session:
        job = new_job(job_types()[job_type], {}, parent_id=parent_id)
        job.status, job.error_code, job.error_message = status, error_code, f"{error_code} happened"
        job.finished_at = func.now() if status in JobStatus.finished() else None
        session.add(job)
        session.flush()
        return job.id


def _run(parent_id: uuid.UUID) -> Claim:
    taken = claim(parent_id, message_id=f"m-{uuid.uuid4().hex[:6]}", worker="w")
    assert isinstance(taken, Claim)
    return taken


def _children(parent_id: uuid.UUID) -> list[tuple[str, str]]:
    with transaction() as session:
        rows = session.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.created_at, Job.id))
        return [(job.type, job.status) for job in rows]


def _status(track_id: uuid.UUID) -> str:
    with transaction() as session:
        track = session.get(Track, track_id)
        assert track is not None
        return track.status


def test_the_first_step_starts_the_transcode_and_the_cover_stills() -> None:
    track_id = _track()
    parent_id = _parent(track_id)
    run = _run(parent_id)

    with pytest.raises(WaitForChildren) as wait:
        pipeline.advance(parent_id, run.lease_id, track_id, mint=False)

    assert sorted(_children(parent_id)) == [("media.cover", "queued"), ("media.transcode", "queued")]
    stages = {s["name"]: s["status"] for s in (wait.value.result or {})["stages"]}
    assert stages == {
        "transcode": "queued",
        "cover": "queued",
        "analysis": "pending",
        "pin_track": "pending",
        "pin_metadata": "pending",
    }


def test_after_the_transcode_the_analysis_and_the_pinning_start_together() -> None:
    track_id = _track()
    parent_id = _parent(track_id)
    _child(parent_id, "media.transcode", JobStatus.SUCCEEDED)
    _child(parent_id, "media.cover", JobStatus.SUCCEEDED)
    run = _run(parent_id)

    with pytest.raises(WaitForChildren) as wait:
        pipeline.advance(parent_id, run.lease_id, track_id, mint=False)

    started = {job_type for job_type, status in _children(parent_id) if status == "queued"}
    assert started == {"media.analyse", "ipfs.pin_track"}
    assert len(wait.value.child_ids) == 2


def test_a_failed_stage_fails_the_step_with_its_error_and_the_track() -> None:
    track_id = _track()
    parent_id = _parent(track_id)
    _child(parent_id, "media.transcode", JobStatus.FAILED, "undecodable_audio")
    run = _run(parent_id)

    with pytest.raises(PermanentError) as failure:
        pipeline.advance(parent_id, run.lease_id, track_id, mint=False)

    assert failure.value.code == "undecodable_audio"
    assert str(failure.value) == "transcode failed: undecodable_audio happened"
    assert _status(track_id) == "failed"
    assert len(_children(parent_id)) == 1  # nothing new started


def test_a_rerun_resumes_at_the_failed_stage_and_keeps_the_finished_ones() -> None:
    track_id = _track()
    parent_id = _parent(track_id)
    _child(parent_id, "media.transcode", JobStatus.SUCCEEDED)
    _child(parent_id, "media.cover", JobStatus.SUCCEEDED)
    _child(parent_id, "ipfs.pin_track", JobStatus.SUCCEEDED)
    _child(parent_id, "media.analyse", JobStatus.FAILED, "track_not_found")
    with transaction() as session:  # an admin re-ran the failed parent
        session.add(JobEvent(job_id=parent_id, kind="rerun", actor="ops"))
    run = _run(parent_id)

    with pytest.raises(WaitForChildren):
        pipeline.advance(parent_id, run.lease_id, track_id, mint=False)

    assert _children(parent_id) == [
        ("media.transcode", "succeeded"),
        ("media.cover", "succeeded"),
        ("ipfs.pin_track", "succeeded"),
        ("media.analyse", "failed"),
        ("media.analyse", "queued"),
    ]
    assert _status(track_id) == "ingesting"


def test_a_requested_mint_starts_once_the_metadata_is_pinned_and_the_track_is_ready_after_it() -> None:
    track_id = _track()
    parent_id = _parent(track_id)
    for job_type in ("media.transcode", "media.cover", "media.analyse", "ipfs.pin_track", "ipfs.pin_metadata"):
        _child(parent_id, job_type, JobStatus.SUCCEEDED)
    run = _run(parent_id)

    with pytest.raises(WaitForChildren):
        pipeline.advance(parent_id, run.lease_id, track_id, mint=True)

    assert ("nft.mint", "queued") in _children(parent_id)
    assert _status(track_id) == "ingesting"

    _child(parent_id, "nft.mint", JobStatus.SUCCEEDED)
    result = pipeline.advance(parent_id, run.lease_id, track_id, mint=True)

    assert {s["name"]: s["status"] for s in result["stages"]}["mint"] == "succeeded"
    assert _status(track_id) == "ready"


@pytest.mark.parametrize(
    ("status", "finished_minutes_before_rerun", "stands"),
    [
        (JobStatus.SUCCEEDED, 5, True),  # a success stands whatever happened since
        (JobStatus.RUNNING, None, True),
        (JobStatus.FAILED, None, True),  # no re-run yet: the failure stands and fails the pipeline
        (JobStatus.FAILED, 5, False),  # failed before the re-run: started again
        (JobStatus.CANCELLED, 5, False),
        (JobStatus.FAILED, -5, True),  # failed after the re-run: the re-run failed
    ],
)
def test_a_stage_failed_before_the_last_rerun_is_started_again_and_any_other_child_stands(
    status: JobStatus, finished_minutes_before_rerun: int | None, stands: bool
) -> None:
    rerun_at = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    finished = None
    if finished_minutes_before_rerun is not None:
        finished = rerun_at - dt.timedelta(minutes=finished_minutes_before_rerun)
    child = Job(type="media.transcode", status=status, finished_at=finished)

    assert (pipeline._standing(child, rerun_at) is child) is stands
    assert pipeline._standing(child, None) is child
    assert pipeline._standing(None, rerun_at) is None


def _held_as_duplicate_of(track_id: uuid.UUID) -> uuid.UUID:
    """The track's fingerprint matched an earlier track's under the ``hold`` policy."""
    original = _track()
    with transaction() as session:
        session.add(
            TrackFingerprint(
                track_id=track_id,
                fingerprint=b"\x00" * 8,
                hashes=[1, 2],
                matched_track_id=original,
                similarity=Decimal("0.973"),
                decision="hold",
            )
        )
    return original


def test_a_duplicate_held_for_an_admin_stops_before_pinning_until_the_parent_is_re_run() -> None:
    track_id = _track()
    original = _held_as_duplicate_of(track_id)
    parent_id = _parent(track_id)
    _child(parent_id, "media.transcode", JobStatus.SUCCEEDED)
    _child(parent_id, "media.cover", JobStatus.SUCCEEDED)
    run = _run(parent_id)

    with pytest.raises(WaitForChildren) as wait:  # the analysis publishes nothing: it runs
        pipeline.advance(parent_id, run.lease_id, track_id, mint=True)
    _child(parent_id, "media.analyse", JobStatus.SUCCEEDED)
    result = pipeline.advance(parent_id, run.lease_id, track_id, mint=True)

    assert {job_type for job_type, _ in _children(parent_id)} == {"media.transcode", "media.cover", "media.analyse"}
    assert {s["name"]: s["status"] for s in result["stages"]} == {
        "transcode": "succeeded",
        "cover": "succeeded",
        "analysis": "succeeded",
        "pin_track": "held",
        "pin_metadata": "pending",
        "mint": "pending",
    }
    assert result["held"] is True
    assert result["duplicate_of"] == {"track_id": str(original), "similarity": 0.973, "policy": "hold"}
    assert (wait.value.result or {})["duplicate_of"] == result["duplicate_of"]
    assert _status(track_id) == "held"

    with transaction() as session:  # an admin re-ran the (succeeded) parent: the track is released
        session.add(JobEvent(job_id=parent_id, kind="rerun", actor="ops"))
    with pytest.raises(WaitForChildren):
        pipeline.advance(parent_id, run.lease_id, track_id, mint=True)

    assert ("ipfs.pin_track", "queued") in _children(parent_id)
    assert _status(track_id) == "ingesting"
