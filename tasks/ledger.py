"""Ledger pool job types: reward accrual, staking payouts, royalty distribution (issue 5)."""
