"""Which Keras layers ncc compiles step by step, and a clear refusal for the others.

ncc runs a Keras model one time step at a time: each recurrent layer contributes its
cell's step, and every other layer is applied to that step's features, shape (1, F). A
layer that looks at several time steps at once (a convolution or pooling over time,
attention, masking, a reshape across the time axis) has no per-step form; compiling it
per step would silently compute something else, so ncc refuses it and says what to do.
"""

from __future__ import annotations

from typing import Any

from ncc.compiler.builder import TraceError

_CONV = ("convolves over time steps", "precompute it outside the model (feed its output "
         "as ncc's input) or replace it by a per-step layer (Dense, TimeDistributed)")
_POOL = ("pools over time steps", "pool outside the model, or use a per-step layer")
_GLOBAL = ("pools over the whole sequence", "use the recurrent layer's output at the "
           "last step (return_sequences=False) instead of pooling over time")
_ATTENTION = ("attends over time steps, so its state (the keys and values seen so far) "
              "grows with the sequence", "ncc compiles recurrences with a fixed-size state "
              "only; use a recurrent layer (CfC, LTC, GRU, LSTM)")
_MASK = ("masks padded time steps", "a device runs only the steps it is given: remove "
         "Masking and feed the real steps (reset the state between sequences)")
_RESHAPE_TIME = ("changes the time axis", "keep the time axis as it is; ncc feeds one step "
                 "of features at a time")

TIME_MIXING: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("Conv1D", "Conv1DTranspose", "SeparableConv1D", "DepthwiseConv1D",
                     "ConvLSTM1D"), _CONV),
    **dict.fromkeys(("MaxPooling1D", "AveragePooling1D"), _POOL),
    **dict.fromkeys(("GlobalAveragePooling1D", "GlobalMaxPooling1D"), _GLOBAL),
    **dict.fromkeys(("MultiHeadAttention", "Attention", "AdditiveAttention",
                     "GroupQueryAttention", "GroupedQueryAttention"), _ATTENTION),
    "Masking": _MASK,
    **dict.fromkeys(("Cropping1D", "ZeroPadding1D", "UpSampling1D", "RepeatVector"),
                    _RESHAPE_TIME),
}
"""Keras layer class -> (what it does across time, what to do instead)."""

RESHAPING = ("Flatten", "Reshape", "Permute")
"""Per-step when they see one step's features; across time when their input has a time
axis (rank >= 3: batch, time, features)."""


def _refusal(layer: Any, what: str, instead: str) -> TraceError:
    return TraceError(f"layer {layer.name!r} ({type(layer).__name__}) {what}; ncc compiles "
                      f"per-step layers only: {instead}")


def _input_rank(layer: Any) -> int | None:
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError, TypeError):  # not built into a graph model
        return None


def check_per_step(layer: Any) -> None:
    """Raise TraceError naming `layer` and the reason if it mixes time steps."""
    for cls in type(layer).__mro__:
        if cls.__name__ in TIME_MIXING:
            raise _refusal(layer, *TIME_MIXING[cls.__name__])
    if type(layer).__name__ in RESHAPING and (_input_rank(layer) or 0) >= 3:
        raise _refusal(layer, *_RESHAPE_TIME)


def step_failure(layer: Any, error: Exception) -> TraceError:
    """A per-step layer that raised on one step's features: the layer, and why it may."""
    first = (str(error).splitlines() or [""])[0]
    return TraceError(f"layer {layer.name!r} ({type(layer).__name__}) cannot run on one time "
                      f"step's features ({type(error).__name__}: {first[:200]}); ncc applies "
                      "each non-recurrent layer to one step at a time, so a layer that needs "
                      "the time axis cannot be compiled")


def output_semantics(last_rnn: Any) -> str:
    """What the artifact's per-step output means, given the model's last recurrent layer."""
    if getattr(last_rnn, "return_sequences", True):
        return ("per step: the model's output at this step (return_sequences=True: the "
                "Keras model returns one output per step)")
    return (f"per step: the output the model would give if the sequence ended at this step; "
            f"layer {last_rnn.name!r} has return_sequences=False, so the Keras model returns "
            "only the last step's output, which equals the artifact's output after the last "
            "step")
