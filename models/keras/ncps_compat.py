"""Move from `ncps.keras` (1.0.1) to ncc: same maths, weights copied exactly.

    ours = CfC.from_ncps(ncps_layer)        # or LTC.from_ncps, or convert_ncps(layer)
    load_ncps_weights(ours, ncps_layer)     # into an ncc layer you built yourself

The ncps layer must be built (called once). Outputs then agree to float rounding.
One ncps quirk is folded in: a wired ncps CfC multiplies its kernels by the
*signed* adjacency (polarity -1 flips a weight), ncc by its magnitude (0/1), so
the copy stores W * adjacency, which gives the same products.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ncc.models import wirings
from ncc.models.keras.cfc import CfC, CfCCell
from ncc.models.keras.ltc import LTC, LTCCell

_RNN_ARGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
             "zero_output_for_mask")


def _rnn_kwargs(layer: Any) -> dict[str, Any]:
    return {k: getattr(layer, k) for k in _RNN_ARGS}


def _input_dim(cell: Any) -> int:
    """Input width of a built ncps dense CfCCell (its first kernel reads [x, h])."""
    if not getattr(cell, "built", False) or getattr(cell, "ff1_kernel", None) is None:
        raise ValueError("the ncps layer is not built: call it on an input first")
    first = cell.backbone_fn.layers[0].kernel if cell._backbone_layers else cell.ff1_kernel
    return int(first.shape[0]) - cell.units


def _activation_name(fn: Any) -> Any:
    name = getattr(fn, "__name__", fn)
    return "lecun_tanh" if name == "lecun_tanh" else name


def _ncps_cell(layer: Any) -> Any:
    cell = layer.cell
    if type(cell).__name__ == "MixedMemoryRNN":
        raise ValueError("mixed_memory=True (an LSTM memory cell) is not supported by ncc")
    return cell


def cfc_from_ncps(layer: Any, **kwargs: Any) -> CfC:
    """An ncc `CfC` equal to a built `ncps.keras.CfC` (extra kwargs go to `CfC`)."""
    cell = _ncps_cell(layer)
    if type(cell).__name__ == "WiredCfCCell":
        if not cell.fully_recurrent:
            raise ValueError("ncps fully_recurrent=False cannot run in ncps 1.0.1 (its "
                             "recurrent mask has the wrong shape); nothing to convert")
        ours = CfC(wirings.from_ncps(cell.wiring), mode=cell.mode, **_rnn_kwargs(layer),
                   **kwargs)
        input_dim = int(cell.wiring.input_dim)
    else:
        if cell.sparsity_mask is not None:
            raise ValueError("an ncps CfCCell with a custom sparsity_mask has no ncc "
                             "equivalent; use a wiring")
        layers = cell._backbone_layers
        ours = CfC(wirings.FullyConnected(cell.units), mode=cell.mode,
                   activation=_activation_name(cell._activation),
                   backbone_units=cell._backbone_units if layers else None,
                   backbone_layers=layers, backbone_dropout=cell._backbone_dropout,
                   **_rnn_kwargs(layer), **kwargs)
        input_dim = _input_dim(cell)
    ours.build((None, None, input_dim))
    load_ncps_weights(ours, layer)
    return ours


def ltc_from_ncps(layer: Any, **kwargs: Any) -> LTC:
    """An ncc `LTC` equal to a built `ncps.keras.LTC` (extra kwargs go to `LTC`)."""
    cell = _ncps_cell(layer)
    if cell.wiring.input_dim is None:
        raise ValueError("the ncps layer is not built: call it on an input first")
    ours = LTC(wirings.from_ncps(cell.wiring), input_mapping=cell._input_mapping,
               output_mapping=cell._output_mapping, ode_unfolds=cell._ode_unfolds,
               epsilon=cell._epsilon, initialization_ranges=dict(cell._init_ranges),
               **_rnn_kwargs(layer), **kwargs)
    ours.build((None, None, int(cell.wiring.input_dim)))
    load_ncps_weights(ours, layer)
    return ours


def convert_ncps(layer: Any, **kwargs: Any) -> CfC | LTC:
    """`ncps.keras.CfC` -> ncc `CfC`, `ncps.keras.LTC` -> ncc `LTC`."""
    kind = type(layer).__name__
    if kind == "CfC":
        return cfc_from_ncps(layer, **kwargs)
    if kind == "LTC":
        return ltc_from_ncps(layer, **kwargs)
    raise ValueError(f"expected an ncps.keras CfC or LTC layer, got {kind}")


def load_ncps_weights(ours: CfC | LTC | CfCCell | LTCCell, layer: Any) -> None:
    """Copy the weights of ncps `layer` (CfC/LTC layer or cell) into built ncc `ours`."""
    cell = getattr(ours, "cell", ours)
    src = _ncps_cell(layer) if hasattr(layer, "cell") else layer
    if not cell.built:
        raise ValueError("build the ncc layer first (call it or .build(input_shape))")
    if isinstance(cell, LTCCell):
        _copy(cell.params, {k: v for k, v in src._params.items() if "sparsity" not in k})
    elif isinstance(cell, CfCCell):
        subcells = src._cfc_layers if type(src).__name__ == "WiredCfCCell" else [src]
        if len(subcells) != len(cell.layer_sizes):
            raise ValueError(f"layer count differs: ncps {len(subcells)}, ncc "
                             f"{len(cell.layer_sizes)}")
        for i, sub in enumerate(subcells):
            _copy_cfc_subcell(cell, i, sub)
    else:
        raise ValueError(f"expected an ncc CfC/LTC layer or cell, got {type(ours).__name__}")


def _copy_cfc_subcell(cell: CfCCell, i: int, sub: Any) -> None:
    mask = None if sub.sparsity_mask is None else np.asarray(sub.sparsity_mask)

    def kernel(v: Any) -> np.ndarray:
        w = np.asarray(v)
        return w if mask is None else w * mask  # fold the ncps signed mask

    pairs = [(cell.ff1_kernel[i], kernel(sub.ff1_kernel)), (cell.ff1_bias[i], sub.ff1_bias)]
    if cell.mode == "pure":
        pairs += [(cell.w_tau[i], sub.w_tau), (cell.A[i], sub.A)]
    else:
        pairs += [(cell.ff2_kernel[i], kernel(sub.ff2_kernel)), (cell.ff2_bias[i], sub.ff2_bias),
                  (cell.time_a[i].kernel, sub.time_a.kernel),
                  (cell.time_a[i].bias, sub.time_a.bias),
                  (cell.time_b[i].kernel, sub.time_b.kernel),
                  (cell.time_b[i].bias, sub.time_b.bias)]
    if cell.backbone_layers:
        dense = [la for la in sub.backbone_fn.layers if hasattr(la, "kernel")]
        for ours_dense, theirs in zip(cell.backbone, dense, strict=True):
            pairs += [(ours_dense.kernel, theirs.kernel), (ours_dense.bias, theirs.bias)]
    for var, value in pairs:
        _assign(var, value)


def _copy(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    if set(ours) != set(theirs):
        raise ValueError(f"parameters differ: ncc {sorted(ours)}, ncps {sorted(theirs)}")
    for name, var in ours.items():
        _assign(var, theirs[name])


def _assign(var: Any, value: Any) -> None:
    value = np.asarray(value, dtype=np.float32)
    if tuple(var.shape) != value.shape:
        raise ValueError(f"{var.path}: shape {tuple(var.shape)} != ncps shape {value.shape}")
    var.assign(value)
