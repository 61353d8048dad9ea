"""Chain pool job types: exactly-once NFT mints and payout transfers (issue 4)."""

from __future__ import annotations

import asyncio
from typing import Any

from roadie.chain.client import connect
from roadie.chain.nft import MintPayload, mint_nft
from roadie.chain.platform import platform_keypair
from roadie.chain.transfers import TransferBatchPayload, pay_batch
from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type
from roadie.settings import get_settings


@job_type("nft.mint", MintPayload, queue="chain", max_attempts=8, soft_time_limit_s=600, hard_time_limit_s=660)
def mint(payload: MintPayload, context: JobContext) -> dict[str, Any]:
    """Mint a track's Token-2022 NFT exactly once and follow it to finalized."""
    settings = get_settings()

    async def work() -> dict[str, Any]:
        async with connect(settings) as chain:
            return await mint_nft(chain, payload, platform_keypair(settings), settings)

    return asyncio.run(work())


@job_type(
    "chain.transfer_batch",
    TransferBatchPayload,
    queue="chain",
    max_attempts=8,
    soft_time_limit_s=600,
    hard_time_limit_s=660,
)
def transfer_batch(payload: TransferBatchPayload, context: JobContext) -> dict[str, Any]:
    """Pay a payout batch from the treasury exactly once and follow it to finalized."""
    settings = get_settings()

    async def work() -> dict[str, Any]:
        async with connect(settings) as chain:
            return await pay_batch(chain, payload.batch_id, platform_keypair(settings), settings)

    return asyncio.run(work())
