"""Token instructions and account layouts solana-py does not ship: Token-2022's metadata pointer and
token-metadata extensions, InitializeMint2, and reading a mint's metadata back.

Layouts follow the Token-2022 program's interface crates (little-endian; borsh strings are a u32
length and UTF-8). The rest (ATA, MintTo, SetAuthority, TransferChecked, Memo) comes from
``spl.token.instructions`` and ``spl.memo``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID

MINT_SIZE = 82
ACCOUNT_SIZE = 165
#: base Mint padded to an Account's length, the AccountType byte, one TLV header and the 64-byte pointer.
MINT_WITH_POINTER_SIZE = ACCOUNT_SIZE + 1 + 4 + 64
EXTENSION_METADATA_POINTER = 18
EXTENSION_TOKEN_METADATA = 19
#: On-chain limits Roadie keeps to (Metaplex's, which wallets and indexers expect of every NFT).
MAX_NAME_BYTES = 32
MAX_SYMBOL_BYTES = 10
MAX_URI_BYTES = 200
MAX_FIELD_KEY_BYTES = 32
MAX_FIELD_VALUE_BYTES = 64


def _discriminator(name: str) -> bytes:
    return hashlib.sha256(f"spl_token_metadata_interface:{name}".encode()).digest()[:8]


METADATA_INITIALIZE = _discriminator("initialize_account")
METADATA_UPDATE_FIELD = _discriminator("updating_field")


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<I", len(raw)) + raw


@dataclass(frozen=True)
class TokenMetadata:
    """Token-2022's token-metadata extension: what wallets show for the mint."""

    update_authority: Pubkey | None
    mint: Pubkey
    name: str
    symbol: str
    uri: str
    additional: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        authority = bytes(self.update_authority) if self.update_authority else bytes(32)
        pairs = b"".join(_string(k) + _string(v) for k, v in self.additional.items())
        body = _string(self.name) + _string(self.symbol) + _string(self.uri)
        return authority + bytes(self.mint) + body + struct.pack("<I", len(self.additional)) + pairs

    @classmethod
    def decode(cls, data: bytes) -> TokenMetadata:
        offset = 64

        def read() -> str:
            nonlocal offset
            (length,) = struct.unpack_from("<I", data, offset)
            value = data[offset + 4 : offset + 4 + length].decode()
            offset += 4 + length
            return value

        authority = Pubkey.from_bytes(data[:32])
        name, symbol, uri = read(), read(), read()
        (count,) = struct.unpack_from("<I", data, offset)
        offset += 4
        additional = {}
        for _ in range(count):
            key = read()
            additional[key] = read()
        return cls(
            None if authority == Pubkey.default() else authority,
            Pubkey.from_bytes(data[32:64]),
            name,
            symbol,
            uri,
            additional,
        )


def extensions(data: bytes) -> dict[int, bytes]:
    """The TLV extensions of a Token-2022 mint account (empty for a plain mint)."""
    found: dict[int, bytes] = {}
    offset = ACCOUNT_SIZE + 1
    while offset + 4 <= len(data):
        kind, length = struct.unpack_from("<HH", data, offset)
        if kind == 0:
            break
        found[kind] = data[offset + 4 : offset + 4 + length]
        offset += 4 + length
    return found


def read_metadata(mint_data: bytes) -> TokenMetadata | None:
    raw = extensions(mint_data).get(EXTENSION_TOKEN_METADATA)
    return TokenMetadata.decode(raw) if raw is not None else None


def initialize_mint2(mint: Pubkey, decimals: int, authority: Pubkey, program: Pubkey = TOKEN_PROGRAM_ID) -> Instruction:
    """InitializeMint2 (no rent sysvar account), without a freeze authority."""
    data = bytes([20, decimals]) + bytes(authority) + bytes([0])
    return Instruction(program, data, [AccountMeta(mint, is_signer=False, is_writable=True)])


def initialize_metadata_pointer(mint: Pubkey, authority: Pubkey | None, metadata: Pubkey) -> Instruction:
    """MetadataPointer.Initialize; must come before InitializeMint2."""
    data = bytes([39, 0]) + (bytes(authority) if authority else bytes(32)) + bytes(metadata)
    return Instruction(TOKEN_2022_PROGRAM_ID, data, [AccountMeta(mint, is_signer=False, is_writable=True)])


def initialize_token_metadata(
    mint: Pubkey, update_authority: Pubkey, mint_authority: Pubkey, name: str, symbol: str, uri: str
) -> Instruction:
    data = METADATA_INITIALIZE + _string(name) + _string(symbol) + _string(uri)
    accounts = [
        AccountMeta(mint, is_signer=False, is_writable=True),
        AccountMeta(update_authority, is_signer=False, is_writable=False),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(mint_authority, is_signer=True, is_writable=False),
    ]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def update_metadata_field(mint: Pubkey, update_authority: Pubkey, key: str, value: str) -> Instruction:
    """UpdateField with a custom key (Field::Key = 3)."""
    data = METADATA_UPDATE_FIELD + bytes([3]) + _string(key) + _string(value)
    accounts = [
        AccountMeta(mint, is_signer=False, is_writable=True),
        AccountMeta(update_authority, is_signer=True, is_writable=False),
    ]
    return Instruction(TOKEN_2022_PROGRAM_ID, data, accounts)


def mint_account_space(metadata: TokenMetadata) -> tuple[int, int]:
    """(space to allocate, size to fund): the metadata instructions grow the account but add no lamports."""
    return MINT_WITH_POINTER_SIZE, MINT_WITH_POINTER_SIZE + 4 + len(metadata.encoded())


def create_mint_account(payer: Pubkey, mint: Pubkey, space: int, lamports: int, program: Pubkey) -> Instruction:
    return create_account(
        CreateAccountParams(from_pubkey=payer, to_pubkey=mint, lamports=lamports, space=space, owner=program)
    )
