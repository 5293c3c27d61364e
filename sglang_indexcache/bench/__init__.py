"""Benchmark and load-test helpers: an HTTP client for SGLang servers, latency statistics, the Amdahl bound
of skipping indexers, and a launcher for servers under test. Nothing here imports SGLang."""
