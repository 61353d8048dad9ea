"""Minting a track's NFT with Token-2022, exactly once.

One transaction, signed by the platform (payer, authorities) and the mint: its compute budget and priority
fee (:mod:`roadie.chain.budget`), create the mint account,
MetadataPointer (to itself), InitializeMint2 (0 decimals), TokenMetadata (name, symbol, ``ipfs://``
+ the metadata CID) with the fields artist, isrc and track_id, the owner's associated token account,
MintTo 1, then the mint authority removed (the supply is fixed at one).

The mint keypair is derived from the platform keypair and the track id, so it is never stored, and
a track can never get two mints: a rebuilt transaction creates the same account or fails. The send
follows :mod:`roadie.chain.journal`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from solana.rpc.async_api import AsyncClient
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.state import Mint
from solders.transaction import VersionedTransaction
from spl.token.constants import TOKEN_2022_PROGRAM_ID
from spl.token.instructions import (
    AuthorityType,
    MintToParams,
    SetAuthorityParams,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to,
    set_authority,
)
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.chain import ChainSend
from models.music import Nft, Track, TrackFile, User, UserWallet, Wallet
from roadie.chain import journal
from roadie.chain.addresses import SolanaWallet, utf8_at_most, why_not_a_wallet
from roadie.chain.budget import SimulationFailed, sign_budgeted
from roadie.chain.client import Chain
from roadie.chain.journal import Pending, Verdict, crash_point
from roadie.chain.keys import PlatformKeypair
from roadie.chain.metrics import observe_fee
from roadie.chain.token import (
    MAX_FIELD_VALUE_BYTES,
    MAX_NAME_BYTES,
    MAX_SYMBOL_BYTES,
    MAX_URI_BYTES,
    TokenMetadata,
    create_mint_account,
    initialize_metadata_pointer,
    initialize_mint2,
    initialize_token_metadata,
    mint_account_space,
    read_metadata,
    update_metadata_field,
)
from roadie.db import transaction
from roadie.jobs.errors import PermanentError, TransientError
from roadie.settings import Settings

#: Decide-send-follow rounds in one attempt (a round ends early when a transaction expired).
ROUNDS = 3


class MintPayload(BaseModel):
    """Mint the track's NFT to the artist's wallet (or ``owner``), with ``uri`` = ipfs:// + its metadata CID."""

    model_config = ConfigDict(extra="forbid")

    track_id: uuid.UUID
    owner: SolanaWallet | None = Field(default=None, description="Mint to this wallet instead of the artist's.")
    name: Annotated[str, Field(min_length=1), utf8_at_most(MAX_NAME_BYTES)] | None = Field(
        default=None, description="On-chain name; default: the track title, cut to 32 bytes."
    )
    symbol: Annotated[str, Field(min_length=1), utf8_at_most(MAX_SYMBOL_BYTES)] | None = Field(
        default=None, description="On-chain symbol; default: ROADIE_NFT_SYMBOL."
    )


def mint_keypair(platform: PlatformKeypair, track_id: uuid.UUID) -> Keypair:
    return platform.derive(f"roadie/nft-mint/{track_id}")


def truncate_utf8(text: str, limit: int) -> str:
    """Cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    return text.encode()[:limit].decode(errors="ignore")


@dataclass(frozen=True)
class MintOrder:
    """Everything the transaction needs, read from the database."""

    track_id: uuid.UUID
    artist_id: uuid.UUID
    owner: Pubkey
    metadata: TokenMetadata


def _artist_wallet(session: Session, artist: User) -> str | None:
    linked = session.scalars(
        select(Wallet.address)
        .join(UserWallet, UserWallet.wallet_id == Wallet.id)
        .where(UserWallet.user_id == artist.id, Wallet.chain == "solana")
        .order_by(Wallet.is_primary.desc(), Wallet.created_at)
        .limit(1)
    ).first()
    return linked or artist.wallet_address


def load_order(session: Session, payload: MintPayload, platform: PlatformKeypair, settings: Settings) -> MintOrder:
    track = session.get(Track, payload.track_id)
    if track is None:
        raise PermanentError(f"no track {payload.track_id}", code="track_not_found")
    pinned = session.scalars(
        select(TrackFile.cid).where(
            TrackFile.track_id == track.id, TrackFile.kind == "metadata", TrackFile.pin_state == "pinned"
        )
    ).first()
    if pinned is None:
        raise PermanentError("the track's metadata JSON is not pinned to IPFS yet", code="metadata_not_pinned")
    uri = f"ipfs://{pinned}"
    if len(uri.encode()) > MAX_URI_BYTES:
        raise PermanentError(f"metadata URI is longer than {MAX_URI_BYTES} bytes", code="metadata_too_large")
    artist = session.get(User, track.artist_id)
    assert artist is not None  # a foreign key
    owner = payload.owner or _artist_wallet(session, artist)
    if owner is None:
        raise PermanentError("the track's artist has no Solana wallet", code="artist_wallet_missing")
    problem = why_not_a_wallet(owner)
    if problem:
        raise PermanentError(f"the NFT's owner {owner!r} is {problem}", code="invalid_wallet")
    owner_key = Pubkey.from_string(owner)
    fields = {"artist": truncate_utf8(artist.username or str(owner_key), MAX_FIELD_VALUE_BYTES)}
    if track.isrc:
        fields["isrc"] = track.isrc
    fields["track_id"] = str(track.id)
    metadata = TokenMetadata(
        update_authority=platform.pubkey,
        mint=mint_keypair(platform, track.id).pubkey(),
        name=payload.name or truncate_utf8(track.title, MAX_NAME_BYTES),
        symbol=payload.symbol or settings.nft_symbol,
        uri=uri,
        additional=fields,
    )
    return MintOrder(track.id, track.artist_id, owner_key, metadata)


def mint_instructions(payer: Pubkey, owner: Pubkey, metadata: TokenMetadata, lamports: int) -> list[Instruction]:
    mint = metadata.mint
    space, _ = mint_account_space(metadata)
    token_account = get_associated_token_address(owner, mint, TOKEN_2022_PROGRAM_ID)
    return [
        create_mint_account(payer, mint, space, lamports, TOKEN_2022_PROGRAM_ID),
        initialize_metadata_pointer(mint, payer, mint),
        initialize_mint2(mint, 0, payer, TOKEN_2022_PROGRAM_ID),
        initialize_token_metadata(mint, payer, payer, metadata.name, metadata.symbol, metadata.uri),
        *(update_metadata_field(mint, payer, key, value) for key, value in metadata.additional.items()),
        create_idempotent_associated_token_account(payer, owner, mint, TOKEN_2022_PROGRAM_ID),
        mint_to(MintToParams(TOKEN_2022_PROGRAM_ID, mint, token_account, payer, 1)),
        set_authority(SetAuthorityParams(TOKEN_2022_PROGRAM_ID, mint, AuthorityType.MINT_TOKENS, payer)),
    ]


@dataclass(frozen=True)
class MintedNft:
    """A mint read back from chain."""

    supply: int
    mint_authority: Pubkey | None
    metadata: TokenMetadata | None


async def read_mint(chain: Chain, mint: Pubkey) -> MintedNft | None:
    account = await chain.account(mint)
    if account is None or account.owner != TOKEN_2022_PROGRAM_ID:
        return None
    data = bytes(account.data)
    base = Mint.from_bytes(data[:82])
    return MintedNft(base.supply, base.mint_authority, read_metadata(data))


def _nft(session: Session, order: MintOrder) -> Nft:
    """The track's NFT row, created on first use (read, not locked: decisions are re-checked under the lock)."""
    session.execute(
        insert(Nft)
        .values(
            track_id=order.track_id,
            creator_id=order.artist_id,
            owner_wallet=str(order.owner),
            mint_address=str(order.metadata.mint),
            metadata_uri=order.metadata.uri,
            status="pending",
        )
        .on_conflict_do_nothing(index_elements=[Nft.track_id])
    )
    return session.scalars(select(Nft).where(Nft.track_id == order.track_id)).one()


Version = tuple[int, str, str | None]


def _version(session: Session, nft: Nft) -> Version:
    """What a decision rests on: how many transactions were journaled, and the row's status and signature.

    Every step that changes what a worker would decide (journaling, adopting, recording a verdict,
    failing) changes one of these, so a decision taken on a stale read is caught under the lock."""
    sends = session.scalar(select(func.count()).select_from(ChainSend).where(ChainSend.nft_id == nft.id))
    return int(sends or 0), nft.status, nft.signature


@dataclass(frozen=True)
class Seen:
    """The NFT row as one short transaction read it; the chain is asked about it with no transaction open."""

    nft_id: uuid.UUID
    version: Version
    live: Pending | None  # the newest journaled transaction that may still land
    result: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.version[1] == "finalized"


def _read(payload: MintPayload, platform: PlatformKeypair, settings: Settings) -> tuple[MintOrder, Seen]:
    with transaction() as session:
        order = load_order(session, payload, platform, settings)
        nft = _nft(session, order)
        live = session.scalars(
            select(ChainSend)
            .where(ChainSend.nft_id == nft.id, ChainSend.status.in_(("pending", "confirmed")))
            .order_by(ChainSend.created_at.desc())
            .limit(1)
        ).first()
        seen = Seen(nft.id, _version(session, nft), Pending.of(live) if live else None, _result(nft))
        return order, seen


def _if_unchanged(session: Session, seen: Seen) -> Nft | None:
    """The NFT row locked, if it is still as ``seen`` (None: another worker moved it on since)."""
    nft = session.get_one(Nft, seen.nft_id, with_for_update=True)
    return nft if _version(session, nft) == seen.version else None


def _settle_live(session: Session, seen: Seen, settled: Verdict | None) -> None:
    """Record that the transaction ``seen`` in flight can never land (expired, or failed on chain)."""
    if seen.live is not None and settled is not None:
        send = session.get_one(ChainSend, seen.live.id)
        send.status, send.error = settled.state, settled.error


def _record(nft: Nft, send: ChainSend | None, verdict: Verdict, signature: str | None = None) -> None:
    """Write what the chain says (confirmed or finalized; processed changes nothing)."""
    if verdict.level not in ("confirmed", "finalized"):
        return
    if send is not None:
        send.status, send.slot = verdict.level, verdict.slot
        if verdict.fee is not None:
            send.fee_lamports = verdict.fee
    nft.status, nft.slot = verdict.level, verdict.slot
    nft.signature = signature or (send.signature if send else nft.signature)


def _result(nft: Nft) -> dict[str, Any]:
    return {
        "track_id": str(nft.track_id),
        "mint": nft.mint_address,
        "owner": nft.owner_wallet,
        "uri": nft.metadata_uri,
        "signature": nft.signature,
        "slot": nft.slot,
        "status": nft.status,
    }


async def _decide(
    chain: Chain, order: MintOrder, seen: Seen, platform: PlatformKeypair, settings: Settings
) -> tuple[Pending | None, str]:
    """Asks the chain with no database transaction open. Returns the transaction to follow and what to do
    with it first: ``send`` a newly journaled one, ``resend`` one in flight, or just ``follow`` one that
    landed; or None and ``adopted`` (the mint exists: finished) or ``again`` (another worker moved the row
    on since it was read: read it again)."""
    settled: Verdict | None = None
    if seen.live is not None:
        (verdict,) = await journal.check(chain, [seen.live])
        if verdict.state in ("landed", "in_flight"):
            _note(seen.nft_id, seen.live, verdict)
            return seen.live, "follow" if verdict.state == "landed" else "resend"
        settled = verdict  # expired or failed: it can never land
        existing = await _existing_mint(chain, order.metadata.mint)
        if existing is not None:
            return None, "adopted" if _adopt(seen, settled, *existing) else "again"
    # Nothing in flight can land any more, and the chain has no mint: build (or rebuild) the transaction.
    blockhash, last_valid = await chain.latest_blockhash()
    _, funded = mint_account_space(order.metadata)
    lamports = await chain.rent_exempt_minimum(funded)
    instructions = mint_instructions(platform.pubkey, order.owner, order.metadata, lamports)
    signers = [platform.signer, mint_keypair(platform, order.track_id)]
    try:
        tx = await sign_budgeted(chain, instructions, signers, blockhash, settings)
    except SimulationFailed:
        # Another worker's transaction may have made the mint since the row was read: adopt or follow it.
        existing = await _existing_mint(chain, order.metadata.mint)
        if existing is not None:
            return None, "adopted" if _adopt(seen, settled, *existing) else "again"
        if not _fail(seen, settled):
            return None, "again"
        raise
    pending = _journal(seen, settled, tx, last_valid)
    return (pending, "send") if pending is not None else (None, "again")


def _fail(seen: Seen, settled: Verdict | None) -> bool:
    """Mark the NFT failed (nothing was journaled for it), if no other worker moved the row on meanwhile."""
    with transaction() as session:
        nft = _if_unchanged(session, seen)
        if nft is None:
            return False
        _settle_live(session, seen, settled)
        nft.status = "failed"
        return True


def _journal(seen: Seen, settled: Verdict | None, tx: VersionedTransaction, last_valid: int) -> Pending | None:
    """Commit the signed transaction before it is sent, if no other worker moved the row on meanwhile."""
    with transaction() as session:
        nft = _if_unchanged(session, seen)
        if nft is None:
            return None
        _settle_live(session, seen, settled)
        send = journal.journal("nft_mint", tx, last_valid, nft_id=nft.id)
        session.add(send)
        session.flush()
        nft.status, nft.signature, nft.slot = "submitted", send.signature, None
        return Pending.of(send)


def _note(nft_id: uuid.UUID, pending: Pending, verdict: Verdict) -> None:
    """Record what the chain says of a transaction that landed or may still land, unless it was settled since."""
    with transaction() as session:
        nft, send = _locked(session, nft_id, pending.id)
        if send.status not in ("pending", "confirmed"):
            return
        if verdict.state == "in_flight":  # unknown, still valid (perhaps dropped by a fork): it is sent again
            send.status, nft.status = "pending", "submitted"
        else:
            _record(nft, send, verdict)


async def _existing_mint(chain: Chain, mint: Pubkey) -> tuple[Verdict, str] | None:
    """If the mint exists though no journaled transaction landed: the transaction that made it."""
    if await chain.account(mint) is None:
        return None

    async def history(client: AsyncClient) -> Any:
        return await client.get_signatures_for_address(mint, limit=1000)

    entries = (await chain.call("getSignaturesForAddress", history)).value
    if not entries:
        raise TransientError("the mint exists but its transaction is not visible yet", code="mint_unconfirmed")
    first = entries[-1]
    level = str(first.confirmation_status).rsplit(".", 1)[-1].lower() if first.confirmation_status else "confirmed"
    return Verdict("landed", level, first.slot), str(first.signature)


def _adopt(seen: Seen, settled: Verdict | None, verdict: Verdict, signature: str) -> bool:
    """Record the transaction that made the mint, if no other worker moved the row on meanwhile."""
    with transaction() as session:
        nft = _if_unchanged(session, seen)
        if nft is None:
            return False
        _settle_live(session, seen, settled)
        _record(nft, None, verdict, signature)
        return True


async def mint_nft(chain: Chain, payload: MintPayload, platform: PlatformKeypair, settings: Settings) -> dict[str, Any]:
    """Mint the track's NFT (or finish minting it) and follow it to finalized; the NFT row as the result.

    No row lock is held while the chain is asked: each round reads the row, asks the chain, then writes
    in a short transaction that first checks the row is still as it was read."""
    for _ in range(ROUNDS):
        order, seen = _read(payload, platform, settings)
        if seen.finished:
            return seen.result
        pending, action = await _decide(chain, order, seen, platform, settings)
        if pending is None:
            if action == "adopted":
                return _read(payload, platform, settings)[1].result
            continue
        if action == "send":
            crash_point("before_send")
        if action in ("send", "resend"):
            refused = await journal.send_all(chain, [pending])
            crash_point("after_send")
            if refused:
                await _refused(chain, seen.nft_id, order.metadata.mint, pending, refused[pending.id])
                continue
        (verdict,) = await journal.follow(chain, [pending], "confirmed", settings)
        if verdict.settled:
            continue  # expired or failed: the next round decides again
        if not verdict.reached("confirmed"):
            raise TransientError("the mint transaction is not confirmed yet", code="mint_unconfirmed")
        _store(seen.nft_id, pending, verdict)
        crash_point("after_confirm")
        (verdict,) = await journal.follow(chain, [pending], "finalized", settings)
        if verdict.reached("finalized"):
            return _store(seen.nft_id, pending, verdict)
        if not verdict.settled and verdict.state != "in_flight":
            raise TransientError("the mint transaction is not finalized yet", code="mint_unfinalized")
    raise TransientError("the mint transaction expired repeatedly", code="mint_unconfirmed")


def _locked(session: Session, nft_id: uuid.UUID, send_id: uuid.UUID) -> tuple[Nft, ChainSend]:
    nft = session.get_one(Nft, nft_id, with_for_update=True)
    return nft, session.get_one(ChainSend, send_id, with_for_update=True)


def _store(nft_id: uuid.UUID, pending: Pending, verdict: Verdict) -> dict[str, Any]:
    fee: int | None = None
    with transaction() as session:
        nft, send = _locked(session, nft_id, pending.id)
        if send.status != "finalized":  # a concurrent duplicate may have recorded it already
            _record(nft, send, verdict)
            if nft.status == "finalized":
                session.flush()
                fee = session.scalar(select(func.sum(ChainSend.fee_lamports)).where(ChainSend.nft_id == nft.id))
        result = _result(nft)
    if fee is not None:
        observe_fee("nft_mint", int(fee))
    return result


async def _refused(chain: Chain, nft_id: uuid.UUID, mint: Pubkey, pending: Pending, reason: str) -> None:
    """Preflight refused the transaction: fine if the mint exists (the next round adopts it), else a failure."""
    if await chain.account(mint) is not None:
        return
    with transaction() as session:
        nft, send = _locked(session, nft_id, pending.id)
        if send.status != "pending":  # another worker saw it land meanwhile: the next round follows it
            return
        send.status, send.error, nft.status = "failed", reason, "failed"
    raise PermanentError(f"the mint transaction was refused: {reason}", code="mint_rejected")
