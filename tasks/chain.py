"""Chain pool job types: exactly-once NFT mints and payout transfers (issue 4)."""
