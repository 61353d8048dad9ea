"""Staking: positions, their interest per period with exact integers and a carry, and unstaking.

``rate_kind`` says what ``rate_bps`` means:

- ``apr``: simple yearly interest, paid out each period to the staker's ``staking`` account (then to the
  wallet); nothing compounds, so this is the rate to advertise for positions that pay out.
- ``apy``: a true yearly yield. Each period's interest is re-staked (added to the position and to its
  ``stake`` account), and the period factor is ``(1 + APY)^(t / year) - 1``, so a year of periods of any
  length compounds to the APY.

Interest for ``t`` seconds is ``paid = floor((principal * numerator(t) + carry) / scale)`` and the remainder
is the position's new carry (see :mod:`roadie.ledger.money`). A position is paid for
``[accrued_until, min(period_end, unstake time))`` once per period: UNIQUE(position_id, period_start).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from models.ledger import LedgerRun
from models.music import StakingPosition
from roadie.jobs.errors import PermanentError
from roadie.ledger import money
from roadie.ledger.books import open_transaction, period_floor, period_key, post, system_account, user_accounts
from roadie.settings import Settings

#: One statement: the interest of every due position, its payout row, and the position's new state.
PAY = """
WITH factors AS (
    SELECT * FROM unnest(CAST(:rates AS int[]), CAST(:seconds AS bigint[]), CAST(:factors AS numeric[]))
        AS f(rate_bps, seconds, factor)
),
due AS (
    SELECT sp.id, sp.amount, sp.rate_bps, sp.rate_kind, sp.carry, sp.accrued_until AS accrued_from,
           CAST(:accrue_to AS timestamptz) AS accrued_to,
           CAST(extract(epoch FROM CAST(:accrue_to AS timestamptz) - sp.accrued_until) AS bigint) AS seconds
    FROM staking_positions AS sp
    WHERE sp.status = 'active' AND sp.accrued_until < :accrue_to
      AND (CAST(:position AS uuid) IS NULL OR sp.id = :position)
),
interest AS (
    SELECT d.id, d.accrued_from, d.accrued_to,
           div(d.amount * n.numerator + d.carry, n.scale) AS paid,
           mod(d.amount * n.numerator + d.carry, n.scale) AS carry_after
    FROM due AS d
    LEFT JOIN factors AS f ON f.rate_bps = d.rate_bps AND f.seconds = d.seconds
    CROSS JOIN LATERAL (
        SELECT CASE d.rate_kind WHEN 'apr' THEN CAST(d.rate_bps AS numeric) * d.seconds ELSE f.factor END
                   AS numerator,
               CAST(CASE d.rate_kind WHEN 'apr' THEN :apr_scale ELSE :apy_scale END AS numeric) AS scale
    ) AS n
),
inserted AS (
    INSERT INTO staking_payouts
        (position_id, period_start, accrued_from, accrued_to, amount, carry_after, transaction_id)
    SELECT id, :period_start, accrued_from, accrued_to, paid, carry_after, :tx FROM interest
    ON CONFLICT (position_id, period_start) DO NOTHING
    RETURNING position_id, amount, carry_after, accrued_to
),
updated AS (
    UPDATE staking_positions AS sp
    SET carry = i.carry_after, accrued_until = i.accrued_to, rewards = sp.rewards + i.amount,
        amount = sp.amount + CASE sp.rate_kind WHEN 'apy' THEN i.amount ELSE 0 END, updated_at = now()
    FROM inserted AS i
    WHERE sp.id = i.position_id
    RETURNING sp.user_id, sp.rate_kind, i.amount
),
paid AS (
    SELECT a.id AS account_id, sum(u.amount) AS amount
    FROM updated AS u
    JOIN ledger_accounts AS a
      ON a.user_id = u.user_id AND a.kind = CASE u.rate_kind WHEN 'apr' THEN 'staking' ELSE 'stake' END
    GROUP BY a.id
    HAVING sum(u.amount) > 0
),
entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT :tx, account_id, amount FROM paid
    UNION ALL
    SELECT :tx, :treasury, -sum(amount) FROM paid HAVING sum(amount) > 0
    RETURNING amount
)
SELECT (SELECT count(*) FROM updated), (SELECT COALESCE(sum(amount), 0) FROM updated),
       (SELECT COALESCE(sum(amount), 0) FROM paid)
"""


def first_pending(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.min(StakingPosition.accrued_until)).where(StakingPosition.status == "active"))


def _apy_factors(session: Session, accrue_to: dt.datetime, position: uuid.UUID | None) -> dict[str, list[int]]:
    """The exact growth factors of the (rate, seconds) pairs due, computed once per pair in Python."""
    pairs = session.execute(
        text(
            "SELECT DISTINCT rate_bps, CAST(extract(epoch FROM CAST(:to AS timestamptz) - accrued_until) AS bigint)"
            " FROM staking_positions WHERE status = 'active' AND rate_kind = 'apy' AND accrued_until < :to"
            " AND (CAST(:position AS uuid) IS NULL OR id = :position)"
        ),
        {"to": accrue_to, "position": position},
    ).all()
    return {
        "rates": [rate for rate, _ in pairs],
        "seconds": [seconds for _, seconds in pairs],
        "factors": [money.apy_numerator(rate, seconds) for rate, seconds in pairs],
    }


def pay(
    session: Session,
    period_start: dt.datetime,
    accrue_to: dt.datetime,
    key: str,
    *,
    run_id: int | None = None,
    position: uuid.UUID | None = None,
) -> dict[str, int]:
    """Pay interest up to ``accrue_to`` to every due active position (or one), as period ``period_start``."""
    tx = open_transaction(session, key, "staking", accrue_to, run_id=run_id)
    if tx is None:
        return {"positions": 0, "interest": 0}
    positions, interest, posted = session.execute(
        text(PAY),
        {
            "accrue_to": accrue_to,
            "period_start": period_start,
            "position": position,
            "tx": tx,
            "treasury": system_account(session, "treasury"),
            "apr_scale": money.APR_SCALE,
            "apy_scale": money.APY_SCALE,
            **_apy_factors(session, accrue_to, position),
        },
    ).one()
    if interest != posted:  # a position whose owner has no account: refuse rather than pay off the books
        raise PermanentError(f"staking interest {interest} but {posted} posted", code="missing_account")
    return {"positions": int(positions), "interest": int(interest)}


def pay_period(session: Session, run: LedgerRun, settings: Settings) -> dict[str, Any]:
    return pay(session, run.period_start, run.period_end, period_key("staking", run.period_start), run_id=run.id)


def _whole_seconds(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=0)


#: The users behind a wallet: linked through user_wallets, or the wallet a user signed up with.
WALLET_USERS = """
SELECT uw.user_id FROM wallets AS w JOIN user_wallets AS uw ON uw.wallet_id = w.id
WHERE w.address = :wallet AND w.chain = 'solana'
UNION
SELECT id FROM users WHERE wallet_address = :wallet
"""


def staker(session: Session, wallet: str) -> uuid.UUID:
    """The one user whose wallet made a stake deposit."""
    users = session.scalars(text(WALLET_USERS), {"wallet": wallet}).all()
    if len(users) != 1:
        code = "ambiguous_wallet" if users else "unknown_wallet"
        raise PermanentError(f"the wallet {wallet} belongs to {len(users)} users, not one", code=code)
    return uuid.UUID(str(users[0]))


def open_position(
    session: Session,
    user_id: uuid.UUID,
    mint_address: str,
    amount: int,
    rate_bps: int,
    rate_kind: str,
    lock_seconds: int,
    now: dt.datetime,
    settings: Settings,
) -> StakingPosition:
    """Record a stake deposited on chain: external -> the user's stake account, and the position."""
    if not 0 < rate_bps <= settings.ledger_staking_max_rate_bps:
        raise PermanentError(
            f"rate_bps must be between 1 and {settings.ledger_staking_max_rate_bps}", code="invalid_rate"
        )
    if amount <= 0:
        raise PermanentError("a stake must be a positive amount", code="invalid_amount")
    if session.execute(text("SELECT 1 FROM users WHERE id = :id"), {"id": user_id}).first() is None:
        raise PermanentError(f"no user {user_id}", code="unknown_user")
    started = _whole_seconds(now)
    position = StakingPosition(
        user_id=user_id,
        mint_address=mint_address,
        amount=amount,
        rate_bps=rate_bps,
        rate_kind=rate_kind,
        lock_seconds=lock_seconds,
        started_at=started,
        accrued_until=started,
    )
    session.add(position)
    session.flush()
    accounts = {kind: user_accounts(session, kind, [user_id])[user_id] for kind in ("stake", "staking")}
    tx = open_transaction(session, f"stake:{position.id}", "stake", started)
    assert tx is not None, "a new position has a new key"
    post(session, tx, {system_account(session, "external"): -amount, accounts["stake"]: amount})
    return position


def unstake(session: Session, position_id: uuid.UUID, now: dt.datetime, settings: Settings) -> dict[str, Any]:
    """Pay interest pro rata up to now, then release the principal to the staking account, less any
    early-unstake penalty (floored: the staker keeps the fraction), which goes back to the treasury."""
    position = session.get(StakingPosition, position_id, with_for_update=True)
    if position is None:
        raise PermanentError(f"no staking position {position_id}", code="unknown_position")
    if position.status != "active":
        raise PermanentError(f"position {position_id} is already unstaked", code="already_unstaked")
    at = _whole_seconds(now)
    start = period_floor(at, settings.ledger_staking_period_s)
    interest = pay(session, start, at, f"staking-unstake:{position_id}", position=position_id)
    session.refresh(position)
    principal = position.amount
    early = at < position.started_at + dt.timedelta(seconds=position.lock_seconds)
    penalty = principal * settings.ledger_early_unstake_penalty_bps // money.BPS if early else 0
    accounts = {
        kind: user_accounts(session, kind, [position.user_id])[position.user_id] for kind in ("stake", "staking")
    }
    tx = open_transaction(session, f"unstake:{position_id}", "unstake", at, memo={"penalty": penalty, "early": early})
    assert tx is not None, "an active position has not been unstaked"
    post(
        session,
        tx,
        {
            accounts["stake"]: -principal,
            accounts["staking"]: principal - penalty,
            system_account(session, "treasury"): penalty,
        },
    )
    position.status, position.unstaked_at = "unstaked", at
    return {
        "position_id": str(position_id),
        "interest": interest["interest"],
        "principal": principal,
        "penalty": penalty,
        "released": principal - penalty,
        "early": early,
    }
