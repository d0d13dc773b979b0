"""Strawberry types, inputs, error types, the root types and build_schema(...)."""

from schema.root import build_schema

__all__ = ["build_schema"]
