"""Benchmarks (`make bench`): figures printed and written to bench/RESULTS.md."""
