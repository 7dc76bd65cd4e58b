"""ncc's numeric core: the integer semantics every part of ncc computes, numpy only.

One function per formula, in five modules:

- `fixed_point`: rounding (half away from zero), saturation, TFLite's QuantizeMultiplier,
  SaturatingRoundingDoublingHighMul, RoundingDivideByPOT, MultiplyByQuantizedMultiplier
  (int32 form, and the int64 form of the 16x8 kernels with its 16-bit reduced multiplier);
- `params`: the one `QuantParams` (scale, zero_point, bits, signed, axis) and the
  choosers that turn ranges into parameters;
- `affine`: quantize, dequantize, requantize;
- `kernel_params`: the integer kernels' compile-time parameters (dense bias and
  multipliers, ADD / SUB / MUL multipliers);
- `tables`: nonlinearity tables (and their float functions, lecun_tanh's constants) and
  the integer decays of spiking neurons.

The golden model (`ncc.compiler.golden`), the quantizer, every target and the training
side's fake-quant (`ncc.models.quantization`, which re-spells these formulas in JAX and
keras.ops and is tested bit-equal against them) call these. Importing this package
imports numpy and the standard library only.

Rounding, step by step (TFLite reference kernels, default double-rounding build):

- float -> int (`quantize`): q = saturate(round_half_away(fl32(x * fl32(1 / scale))) + zp);
- int -> float (`dequantize`): fl32(fl32(q - zp) * scale);
- `quantize_multiplier(real)`: real ~= m * 2^(shift - 31), m in [2^30, 2^31), m rounded
  half away from zero; shift < -31 flushes to (0, 0);
- `multiply_by_quantized_multiplier(x, m, shift)` = RoundingDivideByPOT(
  SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), m), max(-shift, 0)) on int32,
  the left shift wrapping modulo 2^32 like C's int32 multiply;
- tables (`build_table`): entry = saturate(round_half_away(f(dequant(q)) / s_out) + zp_out)
  in float64, independent of any runtime's libm; for int16 inputs the compact form
  (`build_interp_table`, 513 entries) read by `interpolated_lookup`:
  y = (T[i] 128 + (T[i+1] - T[i]) f + 64) >> 7 with i = (q + 2^15) >> 7, f = (q + 2^15) & 127.
"""

from ncc.numerics.affine import dequantize, quantize, requantize, requantize_multipliers
from ncc.numerics.fixed_point import (
    INT32_F32_MAX,
    INT32_MAX,
    INT32_MIN,
    int_range,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_int64,
    quantize_multiplier,
    quantize_multiplier_array,
    reduced_multiplier,
    round_half_away,
    rounding_divide_by_pot,
    saturate,
    saturating_rounding_doubling_high_mul,
    wrap32,
)
from ncc.numerics.kernel_params import (
    add_left_shift,
    bias_reciprocal,
    bias_scale,
    binary_multipliers,
    dense_multipliers,
    quantize_bias,
)
from ncc.numerics.params import (
    MIN_SCALE,
    SCALE_BITS_16,
    QuantParams,
    asymmetric_params,
    dtype_range,
    f32_at_least,
    int16_activation_params,
    params_for_tensor,
    params_from_range,
    short_scale,
    symmetric_params,
)
from ncc.numerics.tables import (
    INT_DECAY_TABLE,
    INTERP_BITS,
    INTERP_ENTRIES,
    INTERP_SEGMENT_BITS,
    LECUN_TANH_AMPLITUDE,
    LECUN_TANH_GAIN,
    RSQRT_FLOOR,
    TABLE_FUNCTIONS,
    build_interp_table,
    build_table,
    canonical_json,
    decay_multipliers,
    deployed_table,
    int_decay,
    int_decay_table_name,
    interp_points,
    interp_table,
    interpolated_lookup,
    is_interpolated,
    lecun_tanh,
    lookup,
    sigmoid,
    table_decay,
)

__all__ = [
    "INT32_MIN", "INT32_MAX", "INT32_F32_MAX", "MIN_SCALE", "SCALE_BITS_16",
    "INT_DECAY_TABLE", "LECUN_TANH_AMPLITUDE", "LECUN_TANH_GAIN", "TABLE_FUNCTIONS",
    "RSQRT_FLOOR",
    "QuantParams", "int_range", "dtype_range", "f32_at_least", "symmetric_params",
    "asymmetric_params", "params_from_range", "params_for_tensor", "short_scale",
    "int16_activation_params", "round_half_away", "saturate", "quantize_multiplier",
    "quantize_multiplier_array", "wrap32", "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot", "multiply_by_quantized_multiplier", "reduced_multiplier",
    "multiply_by_quantized_multiplier_int64", "quantize", "dequantize", "requantize",
    "requantize_multipliers", "bias_scale", "bias_reciprocal", "quantize_bias",
    "dense_multipliers", "add_left_shift", "binary_multipliers", "canonical_json",
    "sigmoid", "lecun_tanh", "build_table", "lookup", "decay_multipliers", "int_decay",
    "int_decay_table_name", "table_decay", "INTERP_BITS", "INTERP_ENTRIES",
    "INTERP_SEGMENT_BITS", "is_interpolated", "interpolated_lookup", "interp_points",
    "interp_table", "build_interp_table", "deployed_table",
]
