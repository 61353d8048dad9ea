"""The local chain charges what a cluster charges: per signature, plus the compute-unit price times the limit.

The platform's fee settings (compute budget, priority fees) can only be tested against a chain
that charges and reports them as mainnet does.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.types import TxOpts
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from roadie.chain.fees import compute_budget, transaction_fee
from roadie.settings import get_settings
from tests.fixtures.chain import control, funded, on_chain


def message(payer: Keypair, instructions: list[Instruction]) -> Message:
    blockhash = on_chain(lambda c: c.get_latest_blockhash(Confirmed)).value.blockhash
    return Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)


def pay(payer: Keypair, to: Pubkey, *budget: Instruction) -> Any:
    sent = message(payer, [*budget, transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=1_000))])
    return on_chain(
        lambda c: c.send_transaction(VersionedTransaction(sent, [payer]), opts=TxOpts(skip_confirmation=True))
    ).value


def test_the_fee_is_the_signatures_plus_the_unit_price_times_the_limit_rounded_up(localnet: Any) -> None:
    payer = funded()
    budget = [set_compute_unit_limit(10_001), set_compute_unit_price(1_500)]
    planned = message(
        payer, [*budget, transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=1))]
    )
    before = on_chain(lambda c: c.get_balance(payer.pubkey())).value

    quoted = on_chain(lambda c: c.get_fee_for_message(planned)).value
    signature = pay(payer, Keypair().pubkey(), *budget)
    control("roadie_advance", 1)
    landed = on_chain(lambda c: c.get_transaction(signature, commitment=Confirmed)).value
    after = on_chain(lambda c: c.get_balance(payer.pubkey())).value

    assert compute_budget(planned).priority_fee == 16  # 10,001 units x 1,500 micro-lamports = 15.0015, rounded up
    assert quoted == transaction_fee(planned) == 5_000 + 16
    assert landed is not None
    assert landed.transaction.meta is not None
    assert landed.transaction.meta.fee == 5_016
    assert before - after == 5_016 + 1_000


def test_without_budget_instructions_the_default_limit_is_charged_at_price_zero(localnet: Any) -> None:
    payer = funded()
    plain = message(
        payer, [transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=1))]
    )

    assert compute_budget(plain).unit_limit == 200_000
    assert on_chain(lambda c: c.get_fee_for_message(plain)).value == 5_000


def test_recent_prioritization_fees_name_the_price_paid_to_write_an_account(localnet: Any) -> None:
    payer, other_payer, busy = funded(), funded(), Keypair().pubkey()
    control("roadie_pause")
    try:
        pay(payer, busy, set_compute_unit_price(777))
        pay(other_payer, Keypair().pubkey())  # the same block, no price: the block's lowest is 0
        slot = control("roadie_advance", 1)["confirmed"]
    finally:
        control("roadie_resume")

    def fees(accounts: list[str]) -> dict[int, int]:
        body = {"jsonrpc": "2.0", "id": 1, "method": "getRecentPrioritizationFees", "params": [accounts]}
        answer = httpx.post(get_settings().solana_rpc_url, json=body).json()["result"]
        return {entry["slot"]: entry["prioritizationFee"] for entry in answer}

    assert fees([str(busy)])[slot] == 777
    assert fees([])[slot] == 0
    assert len(fees([])) <= 150


def test_a_payer_that_cannot_cover_the_priority_fee_is_refused_before_it_runs(localnet: Any) -> None:
    payer = funded(20_000)
    expensive = [set_compute_unit_limit(1_000_000), set_compute_unit_price(1_000_000)]  # 1,000,000 lamports

    with pytest.raises(RPCException, match="InsufficientFundsForFee"):
        pay(payer, Keypair().pubkey(), *expensive)
    assert on_chain(lambda c: c.get_balance(payer.pubkey())).value == 20_000
