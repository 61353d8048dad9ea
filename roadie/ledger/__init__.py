"""The money side of the music service: listening rewards, staking, royalties and payouts (issue 5).

Everything is integer base units. Movements are balanced sets of entries in a double-entry ledger
(``models.ledger``); periodic work is keyed by its period so that it happens once.
"""
