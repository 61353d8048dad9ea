"""Solana: the chain client, NFT mints, payout transfers and the local chain (issue 4)."""
