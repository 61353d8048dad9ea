"""What a Solana transaction pays: 5,000 lamports per signature, plus its compute-unit price times its limit.

The compute budget comes from the message's ComputeBudget instructions, with the runtime's
defaults where they are absent (200,000 units per other instruction, at most 1,400,000; price 0).
The priority fee is ``ceil(limit * price / 1,000,000)`` lamports, rounded up as the runtime does.
"""

from __future__ import annotations

from dataclasses import dataclass

from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID
from solders.message import Message, MessageV0

LAMPORTS_PER_SIGNATURE = 5_000
DEFAULT_UNITS_PER_INSTRUCTION = 200_000
MAX_COMPUTE_UNITS = 1_400_000
MICRO_LAMPORTS_PER_LAMPORT = 1_000_000
SET_COMPUTE_UNIT_LIMIT, SET_COMPUTE_UNIT_PRICE = 2, 3


@dataclass(frozen=True)
class ComputeBudget:
    unit_limit: int
    unit_price_micro_lamports: int

    @property
    def priority_fee(self) -> int:
        """Lamports: the limit times the price, rounded up."""
        return -(-self.unit_limit * self.unit_price_micro_lamports // MICRO_LAMPORTS_PER_LAMPORT)


def compute_budget(message: Message | MessageV0) -> ComputeBudget:
    """The budget a (legacy or v0) message asks for; malformed budget instructions count as absent."""
    keys = list(message.account_keys)
    limit: int | None = None
    price, others = 0, 0
    for instruction in message.instructions:
        if keys[instruction.program_id_index] != COMPUTE_BUDGET_PROGRAM_ID:
            others += 1
            continue
        data = bytes(instruction.data)
        if data[:1] == bytes([SET_COMPUTE_UNIT_LIMIT]) and len(data) == 5:
            limit = int.from_bytes(data[1:], "little")
        elif data[:1] == bytes([SET_COMPUTE_UNIT_PRICE]) and len(data) == 9:
            price = int.from_bytes(data[1:], "little")
    if limit is None:
        limit = DEFAULT_UNITS_PER_INSTRUCTION * others
    return ComputeBudget(min(limit, MAX_COMPUTE_UNITS), price)


def transaction_fee(message: Message | MessageV0) -> int:
    """Lamports the fee payer pays for ``message``, whether it succeeds or fails."""
    return LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures + compute_budget(message).priority_fee
