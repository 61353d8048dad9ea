"""Listening events, sales, ledger accounts and payouts (issue 5)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.errors import json_response
from api.http import parse, parse_body, read_json, require
from api.params import BaseUnits, BigIntCursor, BigIntId, Timestamp, path_bigint
from models.ledger import (
    ACCOUNT_KINDS,
    PAYOUT_STATUSES,
    TRANSACTION_KINDS,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Payout,
    Sale,
)
from roadie.db import async_transaction
from roadie.jobs.errors import PermanentError
from roadie.jobs.intake import IntakeError
from roadie.ledger.plays import PlayBatch, record_plays
from roadie.ledger.royalties import SaleInput, record_sale
from roadie.settings import get_settings

#: Which field a refused sale names, by the refusal's code.
SALE_FIELDS = {"unknown_nft": "nft_id", "invalid_shares": "creators", "unknown_user": "creators"}


class Creator(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID
    share: int = Field(ge=0, le=100, description="Integer percent of the royalty; the shares sum to 100.")


class SaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signature: str = Field(min_length=32, max_length=88, pattern=r"^[1-9A-HJ-NP-Za-km-z]+$", description="Sale tx.")
    nft_id: uuid.UUID
    price: int = Field(ge=0, lt=10**30, description="Sale price in base units.")
    seller_fee_basis_points: int = Field(ge=0, le=10_000, description="The NFT's royalty in basis points.")
    sold_at: AwareDatetime
    creators: list[Creator] | None = Field(
        default=None, min_length=1, max_length=5, description="Default: the NFT's creator takes 100."
    )

    @field_validator("creators")
    @classmethod
    def _shares_sum_to_100(cls, creators: list[Creator] | None) -> list[Creator] | None:
        if creators is not None:
            if sum(c.share for c in creators) != 100:
                raise ValueError("shares must sum to 100")
            if len({c.user_id for c in creators}) != len(creators):
                raise ValueError("each creator may appear once")
        return creators


class PayoutQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period_start: Timestamp | None = None
    account_id: BigIntId | None = None
    status: Literal[PAYOUT_STATUSES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=100, ge=1, le=1000)
    after_id: BigIntCursor = Field(default=0, description="Cursor: the last id of the previous page.")


class EntriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=1000)
    before_id: BigIntId | None = Field(default=None, description="Cursor: entries older than this id.")


class View(BaseModel):
    """A response body: exactly these fields. Amounts are strings of integer base units."""

    model_config = ConfigDict(extra="forbid")


class RefusedPlay(View):
    index: int = Field(description="The event's position in the batch.")
    field: str
    reason: str


class PlayReceipt(View):
    accepted: int
    duplicate: int = Field(description="Events whose event_id was stored before (or earlier in the batch).")
    rejected: int
    errors: list[RefusedPlay]


class CreatorShare(View):
    user_id: uuid.UUID
    share: int
    amount: BaseUnits


class SaleView(View):
    id: uuid.UUID
    signature: str
    nft_id: uuid.UUID
    price: BaseUnits
    seller_fee_basis_points: int
    royalty: BaseUnits
    creators: list[CreatorShare]
    sold_at: dt.datetime
    recorded_at: dt.datetime
    distributed: bool = Field(description="Whether a ledger run has split the royalty.")


class TransactionView(View):
    id: int
    key: str
    kind: Literal[TRANSACTION_KINDS]  # type: ignore[valid-type]
    effective_at: dt.datetime


class EntryView(View):
    id: int
    amount: BaseUnits
    transaction: TransactionView


class AccountView(View):
    id: int
    kind: Literal[ACCOUNT_KINDS]  # type: ignore[valid-type]
    user_id: uuid.UUID | None
    balance: BaseUnits = Field(description="The sum of the account's entries.")
    entries: list[EntryView]
    next_before_id: int | None = Field(description="Cursor for the next (older) page; null on the last.")


class PayoutView(View):
    id: int
    account_id: int
    kind: str
    period_start: dt.datetime
    amount: BaseUnits
    wallet: str
    status: Literal[PAYOUT_STATUSES]  # type: ignore[valid-type]
    batch_key: str
    batch_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class PayoutPage(View):
    payouts: list[PayoutView]
    next_after_id: int | None = Field(description="Cursor for the next page; null on the last.")


async def post_plays(request: Request) -> Response:
    """200 with the counts; 422 when no event of the batch could be stored (every error named)."""
    client = await require(None, request, "plays:write")  # before reading a byte of the body
    batch = parse_body(PlayBatch, await read_json(request))
    async with async_transaction() as session:
        now = dt.datetime.now(dt.UTC)
        receipt = await session.run_sync(lambda sync: record_plays(sync, batch.events, client.id, now, get_settings()))
        if receipt.rejected and not (receipt.accepted or receipt.duplicate):
            fields = [{"field": error["field"], "reason": error["reason"]} for error in receipt.rejected]
            raise IntakeError(422, "validation_error", f"all {len(batch.events)} events were refused", fields)
    return json_response(PlayReceipt.model_validate(receipt.view()))


async def post_sale(request: Request) -> Response:
    """201 with a new sale, 200 with the stored one when its signature was reported before."""
    await require(None, request, "sales:write")  # before reading a byte of the body
    body = parse_body(SaleRequest, await read_json(request))
    sale = SaleInput(
        body.signature,
        body.nft_id,
        body.price,
        body.seller_fee_basis_points,
        body.sold_at,
        [(c.user_id, c.share) for c in body.creators] if body.creators else None,
    )
    async with async_transaction() as session:
        now = dt.datetime.now(dt.UTC)
        try:
            stored, new = await session.run_sync(lambda sync: record_sale(sync, sale, "api", now))
        except PermanentError as exc:
            field = SALE_FIELDS.get(exc.code, "body")
            raise IntakeError(422, exc.code, exc.message, [{"field": field, "reason": exc.message}]) from exc
        view = await _sale_view(session, stored)
    return json_response(view, 201 if new else 200)


async def _sale_view(session: AsyncSession, sale: Sale) -> SaleView:
    creators = (
        await session.execute(
            text("SELECT user_id, share, amount FROM sale_creators WHERE sale_id = :s ORDER BY share DESC, user_id"),
            {"s": sale.id},
        )
    ).all()
    return SaleView(
        id=sale.id,
        signature=sale.signature,
        nft_id=sale.nft_id,
        price=str(sale.price),
        seller_fee_basis_points=sale.seller_fee_basis_points,
        royalty=str(sale.royalty),
        creators=[CreatorShare(user_id=u, share=s, amount=str(int(a))) for u, s, a in creators],
        sold_at=sale.sold_at,
        recorded_at=sale.recorded_at,
        distributed=sale.run_id is not None,
    )


async def get_account(request: Request) -> Response:
    """An account's balance (the sum of its entries) and its entries, newest first."""
    raw = request.path_params["account_id"]
    async with async_transaction() as session:
        await require(session, request, "ledger:read")
        query = parse(EntriesQuery, dict(request.query_params))
        if raw in ("treasury", "clearing", "external"):
            account = await session.scalar(
                select(LedgerAccount).where(LedgerAccount.kind == raw, LedgerAccount.user_id.is_(None))
            )
        else:
            account = await session.get(LedgerAccount, path_bigint(request, "account_id"))
        if account is None:
            raise IntakeError(404, "not_found", f"no ledger account {raw}")
        entries_query = (
            select(LedgerEntry, LedgerTransaction)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerEntry.account_id == account.id)
            .order_by(LedgerEntry.id.desc())
            .limit(query.limit + 1)
        )
        if query.before_id is not None:
            entries_query = entries_query.where(LedgerEntry.id < query.before_id)
        rows = (await session.execute(entries_query)).all()
        derived = await session.scalar(
            text("SELECT COALESCE(sum(amount), 0) FROM ledger_entries WHERE account_id = :a"), {"a": account.id}
        )
    page = rows[: query.limit]
    return json_response(
        AccountView(
            id=account.id,
            kind=account.kind,
            user_id=account.user_id,
            balance=str(int(derived or 0)),
            entries=[
                EntryView(
                    id=entry.id,
                    amount=str(entry.amount),
                    transaction=TransactionView(id=tx.id, key=tx.key, kind=tx.kind, effective_at=tx.effective_at),
                )
                for entry, tx in page
            ],
            next_before_id=page[-1][0].id if len(rows) > query.limit else None,
        )
    )


async def list_payouts(request: Request) -> Response:
    """Payouts by period, account and status, oldest first."""
    async with async_transaction() as session:
        await require(session, request, "ledger:read")
        query = parse(PayoutQuery, dict(request.query_params))
        statement = select(Payout).where(Payout.id > query.after_id).order_by(Payout.id).limit(query.limit + 1)
        if query.period_start is not None:
            statement = statement.where(Payout.period_start == query.period_start)
        if query.account_id is not None:
            statement = statement.where(Payout.account_id == query.account_id)
        if query.status is not None:
            statement = statement.where(Payout.status == query.status)
        found = list((await session.scalars(statement)).all())
    page = found[: query.limit]
    return json_response(
        PayoutPage(
            payouts=[
                PayoutView(
                    id=p.id,
                    account_id=p.account_id,
                    kind=p.kind,
                    period_start=p.period_start,
                    amount=str(p.amount),
                    wallet=p.wallet,
                    status=p.status,
                    batch_key=p.batch_key,
                    batch_id=p.batch_id,
                    created_at=p.created_at,
                    updated_at=p.updated_at,
                )
                for p in page
            ],
            next_after_id=page[-1].id if len(found) > query.limit else None,
        )
    )


routes: list[BaseRoute] = [
    Route("/v1/plays", post_plays, methods=["POST"]),
    Route("/v1/sales", post_sale, methods=["POST"]),
    Route("/v1/ledger/accounts/{account_id}", get_account, methods=["GET"]),
    Route("/v1/payouts", list_payouts, methods=["GET"]),
]
