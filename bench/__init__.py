"""cs-relay's benchmark: `python -m bench --help` (or `make bench`); see docs/benchmarks.md."""
