"""Benchmarks run by `make bench`; each module bench_*.py has a main() printing ratios to a same-run baseline."""
