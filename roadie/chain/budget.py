"""The compute budget and priority fee of every transaction the platform signs, so it lands under congestion.

Each transaction starts with two ComputeBudget instructions (solders' own):

- ``SetComputeUnitLimit``: the units a simulation of the transaction consumed, times
  ``ROADIE_CHAIN_COMPUTE_UNIT_MARGIN``, rounded up (the runtime's 1,400,000 at most). A tight limit
  makes the priority fee (limit x price) small and the transaction cheaper to schedule.
- ``SetComputeUnitPrice``: the ``ROADIE_CHAIN_PRIORITY_FEE_PERCENTILE`` of what
  ``getRecentPrioritizationFees`` reports for the accounts the transaction writes, raised to the floor
  and cut to the ceiling (micro-lamports per unit). A cut estimate is logged as
  ``chain.priority_fee_clamped``: the transaction may then land late, never at an unbounded price.

A simulation that fails (the transaction would fail on chain) is :class:`SimulationFailed`; an RPC answer
that is not the documented response is :class:`roadie.chain.client.RpcBadAnswer`. Both happen before
anything is journaled, so neither leaves a journal row or sends anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from roadie.chain.client import Chain, RpcBadAnswer
from roadie.chain.fees import MAX_COMPUTE_UNITS
from roadie.chain.sending import sign
from roadie.jobs.errors import PermanentError
from roadie.settings import Settings

log = logging.getLogger(__name__)

#: The ComputeBudget instructions come first: a transaction's own instructions are shifted by this many.
BUDGET_INSTRUCTIONS = 2


class SimulationFailed(PermanentError):  # noqa: N818 - reads as the condition it reports
    """The simulation says the transaction would fail on chain."""

    code = "simulation_failed"


@dataclass(frozen=True)
class UnitPrice:
    """The compute-unit price paid (micro-lamports), and the estimate it came from."""

    micro_lamports: int
    estimate: int

    @property
    def capped(self) -> bool:
        """The estimate was above the ceiling."""
        return self.estimate > self.micro_lamports


def percentile(values: Sequence[int], pct: int) -> int:
    """The nearest-rank percentile of ``values`` (0 when there are none)."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(math.ceil(pct / 100 * len(ordered)), 1) - 1]


def unit_price(recent: Sequence[int], settings: Settings) -> UnitPrice:
    estimate = percentile(recent, settings.chain_priority_fee_percentile)
    floor = settings.chain_priority_fee_floor_micro_lamports
    return UnitPrice(min(max(estimate, floor), settings.chain_priority_fee_ceiling_micro_lamports), estimate)


def unit_limit(units_consumed: int, settings: Settings) -> int:
    return min(math.ceil(units_consumed * settings.chain_compute_unit_margin), MAX_COMPUTE_UNITS)


def with_budget(instructions: Sequence[Instruction], limit: int, price: int) -> list[Instruction]:
    return [set_compute_unit_limit(limit), set_compute_unit_price(price), *instructions]


def writable_accounts(instructions: Sequence[Instruction]) -> list[Pubkey]:
    """The accounts the instructions write (whose recent fees set the price), in order, at most 128."""
    written = dict.fromkeys(meta.pubkey for ix in instructions for meta in ix.accounts if meta.is_writable)
    return list(written)[:128]


async def sign_budgeted(
    chain: Chain, instructions: Sequence[Instruction], signers: Sequence[Keypair], blockhash: Hash, settings: Settings
) -> VersionedTransaction:
    """Price and size the transaction, then sign it (the payer is the first signer)."""
    payer = signers[0].pubkey()
    price = unit_price(await chain.recent_prioritization_fees(writable_accounts(instructions)), settings)
    if price.capped:
        log.warning(
            "chain.priority_fee_clamped",
            extra={"estimate_micro_lamports": price.estimate, "ceiling_micro_lamports": price.micro_lamports},
        )
    trial = sign(with_budget(instructions, MAX_COMPUTE_UNITS, price.micro_lamports), payer, signers, blockhash)
    simulated = await chain.simulate(trial)
    if simulated.err is not None:
        logs = " | ".join((simulated.logs or [])[-3:])
        raise SimulationFailed(f"the transaction would fail on chain: {simulated.err}: {logs}".rstrip(": "))
    units = simulated.units_consumed
    if units is None or not 0 < units <= MAX_COMPUTE_UNITS:
        raise RpcBadAnswer(f"simulateTransaction reported {units!r} compute units consumed")
    limit = unit_limit(units, settings)
    return sign(with_budget(instructions, limit, price.micro_lamports), payer, signers, blockhash)
