"""Webhooks: endpoints clients register, events written with their facts, signed deliveries."""
