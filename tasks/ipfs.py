"""IPFS pool job types: pinning and unpinning track content and NFT metadata (issue 3)."""
