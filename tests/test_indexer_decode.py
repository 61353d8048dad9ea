"""The decoder finds our NFT mints, NFT transfers, treasury payouts and memos, and refuses what it cannot read."""

from __future__ import annotations

import base64
import json

import pytest
from solders.hash import Hash
from solders.instruction import AccountMeta, CompiledInstruction, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageAddressTableLookup, MessageHeader, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    EncodedTransactionWithStatusMeta,
    InstructionErrorCustom,
    TransactionErrorInstructionError,
    UiLoadedAddresses,
    UiTransactionStatusMeta,
)
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    MintToParams,
    TransferCheckedParams,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to,
    transfer_checked,
)

from roadie.chain.token import initialize_mint2
from roadie.indexer.decode import DecodeError, Event, Watch, decode, parse, transfer_mints
from roadie.indexer.facts import FactError, Settlement, StakeTerms, settlement, stake_terms

AUTHORITY = Keypair()
TREASURY = Keypair()
PAYOUT_MINT = Pubkey.new_unique()
TREASURY_ACCOUNT = get_associated_token_address(TREASURY.pubkey(), PAYOUT_MINT, TOKEN_PROGRAM_ID)
OK = UiTransactionStatusMeta(None, 5000, [], [])


def memo(text: bytes, signer: Pubkey) -> Instruction:
    return Instruction(MEMO_PROGRAM_ID, text, [AccountMeta(signer, True, False)])


def signed(payer: Keypair, *ixs: Instruction, signers: tuple[Keypair, ...] = ()) -> VersionedTransaction:
    message = Message.new_with_blockhash(list(ixs), payer.pubkey(), Hash.new_unique())
    return VersionedTransaction(message, [payer, *signers])


def nft_mint_tx(
    authority: Keypair, owner: Pubkey, *, decimals: int = 0, amount: int = 1
) -> tuple[Pubkey, VersionedTransaction]:
    mint = Keypair()
    ata = get_associated_token_address(owner, mint.pubkey(), TOKEN_2022_PROGRAM_ID)
    account = CreateAccountParams(
        from_pubkey=authority.pubkey(),
        to_pubkey=mint.pubkey(),
        lamports=10_000_000,
        space=234,
        owner=TOKEN_2022_PROGRAM_ID,
    )
    tx = signed(
        authority,
        create_account(account),
        initialize_mint2(mint.pubkey(), decimals, authority.pubkey(), TOKEN_2022_PROGRAM_ID),
        create_idempotent_associated_token_account(authority.pubkey(), owner, mint.pubkey(), TOKEN_2022_PROGRAM_ID),
        mint_to(MintToParams(TOKEN_2022_PROGRAM_ID, mint.pubkey(), ata, authority.pubkey(), amount)),
        signers=(mint,),
    )
    return mint.pubkey(), tx


def transfer_tx(
    holder: Keypair, to: Pubkey, mint: Pubkey, *, amount: int = 1, decimals: int = 0, note: bytes | None = None,
    program: Pubkey = TOKEN_2022_PROGRAM_ID,
) -> VersionedTransaction:  # fmt: skip
    source = get_associated_token_address(holder.pubkey(), mint, program)
    destination = get_associated_token_address(to, mint, program)
    ixs = [
        create_idempotent_associated_token_account(holder.pubkey(), to, mint, program),
        transfer_checked(TransferCheckedParams(program, source, mint, destination, holder.pubkey(), amount, decimals)),
    ]
    if note is not None:
        ixs.append(memo(note, holder.pubkey()))
    return signed(holder, *ixs)


def watch(*nft_mints: Pubkey) -> Watch:
    return Watch(AUTHORITY.pubkey(), {TREASURY_ACCOUNT}, nft_mints=frozenset(str(mint) for mint in nft_mints))


def events(tx: VersionedTransaction, watching: Watch | None = None, meta: UiTransactionStatusMeta = OK) -> list[Event]:
    return decode(str(tx.signatures[0]), tx, meta, watching or watch()).events


def test_an_nft_minted_by_our_authority_is_an_nft_mint_event_with_its_owner() -> None:
    owner = Pubkey.new_unique()
    mint, tx = nft_mint_tx(AUTHORITY, owner)

    (event,) = events(tx)

    assert event.kind == "nft_mint"
    assert event.instruction_index == 3
    assert (event.mint, event.owner, event.amount) == (str(mint), str(owner), 1)
    assert event.authority == str(AUTHORITY.pubkey())
    assert event.destination == str(get_associated_token_address(owner, mint, TOKEN_2022_PROGRAM_ID))


def test_mints_by_other_authorities_and_fungible_mints_are_not_our_nfts() -> None:
    assert events(nft_mint_tx(Keypair(), Pubkey.new_unique())[1]) == []
    assert events(nft_mint_tx(AUTHORITY, Pubkey.new_unique(), decimals=6, amount=1_000_000)[1]) == []


def test_a_transfer_of_our_nft_names_the_new_owner() -> None:
    holder, buyer = Keypair(), Pubkey.new_unique()
    mint = Pubkey.new_unique()
    tx = transfer_tx(holder, buyer, mint)

    (event,) = events(tx, watch(mint))

    assert event.kind == "nft_transfer"
    assert (event.instruction_index, event.mint, event.owner) == (1, str(mint), str(buyer))
    assert event.authority == str(holder.pubkey())
    assert transfer_mints(tx) == {str(mint)}


def test_transfers_of_other_mints_and_other_accounts_are_ignored() -> None:
    assert events(transfer_tx(Keypair(), Pubkey.new_unique(), Pubkey.new_unique())) == []
    someone_elses_payout_tokens = transfer_tx(
        Keypair(), Pubkey.new_unique(), PAYOUT_MINT, amount=5, decimals=6, program=TOKEN_PROGRAM_ID
    )
    assert events(someone_elses_payout_tokens) == []


def test_a_treasury_transfer_is_a_payout_carrying_the_transaction_memo() -> None:
    recipient = Pubkey.new_unique()
    tx = transfer_tx(
        TREASURY,
        recipient,
        PAYOUT_MINT,
        amount=1_250_000,
        decimals=6,
        note=b"roadie:payout:42",
        program=TOKEN_PROGRAM_ID,
    )

    payout, note = events(tx)

    assert payout.kind == "token_transfer"
    assert (payout.amount, payout.owner, payout.memo) == (1_250_000, str(recipient), "roadie:payout:42")
    assert payout.mint == str(PAYOUT_MINT)
    assert (note.kind, note.instruction_index, note.memo) == ("memo", 2, "roadie:payout:42")


def test_the_new_owner_comes_from_post_token_balances_when_no_account_is_created() -> None:
    holder, buyer, mint = Keypair(), Pubkey.new_unique(), Pubkey.new_unique()
    destination = get_associated_token_address(buyer, mint, TOKEN_2022_PROGRAM_ID)
    source = get_associated_token_address(holder.pubkey(), mint, TOKEN_2022_PROGRAM_ID)
    tx = signed(
        holder,
        transfer_checked(
            TransferCheckedParams(TOKEN_2022_PROGRAM_ID, source, mint, destination, holder.pubkey(), 1, 0)
        ),
    )
    index = list(tx.message.account_keys).index(destination)
    balance = {
        "accountIndex": index, "mint": str(mint), "owner": str(buyer), "programId": str(TOKEN_2022_PROGRAM_ID),
        "uiTokenAmount": {"uiAmount": 1.0, "decimals": 0, "amount": "1", "uiAmountString": "1"},
    }  # fmt: skip
    meta = UiTransactionStatusMeta.from_json(
        json.dumps({
            "err": None, "status": {"Ok": None}, "fee": 5000, "preBalances": [], "postBalances": [],
            "postTokenBalances": [balance],
        })
    )  # fmt: skip

    (event,) = events(tx, watch(mint), meta)

    assert event.owner == str(buyer)


def test_a_failed_transaction_has_no_events() -> None:
    _, tx = nft_mint_tx(AUTHORITY, Pubkey.new_unique())
    failed = UiTransactionStatusMeta(TransactionErrorInstructionError(2, InstructionErrorCustom(1)), 5000, [], [])

    decoded = decode(str(tx.signatures[0]), tx, failed, watch())

    assert not decoded.succeeded
    assert decoded.events == []


def test_memos_are_events_of_their_own() -> None:
    tx = signed(TREASURY, memo(b"hello", TREASURY.pubkey()), memo("gr\u00fc\u00df".encode(), TREASURY.pubkey()))

    decoded = decode(str(tx.signatures[0]), tx, OK, watch())

    assert decoded.memos == ["hello", "gr\u00fc\u00df"]
    assert [event.instruction_index for event in decoded.events] == [0, 1]


def with_transfer_data(tx: VersionedTransaction, data: bytes) -> VersionedTransaction:
    """The transaction with its TransferChecked's data replaced (the runtime ignores trailing bytes)."""
    message = tx.message
    good = message.instructions[1]
    bad = CompiledInstruction(good.program_id_index, data, bytes(good.accounts))
    forged = Message.new_with_compiled_instructions(
        message.header.num_required_signatures, message.header.num_readonly_signed_accounts,
        message.header.num_readonly_unsigned_accounts, list(message.account_keys), message.recent_blockhash,
        [message.instructions[0], bad],
    )  # fmt: skip
    return VersionedTransaction(forged, [TREASURY])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes([12]) + (1).to_bytes(8, "little") + bytes([6, 0]), "TransferChecked of 11 bytes"),
        (bytes([12, 1]), "TransferChecked of 2 bytes"),
    ],
)
def test_a_payout_instruction_of_an_unknown_shape_is_refused(data: bytes, reason: str) -> None:
    payout = transfer_tx(TREASURY, Pubkey.new_unique(), PAYOUT_MINT, decimals=6, program=TOKEN_PROGRAM_ID)

    with pytest.raises(DecodeError, match=reason):
        decode("sig", with_transfer_data(payout, data), OK, watch())


def test_an_odd_transfer_of_someone_elses_tokens_is_not_our_concern() -> None:
    theirs = transfer_tx(TREASURY, Pubkey.new_unique(), Pubkey.new_unique())
    odd = with_transfer_data(theirs, bytes([12]) + (1).to_bytes(8, "little") + bytes([0, 0]))

    assert decode("sig", odd, OK, watch()).events == []


def test_a_memo_that_is_not_utf8_is_refused() -> None:
    tx = signed(TREASURY, memo(b"\xff\xfe", TREASURY.pubkey()))

    with pytest.raises(DecodeError, match="not UTF-8"):
        decode("sig", tx, OK, watch())


def _v0_transfer(mint: Pubkey, destination: Pubkey) -> VersionedTransaction:
    """A v0 NFT transfer whose destination token account comes from an address lookup table."""
    holder = Keypair()
    source = get_associated_token_address(holder.pubkey(), mint, TOKEN_2022_PROGRAM_ID)
    keys = [holder.pubkey(), source, mint, TOKEN_2022_PROGRAM_ID]
    data = bytes([12]) + (1).to_bytes(8, "little") + bytes([0])
    # accounts: source 1, mint 2, destination 4 (the first loaded address), owner 0
    ix = CompiledInstruction(3, data, bytes([1, 2, 4, 0]))
    lookup = MessageAddressTableLookup(Pubkey.new_unique(), bytes([0]), bytes([]))
    message = MessageV0(MessageHeader(1, 0, 2), keys, Hash.new_unique(), [ix], [lookup])
    return VersionedTransaction(message, [holder])


def test_a_v0_transaction_resolves_lookup_table_accounts_from_the_meta() -> None:
    mint, destination = Pubkey.new_unique(), Pubkey.new_unique()
    tx = _v0_transfer(mint, destination)
    meta = UiTransactionStatusMeta(None, 5000, [], [], loaded_addresses=UiLoadedAddresses([destination], []))

    (event,) = events(tx, watch(mint), meta)

    assert event.destination == str(destination)


def test_a_v0_transaction_without_its_loaded_addresses_cannot_be_decoded() -> None:
    with pytest.raises(DecodeError, match="lookup tables"):
        decode("sig", _v0_transfer(Pubkey.new_unique(), Pubkey.new_unique()), OK, watch())


def test_the_rpc_encoding_parses_back_into_the_transaction_and_its_meta() -> None:
    _, tx = nft_mint_tx(AUTHORITY, Pubkey.new_unique())
    signature = str(tx.signatures[0])
    encoded = EncodedTransactionWithStatusMeta.from_json(
        json.dumps({"transaction": [base64.b64encode(bytes(tx)).decode(), "base64"], "meta": json.loads(OK.to_json())})
    )

    parsed, meta = parse(encoded, signature)

    assert parsed == tx
    assert meta == OK


@pytest.mark.parametrize(
    ("transaction", "reason"),
    [
        (["AAAA", "base64"], "do not parse"),
        (["not base64!", "base64"], "do not parse"),
        (["1111", "base58"], "not return the transaction in base64"),
    ],
)
def test_transaction_bytes_that_do_not_parse_are_a_decode_error(transaction: object, reason: str) -> None:
    encoded = EncodedTransactionWithStatusMeta.from_json(json.dumps({"transaction": transaction, "meta": None}))

    with pytest.raises(DecodeError, match=reason):
        parse(encoded, "sig")


def test_a_transaction_under_another_signature_is_a_decode_error() -> None:
    _, tx = nft_mint_tx(AUTHORITY, Pubkey.new_unique())
    encoded = EncodedTransactionWithStatusMeta.from_json(
        json.dumps({"transaction": [base64.b64encode(bytes(tx)).decode(), "base64"], "meta": None})
    )

    with pytest.raises(DecodeError, match="another signature"):
        parse(encoded, str(Keypair().pubkey()))


# --- stake deposits and escrow settlements ------------------------------------------------------

VAULT = Keypair()
VAULT_ACCOUNT = get_associated_token_address(VAULT.pubkey(), PAYOUT_MINT, TOKEN_PROGRAM_ID)
ESCROW = Keypair()


def facts_watch(*nft_mints: Pubkey) -> Watch:
    return Watch(
        AUTHORITY.pubkey(), {TREASURY_ACCOUNT}, {VAULT_ACCOUNT}, {ESCROW.pubkey()},
        frozenset(str(mint) for mint in nft_mints),
    )  # fmt: skip


def test_a_transfer_into_the_staking_vault_is_a_stake_deposit_carrying_the_memo() -> None:
    staker = Keypair()
    tx = transfer_tx(staker, VAULT.pubkey(), PAYOUT_MINT, amount=5_000, decimals=6, note=b"roadie:stake",
                     program=TOKEN_PROGRAM_ID)  # fmt: skip

    (deposit,) = [event for event in events(tx, facts_watch()) if event.kind == "stake_deposit"]

    assert (deposit.destination, deposit.authority) == (str(VAULT_ACCOUNT), str(staker.pubkey()))
    assert (deposit.mint, deposit.amount, deposit.memo) == (str(PAYOUT_MINT), 5_000, "roadie:stake")


def settlement_tx(
    nft: Pubkey, buyer: Keypair, seller: Pubkey, price: int, *, escrow: Keypair = ESCROW
) -> VersionedTransaction:
    def move(holder: Pubkey, to: Pubkey, mint: Pubkey, amount: int, decimals: int, program: Pubkey) -> Instruction:
        source = get_associated_token_address(holder, mint, program)
        destination = get_associated_token_address(to, mint, program)
        return transfer_checked(TransferCheckedParams(program, source, mint, destination, holder, amount, decimals))

    return signed(
        buyer,
        create_idempotent_associated_token_account(buyer.pubkey(), buyer.pubkey(), nft, TOKEN_2022_PROGRAM_ID),
        move(escrow.pubkey(), buyer.pubkey(), nft, 1, 0, TOKEN_2022_PROGRAM_ID),
        create_idempotent_associated_token_account(buyer.pubkey(), seller, PAYOUT_MINT, TOKEN_PROGRAM_ID),
        move(buyer.pubkey(), seller, PAYOUT_MINT, price, 6, TOKEN_PROGRAM_ID),
        signers=(escrow,),
    )


def test_an_escrow_settlement_is_the_nft_handed_over_and_the_buyers_payment_to_the_seller() -> None:
    nft, buyer, seller = Pubkey.new_unique(), Keypair(), Pubkey.new_unique()

    found = events(settlement_tx(nft, buyer, seller, 7_000), facts_watch(nft))

    assert [(event.kind, event.authority, event.owner) for event in found] == [
        ("nft_transfer", str(ESCROW.pubkey()), str(buyer.pubkey())),
        ("payment", str(buyer.pubkey()), str(seller)),
    ]
    sold = settlement(found, {ESCROW.pubkey()})
    assert sold == Settlement(str(nft), str(buyer.pubkey()), str(seller), str(PAYOUT_MINT), 7_000)


def test_the_same_transfers_without_the_escrow_are_no_sale() -> None:
    nft, buyer, seller, stranger = Pubkey.new_unique(), Keypair(), Pubkey.new_unique(), Keypair()

    found = events(settlement_tx(nft, buyer, seller, 7_000, escrow=stranger), facts_watch(nft))

    assert [event.kind for event in found] == ["nft_transfer"]  # the payment is someone else's business
    assert settlement(found, {ESCROW.pubkey()}) is None


def test_an_escrow_handing_over_an_nft_without_payment_is_a_refused_settlement() -> None:
    nft, buyer = Pubkey.new_unique(), Keypair()
    tx = transfer_tx(ESCROW, buyer.pubkey(), nft)

    sold = settlement(events(tx, facts_watch(nft)), {ESCROW.pubkey()})

    assert sold is not None
    assert sold.refusal is not None
    assert (sold.nft_mint, sold.price, sold.refusal.code) == (str(nft), None, "unpaid_settlement")


@pytest.mark.parametrize(
    ("memo_text", "terms"),
    [
        ("roadie:stake", StakeTerms(1500, "apy", 0)),
        ("roadie:stake:lock_days=30", StakeTerms(1500, "apy", 30 * 86_400)),
        ("roadie:stake:apy_bps=1200,lock_days=7", StakeTerms(1200, "apy", 7 * 86_400)),
        ("roadie:stake:apr_bps=800", StakeTerms(800, "apr", 0)),
    ],
)
def test_a_stake_memo_names_the_terms_and_defaults_to_the_products_15_percent_apy(
    memo_text: str, terms: StakeTerms
) -> None:
    assert stake_terms(memo_text) == terms


@pytest.mark.parametrize(
    ("memo_text", "reason"),
    [
        (None, "a stake deposit needs a 'roadie:stake' memo; the transaction has none"),
        ("stake please", "the memo 'stake please' does not start with 'roadie:stake'"),
        ("roadie:staked", "the memo 'roadie:staked' does not start with 'roadie:stake'"),
        ("roadie:stake:apy=15%", "'apy=15%' is not apy_bps=, apr_bps= or lock_days= an integer"),
        ("roadie:stake:", "'' is not apy_bps=, apr_bps= or lock_days= an integer"),
        ("roadie:stake:lock_days=1,lock_days=2", "lock_days is given twice"),
        ("roadie:stake:apy_bps=1,apr_bps=1", "give apy_bps or apr_bps, not both"),
        ("roadie:stake:apy_bps=0", "apy_bps must be positive"),
        ("roadie:stake:lock_days=9999", "lock_days must be at most 3660"),
    ],
)
def test_a_stake_memo_that_does_not_parse_says_why(memo_text: str | None, reason: str) -> None:
    with pytest.raises(FactError) as refused:
        stake_terms(memo_text)

    assert (refused.value.code, refused.value.message) == ("invalid_memo", reason)
