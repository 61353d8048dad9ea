"""Roadie: the asynchronous worker platform behind a Web3 music service."""
