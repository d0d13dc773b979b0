"""Strawberry types, inputs, error types and each domain's root fields; root.py
composes them."""
