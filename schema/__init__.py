"""Strawberry types, inputs, error types and per domain its root fields for root.py."""
