"""IPFS pinning against the real local node: Kubo's CIDs, idempotent pins, releases, NFT metadata, bad input."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from models.music import Track, TrackFile
from roadie.blobs import blob_path
from roadie.db import transaction
from roadie.ipfs import metadata, pinning
from roadie.ipfs.client import IpfsNode, ipfs
from roadie.ipfs.node import LocalIpfsNode, answers
from roadie.jobs.errors import PermanentError, TransientError
from roadie.jobs.outbox import reap_lost
from roadie.processes import ProcessGroup
from tests.conftest import Processes
from tests.fixtures.ipfs import MakeTrack
from tests.helpers import wait_for_job

pytestmark = pytest.mark.usefixtures("ipfs_node")

CHUNK = 262_144


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _cid_v1(codec: int, block: bytes) -> bytes:
    """Binary CIDv1: version, codec, then the sha2-256 multihash of the block."""
    return bytes([0x01, codec, 0x12, 0x20]) + hashlib.sha256(block).digest()


def _base32(cid: bytes) -> str:
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


def kubo_cid(data: bytes) -> str:
    """What `ipfs add --cid-version=1` prints for up to 174 chunks, from the specs (raw leaves, one dag-pb root)."""
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    if len(chunks) == 1:
        return _base32(_cid_v1(0x55, chunks[0]))  # one raw block
    assert len(chunks) <= 174, "a deeper DAG than this oracle builds"
    # dag-pb root: PBLink {Hash, Name "", Tsize} per chunk, then Data = UnixFS {Type File, filesize, blocksizes}
    links = b"".join(_field(2, _field(1, _cid_v1(0x55, c)) + _field(2, b"") + _field(3, len(c))) for c in chunks)
    unixfs = _field(1, 2) + _field(3, len(data)) + b"".join(_field(4, len(c)) for c in chunks)
    return _base32(_cid_v1(0x70, links + _field(1, unixfs)))


def rows(track_id: uuid.UUID) -> dict[str, TrackFile]:
    with transaction() as session:
        return {f.kind: f for f in session.scalars(select(TrackFile).where(TrackFile.track_id == track_id))}


# --- CIDs ---------------------------------------------------------------------------------------


def test_hello_world_has_kubos_cidv1(ipfs_node: IpfsNode) -> None:
    added = ipfs_node.add_bytes(b"hello world\n", pin=False)

    assert added.cid == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    assert added.cid == kubo_cid(b"hello world\n")
    assert added.dag_size == 12


def test_an_empty_file_has_kubos_cidv1(ipfs_node: IpfsNode) -> None:
    assert ipfs_node.add_bytes(b"", pin=False).cid == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_a_multi_chunk_file_has_kubos_cid_and_reads_back(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK + 12_345)
    path = tmp_path / "five-chunks.bin"
    path.write_bytes(data)

    added = ipfs_node.add_file(path)

    assert added.cid.startswith("bafybei")
    assert added.cid == kubo_cid(data)
    assert added.dag_size > len(data)
    assert ipfs_node.is_pinned(added.cid)
    assert ipfs_node.cat(added.cid) == data


# --- the adapter when the node is away ----------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_node_that_does_not_answer_times_out_and_is_retried_then_reported_transient(silent_server: int) -> None:
    node = IpfsNode(f"/ip4/127.0.0.1/tcp/{silent_server}/http", timeout_s=0.3, attempts=2)

    with pytest.raises(TransientError) as raised:
        node.add_bytes(b"x")

    assert raised.value.code == "ipfs_unavailable"
    assert "2 tries" in raised.value.message


def test_a_node_that_is_not_there_is_reported_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    node = IpfsNode(f"/ip4/127.0.0.1/tcp/{port}/http", timeout_s=1, attempts=3)

    with pytest.raises(TransientError, match="3 tries"):
        node.pin("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4")


def test_a_node_that_answers_an_error_is_reported_permanent(ipfs_node: IpfsNode) -> None:
    with pytest.raises(PermanentError) as raised:
        ipfs_node.pin("not-a-cid")

    assert raised.value.code == "ipfs_rejected"


# --- pin_track ----------------------------------------------------------------------------------


def test_pin_track_pins_every_pending_file_and_records_cid_size_and_mime(
    make_track: MakeTrack, ipfs_node: IpfsNode
) -> None:
    mp3, cover = os.urandom(3 * CHUNK), os.urandom(5_000)
    track_id = make_track({"mp3_320": mp3, "cover_1000": cover})

    result = pinning.pin_track(track_id)

    files = rows(track_id)
    assert sorted(result["pinned_now"]) == ["cover_1000", "mp3_320"]
    assert files["mp3_320"].cid == kubo_cid(mp3)
    assert files["cover_1000"].cid == kubo_cid(cover)
    for kind, data, mime in (("mp3_320", mp3, "audio/mpeg"), ("cover_1000", cover, "image/jpeg")):
        row = files[kind]
        assert (row.pin_state, row.size_bytes, row.mime_type) == ("pinned", len(data), mime)
        assert ipfs_node.is_pinned(row.cid or "")
        assert ipfs_node.cat(row.cid or "") == data


def test_pinning_again_gives_the_same_cids_and_no_new_rows(make_track: MakeTrack) -> None:
    track_id = make_track({"mp3_320": b"the same bytes", "preview": b"a preview"})
    first = pinning.pin_track(track_id)
    ids = {kind: row.id for kind, row in rows(track_id).items()}

    second = pinning.pin_track(track_id)

    assert second["pinned_now"] == []
    assert second["files"] == first["files"]
    assert {kind: row.id for kind, row in rows(track_id).items()} == ids
    with transaction() as session:  # a failed row re-pinned gives the same CID too
        session.get_one(TrackFile, ids["preview"]).pin_state = "failed"
    assert pinning.pin_track(track_id)["files"] == first["files"]


def test_the_metadata_file_is_left_to_pin_metadata(make_track: MakeTrack) -> None:
    track_id = make_track({"mp3_320": b"mp3", "metadata": b"{}"})

    pinning.pin_track(track_id)

    assert rows(track_id)["metadata"].pin_state == "pending"


def test_a_file_missing_from_the_blob_store_fails_with_a_code_and_leaves_no_cid(make_track: MakeTrack) -> None:
    track_id = make_track({"mp3_320": b"gone"})
    os.unlink(blob_path(rows(track_id)["mp3_320"].storage_key or ""))

    with pytest.raises(PermanentError) as raised:
        pinning.pin_track(track_id)

    assert raised.value.code == "blob_missing"
    row = rows(track_id)["mp3_320"]
    assert (row.pin_state, row.cid) == ("failed", None)


def test_a_blob_that_does_not_match_its_sha256_is_not_pinned(make_track: MakeTrack, ipfs_node: IpfsNode) -> None:
    track_id = make_track({"cover_1000": b"original cover"})
    blob_path(rows(track_id)["cover_1000"].storage_key or "").write_bytes(b"tampered cover")

    with pytest.raises(PermanentError) as raised:
        pinning.pin_track(track_id)

    assert raised.value.code == "blob_corrupt"
    assert rows(track_id)["cover_1000"].pin_state == "failed"
    assert not ipfs_node.is_pinned(kubo_cid(b"tampered cover"))


def test_an_unknown_track_fails_with_a_code() -> None:
    with pytest.raises(PermanentError) as raised:
        pinning.pin_track(uuid.uuid4())

    assert raised.value.code == "track_not_found"


# --- unpin_track --------------------------------------------------------------------------------


def test_unpin_track_releases_its_content(make_track: MakeTrack, ipfs_node: IpfsNode) -> None:
    track_id = make_track({"mp3_320": os.urandom(1000), "cover_1000": os.urandom(1000)})
    pinning.pin_track(track_id)
    cids = [row.cid or "" for row in rows(track_id).values()]

    result = pinning.unpin_track(track_id)

    assert sorted(r["kind"] for r in result["released"]) == ["cover_1000", "mp3_320"]
    assert {row.pin_state for row in rows(track_id).values()} == {"unpinned"}
    assert not any(ipfs_node.is_pinned(cid) for cid in cids)
    assert pinning.unpin_track(track_id)["released"] == []  # nothing twice


def test_unpinning_one_track_keeps_content_another_track_shares(make_track: MakeTrack, ipfs_node: IpfsNode) -> None:
    shared = os.urandom(2000)
    first, second = make_track({"mp3_320": shared}), make_track({"mp3_320": shared})
    pinning.pin_track(first)
    pinning.pin_track(second)

    result = pinning.unpin_track(first)

    assert result["still_pinned_elsewhere"] == [{"kind": "mp3_320", "cid": kubo_cid(shared)}]
    assert ipfs_node.is_pinned(kubo_cid(shared))
    pinning.unpin_track(second)
    assert not ipfs_node.is_pinned(kubo_cid(shared))


# --- NFT metadata -------------------------------------------------------------------------------


def test_pin_metadata_pins_a_schema_valid_metaplex_document(make_track: MakeTrack, ipfs_node: IpfsNode) -> None:
    mp3, low, cover = os.urandom(4000), os.urandom(2000), os.urandom(500)
    track_id = make_track({"mp3_320": mp3, "mp3_128": low, "cover_1000": cover}, description="A click track.")
    pinning.pin_track(track_id)

    result = metadata.pin_metadata(track_id)

    row = rows(track_id)["metadata"]
    assert (row.cid, row.pin_state, row.mime_type) == (result["cid"], "pinned", "application/json")
    assert result["uri"] == f"ipfs://{row.cid}"
    assert ipfs_node.is_pinned(result["cid"])
    document = json.loads(ipfs_node.cat(result["cid"]))
    metadata.validate_metadata(document)
    assert document == {
        "name": "Click at 120",
        "symbol": "ROADIE",
        "description": "A click track.",
        "image": f"ipfs://{kubo_cid(cover)}",
        "animation_url": f"ipfs://{kubo_cid(mp3)}?ext=mp3",
        "external_url": f"https://roadie.example/tracks/{track_id}",
        "attributes": [
            {"trait_type": "Genre", "value": "Electronic"},
            {"trait_type": "BPM", "value": 120.0},
            {"trait_type": "Key", "value": "C major"},
            {"trait_type": "Duration (s)", "value": 185.25},
            {"trait_type": "Loudness (LUFS)", "value": -19.0},
        ],
        "properties": {
            "category": "audio",
            "files": [
                {"uri": f"ipfs://{kubo_cid(cover)}", "type": "image/jpeg"},
                {"uri": f"ipfs://{kubo_cid(mp3)}?ext=mp3", "type": "audio/mpeg"},
                {"uri": f"ipfs://{kubo_cid(low)}", "type": "audio/mpeg"},
            ],
        },
    }


def test_the_same_inputs_give_the_same_bytes_and_cid(make_track: MakeTrack) -> None:
    track_id = make_track({"mp3_320": b"deterministic mp3", "cover_1000": b"deterministic cover"})
    pinning.pin_track(track_id)
    first = metadata.pin_metadata(track_id)
    stored = blob_path(rows(track_id)["metadata"].storage_key or "").read_bytes()

    again = metadata.pin_metadata(track_id)

    assert again == first
    assert blob_path(rows(track_id)["metadata"].storage_key or "").read_bytes() == stored
    assert first["cid"] == kubo_cid(stored)
    assert stored.startswith(b'{"animation_url":')  # sorted keys, no spaces


def test_a_track_without_a_cover_gets_a_pinned_waveform_image(make_track: MakeTrack, ipfs_node: IpfsNode) -> None:
    track_id = make_track({"mp3_320": b"no cover here"})
    pinning.pin_track(track_id)

    result = metadata.pin_metadata(track_id)

    waveform = rows(track_id)["waveform"]
    assert (waveform.pin_state, waveform.mime_type) == ("pinned", "image/png")
    assert result["image"] == f"ipfs://{waveform.cid}"
    png = ipfs_node.cat(waveform.cid or "")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with transaction() as session:
        peaks = session.get_one(Track, track_id).waveform
    assert metadata.waveform_png(peaks) == png  # drawn the same way every time
    assert metadata.pin_metadata(track_id) == result


def test_metadata_the_schema_rejects_fails_naming_the_field_and_writes_nothing(
    make_track: MakeTrack, ipfs_node: IpfsNode
) -> None:
    track_id = make_track({"mp3_320": b"blank title", "cover_1000": b"cover_1000"}, title="   ")
    pinning.pin_track(track_id)

    with pytest.raises(PermanentError) as raised:
        metadata.pin_metadata(track_id)

    assert raised.value.code == "metadata_invalid"
    assert raised.value.message.startswith("NFT metadata does not follow the schema: name:")
    assert "metadata" not in rows(track_id)


def test_metadata_needs_the_pinned_mp3_and_the_pinned_cover(make_track: MakeTrack) -> None:
    track_id = make_track({"mp3_320": b"not pinned yet", "cover_1000": b"cover_1000"})

    with pytest.raises(PermanentError, match="MP3 320") as raised:
        metadata.pin_metadata(track_id)
    assert raised.value.code == "not_pinned"

    pinning.pin_track(track_id)
    with transaction() as session:
        session.get_one(TrackFile, rows(track_id)["cover_1000"].id).pin_state = "failed"
    with pytest.raises(PermanentError, match="cover") as raised:  # not silently replaced by a waveform
        metadata.pin_metadata(track_id)
    assert raised.value.code == "not_pinned"
    assert {"metadata", "waveform"}.isdisjoint(rows(track_id))


def test_each_forked_process_gets_its_own_client() -> None:
    parent = ipfs()
    child = os.fork()
    if child == 0:  # a prefork pool child
        os._exit(0 if ipfs() is not parent and ipfs() is ipfs() else 1)
    assert os.waitpid(child, 0)[1] == 0
    assert ipfs() is parent


# --- through a real Celery worker ---------------------------------------------------------------


def submit_job(client: httpx.Client, job_type: str, track_id: uuid.UUID) -> str:
    response = client.post("/v1/jobs", json={"type": job_type, "payload": {"track_id": str(track_id)}})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_pin_track_then_pin_metadata_through_a_worker(
    make_track: MakeTrack, ipfs_node: IpfsNode, client: httpx.Client, worker: ProcessGroup
) -> None:
    mp3 = os.urandom(2 * CHUNK + 1)
    track_id = make_track({"mp3_320": mp3, "opus_96": os.urandom(3000)})

    pinned = wait_for_job(client, submit_job(client, "ipfs.pin_track", track_id), "succeeded", timeout=60)
    described = wait_for_job(client, submit_job(client, "ipfs.pin_metadata", track_id), "succeeded", timeout=60)

    assert {f["kind"]: f["cid"] for f in pinned["result"]["files"]}["mp3_320"] == kubo_cid(mp3)
    document = json.loads(ipfs_node.cat(described["result"]["cid"]))
    assert document["animation_url"] == f"ipfs://{kubo_cid(mp3)}?ext=mp3"
    assert document["image"] == f"ipfs://{rows(track_id)['waveform'].cid}"
    again = wait_for_job(client, submit_job(client, "ipfs.pin_track", track_id), "succeeded", timeout=60)
    assert again["result"]["pinned_now"] == []
    assert len(rows(track_id)) == 4  # mp3_320, opus_96, waveform, metadata: one row each


def test_bad_input_fails_the_job_with_a_code_and_the_worker_keeps_serving(
    make_track: MakeTrack, client: httpx.Client, worker: ProcessGroup
) -> None:
    blank = make_track({"mp3_320": b"blank", "cover_1000": b"c"}, title=" ")
    wait_for_job(client, submit_job(client, "ipfs.pin_track", blank), "succeeded", timeout=60)

    failed = wait_for_job(client, submit_job(client, "ipfs.pin_metadata", blank), "failed", timeout=60)
    unknown = wait_for_job(client, submit_job(client, "ipfs.pin_track", uuid.uuid4()), "failed", timeout=60)

    assert failed["error"]["code"] == "metadata_invalid"
    assert unknown["error"]["code"] == "track_not_found"
    assert failed["attempts"] == 1
    fine = make_track({"mp3_320": b"fine"})
    wait_for_job(client, submit_job(client, "ipfs.pin_track", fine), "succeeded", timeout=60)


# --- the local node -----------------------------------------------------------------------------


def test_the_local_node_restarts_on_its_repo_after_being_killed(tmp_path: Path) -> None:
    node = LocalIpfsNode(tmp_path / "repo")  # port 0: any free port
    addr = node.start()
    added = IpfsNode(addr, timeout_s=10, attempts=1).add_bytes(b"kept across a crash")
    os.kill(int(Path(f"{node.repo}.pid").read_text()), signal.SIGKILL)
    assert not answers(addr)

    again = node.start()  # the dead daemon's repo lock would otherwise block it for 20 s

    try:
        assert IpfsNode(again, timeout_s=10, attempts=1).is_pinned(added.cid)
    finally:
        node.stop()
    assert not answers(again)


@pytest.mark.usefixtures("own_workers")
def test_a_pin_track_killed_midway_completes_on_rerun_with_the_same_cids_and_no_duplicates(
    make_track: MakeTrack, ipfs_node: IpfsNode, client: httpx.Client, processes: Processes
) -> None:
    contents = {
        kind: os.urandom(8 << 20) for kind in ("cover_1000", "mp3_128", "mp3_320", "opus_96", "preview", "source")
    }
    track_id = make_track(contents)
    doomed = processes.worker(queues="ipfs")
    job_id = submit_job(client, "ipfs.pin_track", track_id)

    pinned_at_kill = 0
    deadline = time.monotonic() + 60
    while pinned_at_kill == 0 and time.monotonic() < deadline:
        pinned_at_kill = sum(row.pin_state == "pinned" for row in rows(track_id).values())
        time.sleep(0.02)
    doomed.kill()  # mid-job: some files pinned and recorded, the others not
    assert 0 < pinned_at_kill < len(contents)
    time.sleep(3.5)  # > ROADIE_HEARTBEAT_TIMEOUT_S
    assert reap_lost() == 1
    processes.worker(queues="ipfs")

    job = wait_for_job(client, job_id, "succeeded", timeout=120)

    assert job["attempts"] == 2
    files = rows(track_id)
    assert {kind: row.cid for kind, row in files.items()} == {kind: kubo_cid(data) for kind, data in contents.items()}
    assert {row.pin_state for row in files.values()} == {"pinned"}
    assert all(ipfs_node.is_pinned(row.cid or "") for row in files.values())
