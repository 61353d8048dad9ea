"""Royalties: a sale's royalty is split among the NFT's creators when the sale is recorded, and each
royalty period moves the parts of the sales recorded before its end into the creators' royalties accounts.

The royalty is ``floor(price * seller_fee_basis_points / 10000)`` (the fraction stays with the seller);
the creators' parts follow their integer shares (summing to 100) by largest remainder, so they add up to
the royalty exactly. The database re-checks both (a CHECK and a deferred trigger).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.ledger import LedgerRun, Sale, SaleCreator
from models.music import Nft, NftCollection
from roadie.jobs.errors import PermanentError
from roadie.ledger import money
from roadie.ledger.books import credit_users
from roadie.settings import Settings

#: The seeds' ``royaltyPercent @default(2.5)``, as the collections' ``seller_fee_basis_points`` default.
DEFAULT_SELLER_FEE_BPS = 250

DISTRIBUTE = """
WITH batch AS (
    UPDATE sales SET run_id = :run_id WHERE run_id IS NULL AND recorded_at < :period_end RETURNING id, royalty
),
parts AS (
    SELECT c.user_id, sum(c.amount) AS amount
    FROM sale_creators AS c JOIN batch AS b ON b.id = c.sale_id
    GROUP BY c.user_id
    HAVING sum(c.amount) > 0
),
stored AS (INSERT INTO royalty_parts (user_id, amount) SELECT user_id, amount FROM parts RETURNING amount)
SELECT (SELECT count(*) FROM batch), (SELECT COALESCE(sum(royalty), 0) FROM batch)
"""


@dataclass(frozen=True)
class SaleInput:
    signature: str
    nft_id: uuid.UUID
    price: int
    seller_fee_basis_points: int
    sold_at: dt.datetime
    #: (user id, share in percent); None: the NFT's creator takes 100.
    creators: list[tuple[uuid.UUID, int]] | None = None


def seller_fee_basis_points(session: Session, nft: Nft) -> int:
    """The royalty an NFT's sales pay: its collection's, or the product's default of 2.5 %."""
    if nft.collection_id is not None:
        return session.get_one(NftCollection, nft.collection_id).seller_fee_basis_points
    return DEFAULT_SELLER_FEE_BPS


def record_sale(session: Session, sale: SaleInput, source: str, now: dt.datetime) -> tuple[Sale, bool]:
    """Store a sale once per signature, with each creator's part; returns it and whether it is new.

    Called by ``POST /v1/sales`` and by the indexer inside its own transaction.
    """
    existing = session.scalar(select(Sale).where(Sale.signature == sale.signature))
    if existing is not None:
        return existing, False
    nft = session.get(Nft, sale.nft_id)
    if nft is None:
        raise PermanentError(f"no NFT {sale.nft_id}", code="unknown_nft")
    creators = sale.creators or [(nft.creator_id, 100)]
    if sum(share for _, share in creators) != 100 or len({user for user, _ in creators}) != len(creators):
        raise PermanentError("creator shares must be distinct users whose shares sum to 100", code="invalid_shares")
    known = set(session.scalars(text("SELECT id FROM users WHERE id = ANY(:ids)"), {"ids": [u for u, _ in creators]}))
    if missing := [str(user) for user, _ in creators if user not in known]:
        raise PermanentError(f"unknown creators: {', '.join(missing)}", code="unknown_user")
    royalty = money.royalty(sale.price, sale.seller_fee_basis_points)
    parts = money.largest_remainder(royalty, creators)
    sale_id = session.execute(
        insert(Sale)
        .values(
            signature=sale.signature,
            nft_id=sale.nft_id,
            price=sale.price,
            seller_fee_basis_points=sale.seller_fee_basis_points,
            royalty=royalty,
            sold_at=sale.sold_at,
            source=source,
            recorded_at=now,
        )
        .on_conflict_do_nothing(index_elements=["signature"])
        .returning(Sale.id)
    ).scalar_one_or_none()
    if sale_id is None:  # a concurrent request stored the same sale first
        return session.scalars(select(Sale).where(Sale.signature == sale.signature)).one(), False
    session.add_all(
        SaleCreator(sale_id=sale_id, user_id=user, share=share, amount=parts[user]) for user, share in creators
    )
    session.flush()
    return session.get_one(Sale, sale_id), True


def first_pending(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.min(Sale.recorded_at)).where(Sale.run_id.is_(None)))


def distribute(session: Session, run: LedgerRun, settings: Settings) -> dict[str, Any]:
    """Move the creators' parts of the period's sales from external (the royalty proceeds) to royalties."""
    session.execute(
        text("CREATE TEMP TABLE royalty_parts (user_id uuid PRIMARY KEY, amount numeric NOT NULL) ON COMMIT DROP")
    )
    sales, royalty = session.execute(text(DISTRIBUTE), {"run_id": run.id, "period_end": run.period_end}).one()
    if royalty:
        credit_users(session, run, "royalty_parts", "external")
    return {"sales": int(sales), "royalties": int(royalty)}
