"""What scripts/ runs, as a library: an HTTP client for SGLang servers, latency statistics, the Amdahl bound of
skipping indexers, a launcher for servers under test, noise-floor verdicts, the layer maps for a model's layer
count, one module per benchmark or GPU check (each with its ``Options`` and ``run``), and ``results``, the
envelope every results file is written in. Nothing here imports SGLang."""
