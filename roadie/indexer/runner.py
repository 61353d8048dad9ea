"""The indexer's passes over the chain: a tick per watched address from its cursor, a backfill over a slot range.

A tick, for each watched address (one runner per address, by advisory lock):

1. pages ``getSignaturesForAddress`` newest to oldest until the cursor (the newest finalized signature read);
2. reads the new transactions oldest first with ``getTransaction`` at ``confirmed``, in batches; each batch's rows,
   their effects and the cursor's advance are one database transaction, so a crash repeats at most a batch,
   and repeating it changes nothing;
3. then re-checks the unfinalized tail with ``getSignatureStatuses``: gone or moved to another slot means a fork
   dropped it (the row is deleted and its effects undone); at or below the finalized slot means finalized.

The cursor only ever points at a finalized signature, which no fork can remove, so ``until`` always finds it.
A backfill reads finalized blocks one slot at a time; skipped slots (-32007, -32009) and slots not produced yet
(-32004) are counted and passed over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.core import RPCException
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcConfirmedTransactionStatusWithSignature
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import EncodedTransactionWithStatusMeta, UiConfirmedBlock, UiTransactionStatusMeta
from sqlalchemy import func, select

from models.music import Nft
from roadie.chain.client import Chain, RpcUnavailable, connect
from roadie.chain.platform import escrow_wallet, platform_keypair, staking_vault, treasury
from roadie.chain.token import ACCOUNT_SIZE
from roadie.db import advisory_lock_key, autocommit, transaction
from roadie.indexer import store
from roadie.indexer.decode import (
    TOKEN_PROGRAMS,
    DecodedTransaction,
    DecodeError,
    Event,
    Watch,
    decode,
    parse,
    transfer_mints,
)
from roadie.jobs.errors import TransientError
from roadie.retrying import rpc_error_code
from roadie.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: getBlock errors that mean "no block in this slot": not produced yet, skipped, skipped long ago.
NO_BLOCK_CODES = {-32004: "unavailable", -32007: "skipped", -32009: "skipped"}
#: A token account's base layout: mint 0..32, owner 32..64 (the same in Token-2022).
_OWNER = slice(32, 64)


@dataclass
class Report:
    """What one pass did (the result a backfill job shows, and the tick's log line)."""

    addresses: int = 0
    read: int = 0
    poison: int = 0
    finalized: int = 0
    forked: list[str] = field(default_factory=list)
    skipped_slots: int = 0
    unavailable_slots: int = 0
    busy: int = 0
    lag_slots: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Parsed:
    """A transaction read from the RPC, not decoded yet."""

    slot: int
    block_time: int | None
    signature: str
    tx: VersionedTransaction
    meta: UiTransactionStatusMeta | None


@contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """A session advisory lock held for the block (True) or already held by another runner (False).

    Held on a connection of its own, so the batches' transactions commit while it is held; a runner that dies
    loses its connection and with it the lock.
    """
    with autocommit() as connection:
        key = advisory_lock_key("roadie-indexer", name)
        held = bool(connection.execute(select(func.pg_try_advisory_lock(key))).scalar_one())
        try:
            yield held
        finally:
            if held:
                connection.execute(select(func.pg_advisory_unlock(key)))


def watch(settings: Settings) -> Watch:
    """The platform keypair is the mint authority; payouts leave its token account of the reward mint and stakes
    go into the staking vault's (under whichever token program owns that mint); the escrow settles sales."""
    return Watch(
        platform_keypair(settings).pubkey,
        frozenset(treasury(settings, program) for program in TOKEN_PROGRAMS),
        frozenset(staking_vault(settings, program) for program in TOKEN_PROGRAMS),
        frozenset([escrow_wallet(settings)]),
    )


def watched_addresses(settings: Settings) -> list[str]:
    """The platform (mint authority and treasury owner), the staking vault's token accounts, the escrow,
    configured programs/addresses, and our NFTs' mints."""
    vaults = [str(staking_vault(settings, program)) for program in sorted(TOKEN_PROGRAMS, key=str)]
    addresses = [
        str(platform_keypair(settings).pubkey),
        *vaults,
        str(escrow_wallet(settings)),
        *settings.indexer_watch_addresses,
    ]
    if settings.indexer_watch_nft_mints:
        with transaction() as session:
            mints = session.scalars(
                select(Nft.mint_address).where(Nft.mint_address.is_not(None)).order_by(Nft.created_at)
            )
            addresses += [mint for mint in mints if mint is not None]
    return list(dict.fromkeys(addresses))


async def chain_slot(chain: Chain, commitment: Any) -> int:
    return (await chain.call("getSlot", lambda c: c.get_slot(commitment))).value


class Indexer:
    """The passes, each over one RPC endpoint (:meth:`Chain.consistent`), with the settings in force."""

    def __init__(self, chain: Chain, settings: Settings) -> None:
        self.chain, self.settings = chain, settings
        self.watch = watch(settings)
        self.fetching = asyncio.Semaphore(settings.indexer_fetch_concurrency)

    # --- the tick --------------------------------------------------------------------------------

    async def tick(self) -> Report:
        self.chain = self.chain.consistent()  # one endpoint per tick: the cursor, the lists and the reads agree
        report = Report()
        addresses = watched_addresses(self.settings)
        finalized_slot = await chain_slot(self.chain, Finalized)
        for address in addresses:
            with exclusive(f"address:{address}") as held:
                if not held:
                    report.busy += 1
                    continue
                await self.index_address(address, finalized_slot, report)
                report.addresses += 1
        with exclusive("tail") as held:
            if held:
                await self.reconcile(report)
        report.lag_slots = await self.lag(addresses)
        return report

    async def signatures(self, address: str, until: str | None) -> list[RpcConfirmedTransactionStatusWithSignature]:
        """Every signature of the address newer than ``until``, oldest first."""
        pubkey, stop = Pubkey.from_string(address), Signature.from_string(until) if until else None
        found: list[RpcConfirmedTransactionStatusWithSignature] = []
        before: Signature | None = None
        while True:
            request = partial(
                AsyncClient.get_signatures_for_address, account=pubkey, before=before, until=stop,
                limit=self.settings.indexer_page_size, commitment=Confirmed,
            )  # fmt: skip
            page = (await self.chain.call("getSignaturesForAddress", request)).value
            found += page
            if len(page) < self.settings.indexer_page_size:
                break
            before = page[-1].signature
        found.reverse()
        return found

    async def index_address(self, address: str, finalized_slot: int, report: Report) -> None:
        """Read the address's new transactions in batches; the next batch is fetched while one is written."""
        with transaction() as session:
            cursor = store.cursor(session, address)
            until = cursor.signature if cursor else None
        head = await chain_slot(self.chain, Confirmed)
        infos = await self.signatures(address, until)
        size = self.settings.indexer_batch_size
        batches = [infos[start : start + size] for start in range(0, len(infos), size)]
        if not batches:
            with transaction() as session:
                store.advance(session, address, head_slot=head)
            return
        upcoming = asyncio.create_task(self.prepare(batches[0], finalized_slot))
        try:
            for number, batch in enumerate(batches):
                reads = await upcoming
                if number + 1 < len(batches):
                    upcoming = asyncio.create_task(self.prepare(batches[number + 1], finalized_slot))
                last = number + 1 == len(batches)
                inserted = await asyncio.to_thread(
                    self.commit, address, batch, reads, finalized_slot, head if last else None, self.settings
                )
                report.read += len(inserted)
                report.poison += sum(1 for read in reads if read.error is not None and read.signature in inserted)
        finally:
            upcoming.cancel()

    async def prepare(
        self, batch: Sequence[RpcConfirmedTransactionStatusWithSignature], finalized_slot: int
    ) -> list[store.Read]:
        """The batch's transactions not indexed yet, fetched and decoded."""
        with transaction() as session:
            seen = store.known(session, [str(info.signature) for info in batch])
        return await self.read([info for info in batch if str(info.signature) not in seen], finalized_slot)

    @staticmethod
    def commit(
        address: str,
        batch: Sequence[RpcConfirmedTransactionStatusWithSignature],
        reads: Sequence[store.Read],
        finalized_slot: int,
        head: int | None,
        settings: Settings,
    ) -> list[str]:
        """One database transaction: the batch's rows, events and effects, and the cursor past its finalized part."""
        final = [info for info in batch if info.slot <= finalized_slot]
        with transaction() as session:
            inserted = store.record(session, reads, finalized_slot, settings)
            store.advance(
                session, address,
                signature=str(final[-1].signature) if final else None, slot=final[-1].slot if final else None,
                head_slot=head,
            )  # fmt: skip
        return inserted

    async def read(
        self, infos: Sequence[RpcConfirmedTransactionStatusWithSignature], finalized_slot: int
    ) -> list[store.Read]:
        """The transactions, fetched concurrently and decoded; kept in the order given (oldest first)."""
        fetched = await asyncio.gather(*(self.fetch(info) for info in infos))
        parsed: list[Parsed] = []
        reads: dict[str, store.Read] = {}
        for info, value in zip(infos, fetched, strict=True):
            signature = str(info.signature)
            if isinstance(value, store.Read):
                reads[signature] = value
                continue
            if value is None:
                if info.slot <= finalized_slot:  # finalized yet not served: the node is behind; try again later
                    raise TransientError(f"getTransaction has no finalized transaction {signature}", code="rpc_behind")
                continue  # dropped by a fork since it was listed
            try:
                tx, meta = parse(value.transaction, signature)
            except DecodeError as exc:
                reads[signature] = store.Read(signature, value.slot, value.block_time, None, str(exc))
                continue
            parsed.append(Parsed(value.slot, value.block_time, signature, tx, meta))
        for read in await self.decode_all(parsed):
            reads[read.signature] = read
        return [reads[str(info.signature)] for info in infos if str(info.signature) in reads]

    async def fetch(self, info: RpcConfirmedTransactionStatusWithSignature) -> Any:
        """The transaction at ``confirmed``; one that failed on chain changed nothing and is not fetched."""
        signature = str(info.signature)
        if info.err is not None:
            return store.Read(signature, info.slot, info.block_time, DecodedTransaction(signature, succeeded=False))
        request = partial(
            AsyncClient.get_transaction, tx_sig=info.signature, encoding="base64", commitment=Confirmed,
            max_supported_transaction_version=0,
        )  # fmt: skip
        async with self.fetching:
            return (await self.chain.call("getTransaction", request)).value

    async def decode_all(self, parsed: Sequence[Parsed]) -> list[store.Read]:
        """Decode with the batch's own NFT mints known, then look up receivers the transactions do not name."""
        candidates = set().union(*(transfer_mints(item.tx) for item in parsed))
        with transaction() as session:
            ours = replace(self.watch, nft_mints=store.our_nft_mints(session, candidates))
        reads = []
        for item in parsed:
            try:
                decoded, error = decode(item.signature, item.tx, item.meta, ours), None
            except DecodeError as exc:
                decoded, error = None, str(exc)
            reads.append(store.Read(item.signature, item.slot, item.block_time, decoded, error))
        return await self.resolve_owners(reads)

    async def resolve_owners(self, reads: list[store.Read]) -> list[store.Read]:
        """Fill in the wallet behind a receiving token account from the account itself (at ``confirmed``)."""
        missing = sorted(
            {
                event.destination
                for read in reads if read.decoded
                for event in read.decoded.events
                if event.owner is None and event.destination and event.kind != "memo"
            }
        )  # fmt: skip
        if not missing:
            return reads
        accounts = await self.chain.accounts([Pubkey.from_string(address) for address in missing])
        owners = {
            address: str(Pubkey.from_bytes(bytes(account.data)[_OWNER]))
            for address, account in zip(missing, accounts, strict=True)
            if account is not None and account.owner in TOKEN_PROGRAMS and len(account.data) >= ACCOUNT_SIZE
        }

        def filled(event: Event) -> Event:
            owner = owners.get(event.destination or "") if event.owner is None else event.owner
            return replace(event, owner=owner)

        return [
            replace(read, decoded=replace(read.decoded, events=[filled(e) for e in read.decoded.events]))
            if read.decoded
            else read
            for read in reads
        ]

    # --- the unfinalized tail --------------------------------------------------------------------

    async def reconcile(self, report: Report) -> None:
        """Finalize what the cluster rooted; delete (and undo) what a fork dropped."""
        with transaction() as session:
            tail = store.unfinalized(session, self.settings.indexer_finality_check_limit)
        if not tail:
            return
        finalized_slot = await chain_slot(self.chain, Finalized)  # first: a status read later is at least as new
        statuses = await self.chain.statuses([Signature.from_string(signature) for signature, _ in tail])
        gone, rooted = [], []
        for (signature, slot), status in zip(tail, statuses, strict=True):
            if status is None or status.slot != slot:
                gone.append(signature)
            elif slot <= finalized_slot:
                rooted.append(signature)
        with transaction() as session:
            report.forked += store.remove(session, gone)
            report.finalized += len(store.finalize(session, rooted, self.settings))

    async def lag(self, addresses: Sequence[str]) -> int | None:
        """Chain slot (confirmed) minus the slot every watched address is read up to."""
        with transaction() as session:
            indexed = store.indexed_slot(session, addresses)
        if indexed is None:
            return None
        return max(0, await chain_slot(self.chain, Confirmed) - indexed)

    # --- backfill --------------------------------------------------------------------------------

    async def backfill(self, start_slot: int, end_slot: int, progress: Any = None) -> Report:
        """Read the finalized blocks of a slot range for transactions touching the watched addresses."""
        with exclusive("backfill") as held:
            if not held:
                raise TransientError("another backfill is running", code="backfill_busy")
            return await self._backfill(start_slot, end_slot, progress)

    async def _backfill(self, start_slot: int, end_slot: int, progress: Any) -> Report:
        self.chain = self.chain.consistent()  # one endpoint: a lagging one would call finalized slots unavailable
        report = Report()
        addresses = {Pubkey.from_string(address) for address in watched_addresses(self.settings)}
        report.addresses = len(addresses)
        finalized_slot = await chain_slot(self.chain, Finalized)
        step = self.settings.indexer_batch_size
        for first in range(start_slot, end_slot + 1, step):
            slots = range(first, min(first + step, end_slot + 1))
            blocks = await asyncio.gather(*(self.block(slot, report) for slot in slots))
            parsed = [
                item
                for slot, block in zip(slots, blocks, strict=True)
                if block is not None
                for encoded in block.transactions or []
                if (item := self._ours(slot, block, encoded, addresses)) is not None
            ]
            reads = await self.decode_all(parsed)
            reads.sort(key=lambda read: read.slot)  # stable: block order within a slot
            with transaction() as session:
                inserted = store.record(session, reads, finalized_slot, self.settings)
            report.read += len(inserted)
            report.poison += sum(1 for read in reads if read.error is not None and read.signature in inserted)
            if progress is not None:
                progress(int(100 * (slots[-1] - start_slot + 1) / (end_slot - start_slot + 1)), f"slot {slots[-1]}")
        return report

    async def block(self, slot: int, report: Report) -> UiConfirmedBlock | None:
        """The finalized block of a slot, or None (counted) when the slot has none."""

        async def request(client: AsyncClient) -> UiConfirmedBlock | None:
            try:
                return (await client.get_block(slot, "base64", max_supported_transaction_version=0)).value
            except RPCException as exc:
                reason = NO_BLOCK_CODES.get(rpc_error_code(exc) or 0)
                if reason is None:
                    raise
                if reason == "skipped":
                    report.skipped_slots += 1
                else:
                    report.unavailable_slots += 1
                return None

        async with self.fetching:
            return await self.chain.call("getBlock", request)

    @staticmethod
    def _ours(
        slot: int, block: UiConfirmedBlock, encoded: EncodedTransactionWithStatusMeta, addresses: set[Pubkey]
    ) -> Parsed | None:
        """A block's transaction if it names a watched address (statically or through loaded addresses)."""
        try:
            tx, meta = parse(encoded)
        except DecodeError as exc:  # no signature to key a poison row by, nor a way to tell whose it is
            log.warning("indexer.unreadable_block_transaction", extra={"slot": slot, "error": str(exc)})
            return None
        keys = set(tx.message.account_keys)
        if meta is not None and meta.loaded_addresses is not None:
            keys.update(meta.loaded_addresses.writable, meta.loaded_addresses.readonly)
        if addresses.isdisjoint(keys):
            return None
        return Parsed(slot, block.block_time, str(tx.signatures[0]), tx, meta)


async def status(settings: Settings | None = None) -> dict[str, Any]:
    """What ``roadie indexer status`` prints: per-address cursors, the tail, poison rows and the lag.

    It asks the chain once, without retries: an unreachable chain is part of the answer, not an error.
    """
    settings = settings or get_settings()
    addresses = watched_addresses(settings)
    chain_head: int | None = None
    finalized_slot: int | None = None
    chain_error: str | None = None
    try:
        async with connect(settings.model_copy(update={"solana_rpc_attempts": 1})) as chain:
            chain_head, finalized_slot = await chain_slot(chain, Confirmed), await chain_slot(chain, Finalized)
    except RpcUnavailable as exc:
        chain_error = f"unreachable ({len(settings.solana_rpc_urls)} RPC endpoint(s)): {exc}"
    with transaction() as session:
        overview = store.overview(session, addresses)
    indexed = overview["indexed_slot"]
    return {
        "chain_slot": chain_head,
        "finalized_slot": finalized_slot,
        "lag_slots": None if indexed is None or chain_head is None else max(0, chain_head - indexed),
        **({"chain_error": chain_error} if chain_error else {}),
        **overview,
    }
