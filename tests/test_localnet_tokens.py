"""The local chain answers the token reads of wallets, explorers and the spl-token CLI, as a validator does.

Each test creates real SPL Token (and Token-2022) mints and accounts with solana-py's own
instructions, then reads them back through solana-py's own client calls.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.types import MemcmpOpts, TokenAccountOpts, TxOpts
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from spl.token import instructions as spl
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

from roadie.settings import get_settings
from tests.fixtures.chain import control, funded, on_chain

DECIMALS = 6


def send(payer: Keypair, instructions: list[Instruction], *signers: Keypair) -> Signature:
    async def go(client: AsyncClient) -> Signature:
        blockhash = (await client.get_latest_blockhash(Confirmed)).value.blockhash
        message = Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)
        tx = VersionedTransaction(message, [payer, *signers])
        return (await client.send_transaction(tx, opts=TxOpts(preflight_commitment=Confirmed))).value

    return on_chain(go)


class Token:
    """A mint with its authority, on one token program."""

    def __init__(self, payer: Keypair, program: Pubkey = TOKEN_PROGRAM_ID) -> None:
        self.payer, self.program, self.keypair = payer, program, Keypair()
        self.mint = self.keypair.pubkey()
        rent = on_chain(lambda c: c.get_minimum_balance_for_rent_exemption(82)).value
        create = create_account(
            CreateAccountParams(from_pubkey=payer.pubkey(), to_pubkey=self.mint, lamports=rent, space=82, owner=program)
        )
        initialize = spl.initialize_mint(spl.InitializeMintParams(DECIMALS, program, self.mint, payer.pubkey()))
        send(payer, [create, initialize], self.keypair)

    def account_of(self, owner: Pubkey, amount: int) -> Pubkey:
        """The owner's associated token account, holding ``amount`` base units."""
        address = spl.get_associated_token_address(owner, self.mint, self.program)
        create = spl.create_associated_token_account(self.payer.pubkey(), owner, self.mint, self.program)
        mint_to = spl.mint_to(spl.MintToParams(self.program, self.mint, address, self.payer.pubkey(), amount))
        send(self.payer, [create, mint_to])
        return address


def info_of(keyed: Any) -> dict[str, Any]:
    """A jsonParsed token account's ``info``."""
    info: dict[str, Any] = keyed.account.data.parsed["info"]
    return info


@pytest.fixture
def payer(localnet: Any) -> Keypair:
    return funded(10**10)


def test_a_wallets_token_accounts_are_listed_by_mint_and_by_program_in_both_encodings(payer: Keypair) -> None:
    listener, other = Keypair(), Keypair()
    token, token_2022 = Token(payer), Token(payer, TOKEN_2022_PROGRAM_ID)
    held = token.account_of(listener.pubkey(), 1_500_000)
    held_2022 = token_2022.account_of(listener.pubkey(), 7)
    token.account_of(other.pubkey(), 3)

    by_mint = on_chain(
        lambda c: c.get_token_accounts_by_owner(listener.pubkey(), TokenAccountOpts(mint=token.mint))
    ).value
    by_program = on_chain(
        lambda c: c.get_token_accounts_by_owner_json_parsed(
            listener.pubkey(), TokenAccountOpts(program_id=TOKEN_2022_PROGRAM_ID)
        )
    ).value

    assert [keyed.pubkey for keyed in by_mint] == [held]
    assert by_mint[0].account.owner == TOKEN_PROGRAM_ID
    assert len(by_mint[0].account.data) == 165
    (parsed,) = by_program
    assert parsed.pubkey == held_2022
    assert parsed.account.data.program == "spl-token-2022"
    info = info_of(parsed)
    assert (info["mint"], info["owner"], info["state"]) == (str(token_2022.mint), str(listener.pubkey()), "initialized")
    assert info["tokenAmount"] == {"amount": "7", "decimals": 6, "uiAmount": 7e-06, "uiAmountString": "0.000007"}
    assert {"extension": "immutableOwner"} in info["extensions"]


def test_a_delegates_token_accounts_are_listed_with_the_delegated_amount(payer: Keypair) -> None:
    owner, delegate = Keypair(), Keypair()
    token = Token(payer)
    held = token.account_of(owner.pubkey(), 2_000_000)
    send(
        payer,
        [spl.approve(spl.ApproveParams(TOKEN_PROGRAM_ID, held, delegate.pubkey(), owner.pubkey(), 250_000))],
        owner,
    )

    (keyed,) = on_chain(
        lambda c: c.get_token_accounts_by_delegate_json_parsed(delegate.pubkey(), TokenAccountOpts(mint=token.mint))
    ).value

    info = info_of(keyed)
    assert keyed.pubkey == held
    assert info["delegate"] == str(delegate.pubkey())
    assert info["delegatedAmount"]["uiAmountString"] == "0.25"
    assert info["tokenAmount"]["uiAmountString"] == "2"


def test_a_mints_supply_and_largest_accounts(payer: Keypair) -> None:
    token = Token(payer)
    amounts = {token.account_of(Keypair().pubkey(), amount): amount for amount in (5, 12_000_000, 40)}

    supply = on_chain(lambda c: c.get_token_supply(token.mint)).value
    largest = on_chain(lambda c: c.get_token_largest_accounts(token.mint)).value

    assert (supply.amount, supply.decimals, supply.ui_amount_string) == ("12000045", 6, "12.000045")
    assert [(entry.address, int(entry.amount.amount)) for entry in largest] == sorted(
        amounts.items(), key=lambda item: -item[1]
    )


def test_program_accounts_are_filtered_by_data_size_and_memcmp(payer: Keypair) -> None:
    token, other_token = Token(payer), Token(payer)
    holders = {token.account_of(Keypair().pubkey(), 1), token.account_of(Keypair().pubkey(), 2)}
    other_token.account_of(Keypair().pubkey(), 3)

    found = on_chain(
        lambda c: c.get_program_accounts(
            TOKEN_PROGRAM_ID, encoding="base64", filters=[165, MemcmpOpts(offset=0, bytes=str(token.mint))]
        )
    ).value
    mints = on_chain(lambda c: c.get_program_accounts(TOKEN_PROGRAM_ID, encoding="base64", filters=[82])).value

    assert {keyed.pubkey for keyed in found} == holders
    assert {token.mint, other_token.mint} <= {keyed.pubkey for keyed in mints}


def test_a_transactions_meta_carries_its_token_balances_before_and_after(payer: Keypair) -> None:
    sender, receiver = funded(), Keypair()
    token = Token(payer)
    source, destination = token.account_of(sender.pubkey(), 3_000_000), token.account_of(receiver.pubkey(), 0)
    move = spl.transfer(spl.TransferParams(TOKEN_PROGRAM_ID, source, destination, sender.pubkey(), 1_250_000))

    signature = send(sender, [move])
    control("roadie_advance", 1)
    landed = on_chain(lambda c: c.get_transaction(signature, commitment=Confirmed)).value

    assert landed is not None
    meta = landed.transaction.meta
    assert meta is not None
    keys = list(landed.transaction.transaction.message.account_keys)  # type: ignore[union-attr]

    def amounts(balances: Any) -> dict[Pubkey, str]:
        return {keys[b.account_index]: b.ui_token_amount.ui_amount_string for b in balances if b.mint == token.mint}

    assert amounts(meta.pre_token_balances) == {source: "3", destination: "0"}
    assert amounts(meta.post_token_balances) == {source: "1.75", destination: "1.25"}
    assert {b.owner for b in meta.post_token_balances or []} == {sender.pubkey(), receiver.pubkey()}


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("getTokenAccountsByOwner", ["not-a-key", {"mint": str(Pubkey.default())}], -32602),
        ("getTokenAccountsByOwner", [str(Pubkey.default()), {}], -32602),
        ("getTokenAccountsByOwner", [str(Pubkey.default()), {"programId": str(Pubkey.default())}], -32602),
        ("getTokenSupply", [str(Pubkey.default())], -32602),
        ("getProgramAccounts", [str(TOKEN_PROGRAM_ID), {"filters": [{"memcmp": {"offset": "x"}}]}], -32602),
        ("getProgramAccounts", [str(TOKEN_PROGRAM_ID), {"encoding": "base58"}], -32602),
        ("getNoSuchThing", [], -32601),
    ],
    ids=["bad-key", "no-filter", "not-a-token-program", "not-a-mint", "bad-memcmp", "base58", "unknown-method"],
)
def test_bad_requests_are_json_rpc_errors_not_server_errors(
    localnet: Any, method: str, params: list[Any], code: int
) -> None:
    response = httpx.post(
        get_settings().solana_rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    )

    assert response.status_code == 200
    assert response.json()["error"]["code"] == code
