"""The indexer keeps Postgres equal to the chain: real beat, a real indexer worker, the local chain over HTTP.

The worker runs with small pages and batches so that a handful of transactions spans several of each.
Block production is paused where a test needs a transaction to stay ``confirmed`` (not finalized) for a while.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.memo.instructions import MemoParams, create_memo
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    MintToParams,
    TransferCheckedParams,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to,
    transfer_checked,
)
from sqlalchemy import select, text

from models import (
    ChainEvent,
    IndexedDeposit,
    IndexedSale,
    IndexedTransaction,
    IndexerCursor,
    Nft,
    PayoutBatch,
    Sale,
    StakingPosition,
    Track,
    User,
)
from roadie.chain.client import Chain, connect
from roadie.chain.nft import mint_instructions
from roadie.chain.platform import ESCROW_PURPOSE, platform_keypair, reward_mint, staking_vault_wallet
from roadie.chain.sending import checked_size, send_and_confirm, sign
from roadie.chain.token import TokenMetadata, mint_account_space
from roadie.chain.transfers import create_batch
from roadie.db import transaction
from roadie.indexer import store
from roadie.indexer.runner import watched_addresses
from roadie.processes import ProcessGroup, beat_command
from roadie.settings import get_settings
from tests.conftest import ROOT, Processes, free_port
from tests.fixtures.chain import control, crashing_worker
from tests.fixtures.ledger import balance
from tests.helpers import wait_for_job

T = TypeVar("T")
PAGE_SIZE, BATCH_SIZE = 4, 3


@dataclass
class Indexing:
    worker: ProcessGroup
    beat: ProcessGroup
    metrics_port: int


ENV = {
    "ROADIE_INDEXER_PAGE_SIZE": str(PAGE_SIZE),
    "ROADIE_INDEXER_BATCH_SIZE": str(BATCH_SIZE),
    "ROADIE_SCHEDULE_INDEXER_TICK": "every 0.3s",
}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Settings for the subprocesses started inside the block (they read the environment when they start)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def indexer_worker(processes: Processes, metrics_port: int) -> ProcessGroup:
    """The single consumer of the ``indexer`` queue, with small pages and batches and its metrics served."""
    with environment(ENV | {"ROADIE_WORKER_METRICS_PORT": str(metrics_port)}):
        return processes.worker(queues="indexer", concurrency=1)


@pytest.fixture(scope="module")
def running_indexer(
    processes: Processes, worker: ProcessGroup, localnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Indexing]:
    """The module's indexer worker and beat; the shared all-queues worker rests meanwhile, so every tick is
    taken by this worker, with its small pages and batches."""
    worker.stop()
    log_dir, port = tmp_path_factory.mktemp("indexer"), free_port()
    worker = indexer_worker(processes, port)
    with environment(ENV):  # beat: an indexer tick every 0.3 s
        command = beat_command(log_dir / "celerybeat-schedule")
        beat = ProcessGroup("beat", command, log_dir / "beat.log", cwd=ROOT).start()
    indexing = Indexing(worker, beat, port)
    yield indexing
    beat.stop()
    indexing.worker.stop()
    if not worker.alive:
        worker.start()


@pytest.fixture
def indexing(running_indexer: Indexing, processes: Processes) -> Indexing:
    """The indexer worker and beat; a worker another test killed (``own_workers`` kills them all) is replaced."""
    if not running_indexer.worker.alive:
        running_indexer.worker = indexer_worker(processes, running_indexer.metrics_port)
    return running_indexer


@pytest.fixture
def paused(chain_running: Any) -> Iterator[Any]:
    """Block production stopped: the test closes blocks itself with roadie_advance."""
    control("roadie_pause")
    yield chain_running
    control("roadie_resume")


# --- talking to the chain ----------------------------------------------------------------------


def on_chain(work: Callable[[Chain], Awaitable[T]]) -> T:
    async def scoped() -> T:
        async with connect(get_settings()) as chain:
            return await work(chain)

    return asyncio.run(scoped())


def confirmed(instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> str:
    """Send and wait for ``confirmed`` (the chain must be producing blocks)."""
    return str(on_chain(lambda chain: send_and_confirm(chain, instructions, signers)))


def sent(instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> str:
    """Send without waiting: it lands in the open slot (for tests that close blocks themselves)."""

    async def work(chain: Chain) -> str:
        blockhash, _ = await chain.latest_blockhash()
        tx = sign(instructions, signers[0].pubkey(), signers, blockhash)
        result = await chain.send(checked_size(tx))
        assert result.outcome == "sent", result
        return str(tx.signatures[0])

    return on_chain(work)


def platform() -> Keypair:
    return platform_keypair(get_settings()).signer


def memo(text_: str, signer: Pubkey) -> Instruction:
    return create_memo(MemoParams(MEMO_PROGRAM_ID, signer, text_.encode()))


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- reading the database ----------------------------------------------------------------------


def indexed(signature: str) -> IndexedTransaction | None:
    with transaction() as session:
        return session.get(IndexedTransaction, signature)


def events_of(signature: str) -> list[ChainEvent]:
    with transaction() as session:
        return list(
            session.scalars(
                select(ChainEvent).where(ChainEvent.signature == signature).order_by(ChainEvent.instruction_index)
            )
        )


def finalized(signature: str) -> bool:
    row = indexed(signature)
    return row is not None and row.status == "finalized"


def cursor_slot(address: Pubkey) -> int:
    with transaction() as session:
        cursor = session.get(IndexerCursor, str(address))
        return -1 if cursor is None or cursor.slot is None else cursor.slot


def owner_of(mint: Pubkey) -> str:
    with transaction() as session:
        return session.scalars(select(Nft.owner_wallet).where(Nft.mint_address == str(mint))).one()


# --- NFTs --------------------------------------------------------------------------------------


def mint_nft(owner: Pubkey) -> tuple[Pubkey, str]:
    """A track's NFT minted with the ``nft.mint`` job's own instructions (Token-2022 with token metadata)."""
    authority, mint = platform(), Keypair()
    with transaction() as session:
        artist = User(wallet_address=str(owner), is_artist=True)
        session.add(artist)
        session.flush()
        track = Track(title="Night Bus", artist_id=artist.id, status="ready", source_sha256="0" * 64)
        session.add(track)
        session.flush()
        session.add(
            Nft(mint_address=str(mint.pubkey()), track_id=track.id, owner_wallet=str(owner), creator_id=artist.id)
        )
    metadata = TokenMetadata(
        authority.pubkey(),
        mint.pubkey(),
        "Night Bus",
        "ROADIE",
        "ipfs://bafkreiindexertest",
        {"track_id": str(track.id)},
    )
    _, funded = mint_account_space(metadata)
    rent = on_chain(lambda chain: chain.rent_exempt_minimum(funded))
    signature = confirmed(mint_instructions(authority.pubkey(), owner, metadata, rent), [authority, mint])
    return mint.pubkey(), signature


def nft_transfer(mint: Pubkey, holder: Keypair, to: Pubkey, *, trailing: bytes = b"") -> list[Instruction]:
    """The platform pays the fee; the holder signs the transfer (``trailing``: bytes the runtime ignores)."""
    source = get_associated_token_address(holder.pubkey(), mint, TOKEN_2022_PROGRAM_ID)
    destination = get_associated_token_address(to, mint, TOKEN_2022_PROGRAM_ID)
    move = transfer_checked(
        TransferCheckedParams(TOKEN_2022_PROGRAM_ID, source, mint, destination, holder.pubkey(), 1, 0)
    )
    return [
        create_idempotent_associated_token_account(platform().pubkey(), to, mint, TOKEN_2022_PROGRAM_ID),
        Instruction(move.program_id, bytes(move.data) + trailing, move.accounts),
    ]


# --- the tests ---------------------------------------------------------------------------------


def test_more_signatures_than_a_page_are_all_read_once_oldest_first(indexing: Indexing, chain_running: Any) -> None:
    signer = platform()
    texts = [f"page test {uuid.uuid4().hex[:8]} #{n}" for n in range(3 * PAGE_SIZE + 1)]
    signatures = [confirmed([memo(text_, signer.pubkey())], [signer]) for text_ in texts]

    wait_until(lambda: all(finalized(signature) for signature in signatures), "every memo finalized")

    assert [events_of(signature)[0].memo for signature in signatures] == texts
    with transaction() as session:
        rows = session.scalars(select(IndexedTransaction).where(IndexedTransaction.signature.in_(signatures))).all()
    slots = {row.signature: row.slot for row in rows}
    assert [slots[signature] for signature in signatures] == sorted(slots.values())
    # A tick marks rows finalized after it moved the cursor; the cursor follows on the next tick.
    wait_until(lambda: cursor_slot(signer.pubkey()) >= slots[signatures[-1]], "the cursor past the last memo")


def test_an_nft_transfer_moves_ownership_and_the_mint_is_recorded(indexing: Indexing, chain_running: Any) -> None:
    artist, fan = Keypair(), Keypair()
    mint, minted = mint_nft(artist.pubkey())

    transferred = confirmed(nft_transfer(mint, artist, fan.pubkey()), [platform(), artist])

    wait_until(lambda: owner_of(mint) == str(fan.pubkey()), "the fan owning the NFT")
    (mint_event,) = [event for event in events_of(minted) if event.kind == "nft_mint"]
    assert (mint_event.mint, mint_event.owner, mint_event.amount) == (str(mint), str(artist.pubkey()), 1)
    (move,) = [event for event in events_of(transferred) if event.kind == "nft_transfer"]
    assert (move.owner, move.previous_owner) == (str(fan.pubkey()), str(artist.pubkey()))
    wait_until(lambda: finalized(transferred), "the transfer finalized")


def test_a_fork_that_drops_a_confirmed_transfer_deletes_its_row_and_gives_the_nft_back(
    indexing: Indexing, paused: Any
) -> None:
    artist, fan = Keypair(), Keypair()
    control("roadie_resume")
    mint, minted = mint_nft(artist.pubkey())
    wait_until(lambda: indexed(minted) is not None, "the mint indexed")
    control("roadie_pause")

    transferred = sent(nft_transfer(mint, artist, fan.pubkey()), [platform(), artist])
    control("roadie_advance", 1)  # confirmed, two blocks short of finalized
    wait_until(lambda: owner_of(mint) == str(fan.pubkey()), "the confirmed transfer applied")
    row = indexed(transferred)
    assert row is not None
    assert row.status == "confirmed"

    dropped = control("roadie_orphan", 1)
    assert transferred in dropped["dropped"]

    wait_until(lambda: indexed(transferred) is None, "the dropped transfer's row deleted")
    assert owner_of(mint) == str(artist.pubkey())
    assert events_of(transferred) == []
    control("roadie_advance", 5)
    time.sleep(1)  # several ticks later, with the fork's slots finalized over: still gone
    assert indexed(transferred) is None
    assert owner_of(mint) == str(artist.pubkey())


def test_a_transaction_the_decoder_refuses_is_poison_and_the_indexer_carries_on(
    indexing: Indexing, chain_running: Any
) -> None:
    artist, fan = Keypair(), Keypair()
    mint, _ = mint_nft(artist.pubkey())

    odd = confirmed(nft_transfer(mint, artist, fan.pubkey(), trailing=b"\x07"), [platform(), artist])
    after = confirmed([memo("after the poison", platform().pubkey())], [platform()])

    wait_until(lambda: finalized(after), "the next transaction finalized")
    poison = indexed(odd)
    assert poison is not None
    assert poison.error == "instruction 1: TransferChecked of 11 bytes"
    assert events_of(odd) == []
    assert owner_of(mint) == str(artist.pubkey())  # not guessed: the NFT moved on chain, a person must look
    assert [event.memo for event in events_of(after)] == ["after the poison"]


def test_skipped_slots_are_passed_over_and_a_backfill_counts_them(
    indexing: Indexing, paused: Any, admin: httpx.Client
) -> None:
    signer = platform()
    first = control("roadie_status")["processed"]
    landed = sent([memo("across skipped slots", signer.pubkey())], [signer])
    control("roadie_skipSlot", 3)
    control("roadie_advance", 4)  # the memo's block, then three more: finalized
    wait_until(lambda: finalized(landed), "the memo finalized across the skipped slots")
    row = indexed(landed)
    assert row is not None
    assert row.slot == first + 3
    wait_until(lambda: cursor_slot(signer.pubkey()) >= first + 3, "the cursor past the memo")
    with transaction() as session:  # lose the row, as if the address had not been watched then
        session.execute(text("DELETE FROM indexed_transactions WHERE signature = :s"), {"s": landed})
    last = control("roadie_status")["finalized"]

    response = admin.post(
        "/v1/jobs", json={"type": "indexer.backfill", "payload": {"start_slot": first, "end_slot": last + 5}}
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(admin, response.json()["id"], "succeeded", timeout=60)

    assert job["result"]["skipped_slots"] == 3
    assert job["result"]["unavailable_slots"] == 5
    assert job["result"]["read"] == 1
    assert finalized(landed)
    assert [event.memo for event in events_of(landed)] == ["across skipped slots"]


def test_a_backfill_with_a_reversed_range_is_refused(indexing: Indexing, admin: httpx.Client) -> None:
    response = admin.post("/v1/jobs", json={"type": "indexer.backfill", "payload": {"start_slot": 9, "end_slot": 3}})

    assert response.status_code == 422
    assert "end_slot must not be below start_slot" in response.text


def created(signatures: Sequence[str]) -> dict[str, object]:
    with transaction() as session:
        rows = session.scalars(select(IndexedTransaction).where(IndexedTransaction.signature.in_(signatures)))
        return {row.signature: row.created_at for row in rows}


def test_a_restarted_indexer_resumes_from_its_cursor_without_reading_twice(
    indexing: Indexing, chain_running: Any, processes: Processes, localnet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = platform()
    before = [confirmed([memo(f"before restart {n}", signer.pubkey())], [signer]) for n in range(3)]
    wait_until(lambda: all(finalized(signature) for signature in before), "the first memos finalized")
    first_read = created(before)

    indexing.worker.signal(signal.SIGKILL)
    indexing.worker.wait_stopped(10)
    after = [confirmed([memo(f"after restart {n}", signer.pubkey())], [signer]) for n in range(2 * BATCH_SIZE + 1)]
    asked: list[dict[str, Any]] = []
    serve = localnet.api.call

    def spy(method: str, params: list[Any]) -> Any:
        if method == "getSignaturesForAddress" and params[0] == str(signer.pubkey()):
            asked.append(params[1] if len(params) > 1 else {})
        return serve(method, params)

    monkeypatch.setattr(localnet.api, "call", spy)
    indexing.worker = indexer_worker(processes, indexing.metrics_port)
    wait_until(lambda: all(finalized(signature) for signature in after), "the memos sent while it was down", 60)

    assert created(before) == first_read  # read once: never deleted and read again
    assert asked
    assert asked[0].get("until")  # the new process started from the stored cursor, not from scratch
    assert [event.memo for signature in after for event in events_of(signature)] == [
        f"after restart {n}" for n in range(2 * BATCH_SIZE + 1)
    ]


def test_the_worker_exposes_the_indexer_lag(indexing: Indexing, chain_running: Any) -> None:
    def lag() -> float | None:
        try:
            body = httpx.get(f"http://127.0.0.1:{indexing.metrics_port}/metrics", timeout=5).text
        except httpx.TransportError:  # the worker is still starting
            return None
        for line in body.splitlines():
            if line.startswith("roadie_indexer_lag_slots "):
                return float(line.split()[1])
        return None

    value = wait_until(lag, "the lag gauge")  # 0.0 reads as "not yet": wait for a tick that saw the chain move

    assert 0 < value < 50


def test_roadie_indexer_status_shows_the_cursors_and_the_lag(indexing: Indexing, chain_running: Any) -> None:
    signer = platform()
    signature = confirmed([memo("status check", signer.pubkey())], [signer])
    wait_until(lambda: finalized(signature), "the memo finalized")

    done = subprocess.run(
        [sys.executable, "-m", "roadie.cli", "indexer", "status"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr

    status = json.loads(done.stdout)
    assert status["chain_slot"] >= status["finalized_slot"]
    assert 0 <= status["lag_slots"] < 50
    (platform_cursor,) = [entry for entry in status["addresses"] if entry["address"] == str(signer.pubkey())]
    assert platform_cursor["cursor_slot"] is not None
    assert status["finalized"] >= 1


def payout_state(batch_id: uuid.UUID) -> tuple[str, list[tuple[str, str | None, int | None]]]:
    with transaction() as session:
        batch = session.get_one(PayoutBatch, batch_id)
        return batch.status, [(t.status, t.signature, t.instruction_index) for t in batch.transfers]


def test_a_payout_is_paid_only_when_the_indexer_sees_it_finalized(
    indexing: Indexing,
    paused: Any,
    api_url: str,
    own_workers: Processes,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fans = [Keypair().pubkey() for _ in range(3)]
    crashed = tmp_path / "crashed-after-confirm"
    payer = crashing_worker(own_workers, monkeypatch, "after_confirm", crashed)  # the only chain worker
    with transaction() as session:
        batch_id = create_batch(
            session, f"rewards:{uuid.uuid4()}", [(str(fan), 1_000 + n) for n, fan in enumerate(fans)]
        )
    wait_until(lambda: all(status == "submitted" for status, _, _ in payout_state(batch_id)[1]), "the batch sent", 60)
    (signature,) = {signature for _, signature, _ in payout_state(batch_id)[1]}
    assert signature is not None
    wait_until(lambda: on_chain(lambda chain: chain.statuses([Signature.from_string(signature)]))[0], "it landed")

    control("roadie_advance", 1)  # confirmed, not finalized
    wait_until(crashed.exists, "the chain worker killed after recording confirmed", 60)
    payer.wait_stopped(10)
    wait_until(lambda: indexed(signature) is not None, "the indexer reading the payout")

    row = indexed(signature)
    assert row is not None
    assert row.status == "confirmed"
    assert [status for status, _, _ in payout_state(batch_id)[1]] == ["confirmed"] * 3  # not paid yet
    payouts = [event for event in events_of(signature) if event.kind == "token_transfer"]
    assert sorted(event.amount or 0 for event in payouts) == [1_000, 1_001, 1_002]
    assert {event.memo for event in payouts} == {f"roadie:payout:{batch_id}"}

    control("roadie_advance", 3)  # finalized; no chain worker is left to notice

    wait_until(lambda: payout_state(batch_id)[0] == "finalized", "the indexer finalizing the batch")
    _, transfers = payout_state(batch_id)
    assert sorted((status, index) for status, _, index in transfers) == sorted(
        ("finalized", event.instruction_index) for event in payouts
    )


# --- on-chain facts feeding the ledger: stake deposits and escrow sales ---------------------------


#: How long a first wait allows: the module's indexer worker and beat may still be starting on a busy machine.
STARTING = 90


def reward_tokens(wallet: Pubkey, amount: int) -> list[Instruction]:
    """The platform mints reward tokens to a wallet's token account (made if missing)."""
    mint, payer = reward_mint(get_settings()), platform().pubkey()
    account = get_associated_token_address(wallet, mint, TOKEN_PROGRAM_ID)
    return [
        create_idempotent_associated_token_account(payer, wallet, mint, TOKEN_PROGRAM_ID),
        mint_to(MintToParams(TOKEN_PROGRAM_ID, mint, account, payer, amount)),
    ]


def pay(payer: Keypair, to: Pubkey, amount: int) -> list[Instruction]:
    """A ``transfer_checked`` of reward tokens to ``to``'s token account (made if missing, at the platform's cost)."""
    settings = get_settings()
    mint = reward_mint(settings)
    source, destination = (get_associated_token_address(w, mint, TOKEN_PROGRAM_ID) for w in (payer.pubkey(), to))
    return [
        create_idempotent_associated_token_account(platform().pubkey(), to, mint, TOKEN_PROGRAM_ID),
        transfer_checked(
            TransferCheckedParams(
                TOKEN_PROGRAM_ID, source, mint, destination, payer.pubkey(), amount, settings.reward_mint_decimals
            )
        ),
    ]


def stake(staker: Keypair, amount: int, terms: str) -> list[Instruction]:
    """What a wallet sends to stake: reward tokens into the staking vault, the terms in a memo."""
    return [*pay(staker, staking_vault_wallet(get_settings()), amount), memo(terms, staker.pubkey())]


def user_with_wallet(wallet: Pubkey) -> uuid.UUID:
    with transaction() as session:
        user = User(wallet_address=str(wallet))
        session.add(user)
        session.flush()
        return user.id


def deposit_of(signature: str) -> IndexedDeposit | None:
    with transaction() as session:
        return session.scalars(select(IndexedDeposit).where(IndexedDeposit.signature == signature)).one_or_none()


def booked_deposit(signature: str) -> IndexedDeposit | None:
    deposit = deposit_of(signature)
    return deposit if deposit is not None and deposit.status == "booked" else None


def positions_of(user: uuid.UUID) -> list[tuple[int, int, str, int]]:
    with transaction() as session:
        rows = session.scalars(select(StakingPosition).where(StakingPosition.user_id == user))
        return [(p.amount, p.rate_bps, p.rate_kind, p.lock_seconds) for p in rows]


def stake_balance(user: uuid.UUID) -> int:
    with transaction() as session:
        return balance(session, "stake", user)


def test_a_stake_deposit_opens_its_position_once_finalized_and_one_a_fork_drops_never_does(
    indexing: Indexing, paused: Any, books: None
) -> None:
    staker = Keypair()
    user = user_with_wallet(staker.pubkey())
    sent(reward_tokens(staker.pubkey(), 10_000), [platform()])
    control("roadie_advance", 1)
    kept = sent(stake(staker, 3_000, "roadie:stake:lock_days=30"), [platform(), staker])
    control("roadie_advance", 1)
    dropped = sent(stake(staker, 4_000, "roadie:stake:apr_bps=800"), [platform(), staker])
    control("roadie_advance", 1)  # both confirmed, neither finalized

    wait_until(lambda: deposit_of(kept) and deposit_of(dropped), "both deposits read at confirmed", STARTING)
    assert [(d.status, d.amount) for d in (deposit_of(kept), deposit_of(dropped)) if d] == [
        ("pending", 3_000), ("pending", 4_000),
    ]  # fmt: skip
    assert positions_of(user) == []  # not money yet
    assert stake_balance(user) == 0

    assert dropped in control("roadie_orphan", 1)["dropped"]
    wait_until(lambda: deposit_of(dropped) is None, "the dropped deposit forgotten")
    control("roadie_advance", 5)

    booked = wait_until(lambda: booked_deposit(kept), "the kept deposit booked")
    assert positions_of(user) == [(3_000, 1500, "apy", 30 * 86_400)]  # the product's 15 % APY: the memo named none
    assert stake_balance(user) == 3_000
    with transaction() as session:
        position = session.get_one(StakingPosition, booked.position_id)
        block_time = session.get_one(IndexedTransaction, kept).block_time
    assert position.started_at == block_time
    time.sleep(1)  # ticks later: still exactly one position, and the dropped deposit never came back
    assert positions_of(user) == [(3_000, 1500, "apy", 30 * 86_400)]
    assert deposit_of(dropped) is None


def test_a_stake_memo_that_does_not_parse_is_a_refused_deposit_for_an_admin_and_the_indexer_goes_on(
    indexing: Indexing, chain_running: Any, books: None
) -> None:
    staker, stranger = Keypair(), Keypair()
    user = user_with_wallet(staker.pubkey())
    confirmed([*reward_tokens(staker.pubkey(), 10_000), *reward_tokens(stranger.pubkey(), 10_000)], [platform()])

    odd = confirmed(stake(staker, 1_000, "roadie:stake:apy=15%"), [platform(), staker])
    unknown = confirmed(stake(stranger, 1_000, "roadie:stake"), [platform(), stranger])
    good = confirmed(stake(staker, 2_000, "roadie:stake:apy_bps=1200"), [platform(), staker])

    wait_until(lambda: booked_deposit(good), "the next deposit booked", STARTING)
    nobody = deposit_of(unknown)  # refused by the ledger once final: no user has that wallet
    assert nobody is not None
    assert (nobody.status, nobody.error_code, nobody.position_id) == ("refused", "unknown_wallet", None)
    refused = deposit_of(odd)
    assert refused is not None
    assert (refused.status, refused.error_code, refused.amount, refused.position_id) == (
        "refused", "invalid_memo", 1_000, None,
    )  # fmt: skip
    assert refused.error_message == "'apy=15%' is not apy_bps=, apr_bps= or lock_days= an integer"
    assert finalized(odd)  # the transaction is indexed (not poison); only its deposit waits for a person
    assert positions_of(user) == [(2_000, 1200, "apy", 0)]
    with transaction() as session:
        shown = store.overview(session, watched_addresses(get_settings()))
    assert {"fact": "stake_deposit", "signature": odd, "error_code": "invalid_memo",
            "error": refused.error_message} in shown["refused"]  # fmt: skip
    assert shown["stake_deposits"]["refused"] >= 1


def sale_of(signature: str) -> IndexedSale | None:
    with transaction() as session:
        return session.get(IndexedSale, signature)


def sales_recorded(signature: str) -> list[tuple[int, int, int, str]]:
    with transaction() as session:
        rows = session.scalars(select(Sale).where(Sale.signature == signature))
        return [(s.price, s.seller_fee_basis_points, s.royalty, s.source) for s in rows]


def settle(mint: Pubkey, buyer: Keypair, seller: Pubkey, price: int) -> list[Instruction]:
    """The escrow hands the NFT to the buyer while the buyer pays the seller: one transaction."""
    return [*nft_transfer(mint, escrow(), buyer.pubkey()), *pay(buyer, seller, price)]


def escrow() -> Keypair:
    return platform_keypair(get_settings()).derive(ESCROW_PURPOSE)


def test_an_escrow_sale_is_recorded_once_finalized_and_one_a_fork_drops_is_not(
    indexing: Indexing, paused: Any, books: None
) -> None:
    seller, buyer = Keypair(), Keypair()
    control("roadie_resume")
    mint, _ = mint_nft(seller.pubkey())  # the seller is the NFT's artist: the royalty is theirs
    listed = confirmed(nft_transfer(mint, seller, escrow().pubkey()), [platform(), seller])
    confirmed(reward_tokens(buyer.pubkey(), 50_000), [platform()])
    wait_until(lambda: finalized(listed), "the listing finalized", STARTING)
    control("roadie_pause")

    forked = sent(settle(mint, buyer, seller.pubkey(), 40_000), [platform(), escrow(), buyer])
    control("roadie_advance", 1)
    pending = wait_until(lambda: sale_of(forked), "the settlement read at confirmed")
    assert (pending.status, pending.price, pending.buyer, pending.seller) == (
        "pending", 40_000, str(buyer.pubkey()), str(seller.pubkey()),
    )  # fmt: skip
    assert owner_of(mint) == str(buyer.pubkey())
    assert sales_recorded(forked) == []  # not money yet

    assert forked in control("roadie_orphan", 1)["dropped"]
    wait_until(lambda: sale_of(forked) is None, "the dropped settlement forgotten")
    assert owner_of(mint) == str(escrow().pubkey())

    control("roadie_advance", 1)  # a new blockhash: the settlement signed again is another transaction
    settled = sent(settle(mint, buyer, seller.pubkey(), 40_000), [platform(), escrow(), buyer])
    assert settled != forked
    control("roadie_advance", 4)
    wait_until(lambda: (sale_of(settled) or pending).status == "booked", "the settlement booked")
    assert sales_recorded(settled) == [(40_000, 250, 1_000, "indexer")]
    assert sales_recorded(forked) == []
    assert owner_of(mint) == str(buyer.pubkey())
