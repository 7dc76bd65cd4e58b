"""Runtime harness: sessions over real runtimes and validation metrics."""
