"""Keras 3 liquid layers."""
