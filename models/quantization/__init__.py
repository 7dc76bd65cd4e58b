"""ncc integer semantics and deployment-exact fake-quant: the single source of truth.

The compiler's golden integer model imports the numpy functions here; training imports
the JAX (and `keras.ops`) fake-quant built on the same formulas, so the two cannot drift.

Affine quantization: real = scale * (q - zero_point), q an integer of `bits` bits
(signed: [-2^(b-1), 2^(b-1) - 1], unsigned: [0, 2^b - 1]).

Rounding, step by step (TFLite reference kernels, default double-rounding build):

- float -> int (`quantize`): q = saturate(round_half_away(fl32(x * fl32(1 / scale))) + zp).
  Float32 throughout, multiplying by the float32 reciprocal of the scale as TFLite's
  optimized AffineQuantize does (the reference kernel divides; the two can differ by one
  step when x / scale is within one ulp of a half-integer). Multiplication, unlike XLA's
  float division, is correctly rounded on every backend, so numpy and JAX agree bit for bit.
- int -> float (`dequantize`): fl32(fl32(q - zp) * scale).
- `quantize_multiplier(real)`: real ~= m * 2^(shift - 31), m in [2^30, 2^31), m rounded
  half away from zero (TfLiteRound); shift < -31 flushes to (0, 0).
- `multiply_by_quantized_multiplier(x, m, shift)` = RoundingDivideByPOT(
  SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), m), max(-shift, 0)) on int32:
  the doubling high multiply rounds half away from zero (nudge, then C truncating
  division) and saturates only for INT32_MIN * INT32_MIN; the power-of-two division
  rounds half away from zero. The left shift wraps modulo 2^32 like the int32 multiply
  in C on every real core; callers keep x * 2^shift inside int32.
- lookup tables (`build_table`): entry = saturate(round_half_away(f(dequant(q)) / s_out)
  + zp_out) computed in float64 (deterministic, independent of any runtime's libm).

JAX versions (suffix `_jax`) give the same bits without jax x64: 32x32 -> 64-bit
products are formed from 16-bit halves in uint32.

One idea per module, everything re-exported here:

- `numeric`: the numpy core (parameters, rounding, multipliers, quantize, tables);
- `integer_jax`: the same integer arithmetic in JAX;
- `fake_quant`: fake-quant points (JAX custom_jvp, readable back from a jaxpr);
- `keras_ops`: fake-quant in `keras.ops` for the Keras layers;
- `config`: `QuantConfig`;
- `kernels`: integer-exact fake-quant of dense layers and of add / sub / mul.
"""

from __future__ import annotations

from ncc.models.quantization.config import (  # noqa: F401
    PARTS,
    QuantConfig,
)
from ncc.models.quantization.fake_quant import (  # noqa: F401
    FAKE_QUANT_DYNAMIC_MARKER,
    FAKE_QUANT_MARKER,
    FAKE_QUANT_TABLE_MARKER,
    FakeQuantSpec,
    fake_quant,
    fake_quant_dynamic,
    fake_quant_params_from_jaxpr_eqn,
    fake_quant_spec_from_jaxpr_eqn,
    fake_quant_table,
)
from ncc.models.quantization.integer_jax import (  # noqa: F401
    dequantize_jax,
    lookup_jax,
    multiply_by_quantized_multiplier_int64_jax,
    multiply_by_quantized_multiplier_jax,
    quantize_jax,
    quantize_multiplier_jax,
    requantize_jax,
    round_half_away_jax,
    rounding_divide_by_pot_jax,
    saturate_jax,
    saturating_rounding_doubling_high_mul_jax,
)
from ncc.models.quantization.keras_ops import (  # noqa: F401
    keras_fake_quant,
    keras_fake_quant_table,
)
from ncc.models.quantization.kernels import (  # noqa: F401
    BINARY_KINDS,
    BINARY_MARKER,
    DENSE_MARKER,
    add_left_shift,
    binary_multipliers,
    dense_multipliers,
    fake_quant_binary,
    fake_quant_dense,
    quantize_dense_bias,
)
from ncc.models.quantization.numeric import (  # noqa: F401
    INT32_MAX,
    INT32_MIN,
    INT_DECAY_MARKER,
    INT_DECAY_TABLE,
    MIN_SCALE,
    TABLE_FUNCTIONS,
    QuantParams,
    asymmetric_params,
    build_table,
    dequantize,
    int_decay,
    int_decay_table_name,
    int_range,
    lookup,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_int64,
    params_for_tensor,
    params_from_range,
    quantize,
    quantize_bias,
    quantize_multiplier,
    quantize_multiplier_array,
    requantize,
    round_half_away,
    rounding_divide_by_pot,
    saturate,
    saturating_rounding_doubling_high_mul,
    symmetric_params,
)

__all__ = [
    "INT32_MIN", "INT32_MAX", "FAKE_QUANT_MARKER", "FAKE_QUANT_TABLE_MARKER",
    "FAKE_QUANT_DYNAMIC_MARKER", "TABLE_FUNCTIONS", "QuantParams", "QuantConfig",
    "FakeQuantSpec", "int_range", "round_half_away", "saturate", "symmetric_params",
    "asymmetric_params", "params_from_range", "params_for_tensor",
    "quantize_multiplier", "quantize_multiplier_array", "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot", "multiply_by_quantized_multiplier", "quantize", "dequantize",
    "requantize", "quantize_bias", "build_table", "lookup", "round_half_away_jax",
    "saturate_jax", "quantize_multiplier_jax", "saturating_rounding_doubling_high_mul_jax",
    "rounding_divide_by_pot_jax", "multiply_by_quantized_multiplier_jax",
    "multiply_by_quantized_multiplier_int64_jax", "quantize_jax",
    "dequantize_jax", "requantize_jax", "lookup_jax", "fake_quant", "fake_quant_table",
    "fake_quant_dynamic", "fake_quant_spec_from_jaxpr_eqn", "fake_quant_params_from_jaxpr_eqn",
    "keras_fake_quant", "keras_fake_quant_table", "fake_quant_dense", "fake_quant_binary",
    "BINARY_MARKER",
]
