"""Benchmarks run by `make bench`.

Each module bench_*.py has a main() printing its figures as ratios to a same-run baseline.
"""
