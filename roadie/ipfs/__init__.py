"""The IPFS pool's domain: the node client, pinning track files, NFT metadata, the local node for tests."""
