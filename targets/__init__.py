"""Targets: one module per target, each lowering an IR graph to an artifact."""
