"""The platform's accounts on chain: its keypair, the reward mint, the treasury that pays from it, the staking
vault deposits go to and the marketplace escrow.

The treasury is the platform keypair's associated token account of the reward mint. With no
``ROADIE_REWARD_MINT`` configured, the reward mint is derived from the platform keypair, so a fresh
local chain gets the same address every time :func:`provision` creates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from solders.pubkey import Pubkey
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    MintToParams,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to,
)

from roadie.chain.client import Chain
from roadie.chain.keys import PlatformKeypair, create_keypair_file, load_keypair
from roadie.chain.sending import send_and_confirm, wait_for
from roadie.chain.token import MINT_SIZE, create_mint_account, initialize_mint2
from roadie.settings import Settings, get_settings

REWARD_MINT_PURPOSE = "roadie/reward-mint"
STAKING_VAULT_PURPOSE = "roadie/staking-vault"
ESCROW_PURPOSE = "roadie/escrow"
LAMPORTS_PER_SOL = 1_000_000_000


@lru_cache(maxsize=4)
def _cached_keypair(path: Path) -> PlatformKeypair:
    return load_keypair(path)


def platform_keypair(settings: Settings | None = None) -> PlatformKeypair:
    """The platform keypair from ``ROADIE_KEYPAIR_PATH`` (read once per process)."""
    return _cached_keypair((settings or get_settings()).keypair_path.resolve())


def reward_mint(settings: Settings | None = None) -> Pubkey:
    settings = settings or get_settings()
    if settings.reward_mint:
        return Pubkey.from_string(settings.reward_mint)
    return platform_keypair(settings).derive(REWARD_MINT_PURPOSE).pubkey()


def treasury(settings: Settings | None = None, token_program: Pubkey = TOKEN_PROGRAM_ID) -> Pubkey:
    """The token account payouts are paid from."""
    settings = settings or get_settings()
    return get_associated_token_address(platform_keypair(settings).pubkey, reward_mint(settings), token_program)


def staking_vault_wallet(settings: Settings | None = None) -> Pubkey:
    """The owner of the staking vault (deposits go to its token account of the reward mint)."""
    settings = settings or get_settings()
    if settings.staking_vault_wallet:
        return Pubkey.from_string(settings.staking_vault_wallet)
    return platform_keypair(settings).derive(STAKING_VAULT_PURPOSE).pubkey()


def staking_vault(settings: Settings | None = None, token_program: Pubkey = TOKEN_PROGRAM_ID) -> Pubkey:
    """The token account stake deposits are paid into."""
    settings = settings or get_settings()
    return get_associated_token_address(staking_vault_wallet(settings), reward_mint(settings), token_program)


def escrow_wallet(settings: Settings | None = None) -> Pubkey:
    """The marketplace escrow that holds listed NFTs and hands them to their buyers."""
    settings = settings or get_settings()
    if settings.escrow_wallet:
        return Pubkey.from_string(settings.escrow_wallet)
    return platform_keypair(settings).derive(ESCROW_PURPOSE).pubkey()


@dataclass(frozen=True)
class Provisioned:
    platform: Pubkey
    reward_mint: Pubkey
    treasury: Pubkey

    def __str__(self) -> str:
        return f"platform {self.platform}  reward mint {self.reward_mint}  treasury {self.treasury}"


async def provision(
    chain: Chain, settings: Settings | None = None, *, sol: int = 1_000, reward_supply: int = 10**15
) -> Provisioned:
    """On a fresh local chain: a platform keypair (created if missing) with SOL, the reward mint, a funded treasury.

    Idempotent: what exists is kept. ``reward_supply`` is in base units of the reward mint.
    """
    settings = settings or get_settings()
    keypair = create_keypair_file(settings.keypair_path)
    _cached_keypair.cache_clear()
    if (await chain.account(keypair.pubkey)) is None:
        funded = await chain.airdrop(keypair.pubkey, sol * LAMPORTS_PER_SOL)
        await wait_for(chain, [funded], "confirmed", timeout_s=30, interval_s=0.1)
    mint = reward_mint(settings)
    vault = treasury(settings)
    if (await chain.account(mint)) is None:
        if settings.reward_mint:
            raise RuntimeError(f"the configured reward mint {mint} does not exist on this chain")
        mint_keypair = keypair.derive(REWARD_MINT_PURPOSE)
        rent = await chain.rent_exempt_minimum(MINT_SIZE)
        payer = keypair.pubkey
        await send_and_confirm(
            chain,
            [
                create_mint_account(payer, mint, MINT_SIZE, rent, TOKEN_PROGRAM_ID),
                initialize_mint2(mint, settings.reward_mint_decimals, payer),
                create_idempotent_associated_token_account(payer, payer, mint, TOKEN_PROGRAM_ID),
                mint_to(MintToParams(TOKEN_PROGRAM_ID, mint, vault, payer, reward_supply)),
            ],
            [keypair.signer, mint_keypair],
        )
    return Provisioned(keypair.pubkey, mint, vault)
