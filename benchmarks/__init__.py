"""Speed and search-quality benchmarks of tuner against plain Optuna + PyTorch (``python -m benchmarks.run``)."""
