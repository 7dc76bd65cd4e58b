"""Rebuilding a saved Keras model without drawing the random weights it then overwrites.

Keras builds every layer of a saved model with its initializers before it reads the
weights. Under JAX each random initializer XLA-compiles a sampler for its shape (about
0.5 s apiece: 2.8 s of a CfC64's 3 s load), and the values are thrown away. Inside
`placeholder_initializers()` random initializers give zeros instead. Only for loaders
that assign every weight afterwards: Keras' own load refuses a file whose variables do
not match the model's, and `checkpoint.load_checkpoint` checks the shapes and sets them
all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def placeholder_initializers() -> Iterator[None]:
    """While open, a Keras variable created with a random initializer starts as zeros."""
    try:
        from keras.src.backend.common.variables import Variable
        from keras.src.initializers.random_initializers import RandomInitializer
    except ImportError:  # another Keras layout: load as usual
        yield
        return
    import keras

    drawn = Variable._initialize_with_initializer

    def zeros_for_random(self: Variable, initializer: object) -> None:
        if isinstance(initializer, RandomInitializer):
            initializer = keras.initializers.Zeros()
        drawn(self, initializer)

    Variable._initialize_with_initializer = zeros_for_random
    try:
        yield
    finally:
        Variable._initialize_with_initializer = drawn
