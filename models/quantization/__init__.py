"""Deployment-exact fake-quant: the numeric core's integer semantics in JAX and keras.ops.

The integer semantics themselves (parameters, rounding, multipliers, quantize / dequantize,
tables) are the numpy-only numeric core `ncc.numerics`, re-exported here for training
code. The compiler's golden model computes those numpy functions; training computes the
JAX (and `keras.ops`) fake-quant below, each a re-spelling of one core formula, tested
bit-equal against it, so the two cannot drift.

JAX versions (suffix `_jax`) give the same bits without jax x64: 32x32 -> 64-bit
products are formed from 16-bit halves in uint32.

One idea per module, everything re-exported here:

- `integer_jax`: the core's integer arithmetic in JAX;
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
    INT_DECAY_MARKER,
    JAX_TABLE_FUNCTIONS,
    FakeQuantSpec,
    fake_quant,
    fake_quant_dynamic,
    fake_quant_params_from_jaxpr_eqn,
    fake_quant_spec_from_jaxpr_eqn,
    fake_quant_table,
)
from ncc.models.quantization.integer_jax import (  # noqa: F401
    dequantize_jax,
    interpolated_lookup_jax,
    lookup_jax,
    multiply_by_quantized_multiplier_int64_jax,
    multiply_by_quantized_multiplier_jax,
    quantize_bias_jax,
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
    fake_quant_binary,
    fake_quant_dense,
)
from ncc.numerics import (  # noqa: F401
    INT32_F32_MAX,
    INT32_MAX,
    INT32_MIN,
    INT_DECAY_TABLE,
    INTERP_ENTRIES,
    MIN_SCALE,
    TABLE_FUNCTIONS,
    QuantParams,
    add_left_shift,
    asymmetric_params,
    bias_scale,
    binary_multipliers,
    build_interp_table,
    build_table,
    dense_multipliers,
    deployed_table,
    dequantize,
    int16_activation_params,
    int_decay,
    int_decay_table_name,
    int_range,
    interpolated_lookup,
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
    "BINARY_MARKER", "DENSE_MARKER", "INT_DECAY_MARKER", "JAX_TABLE_FUNCTIONS",
    "quantize_bias_jax", "dense_multipliers", "binary_multipliers", "add_left_shift",
    "bias_scale", "int_decay", "int_decay_table_name", "INTERP_ENTRIES", "build_interp_table",
    "deployed_table", "interpolated_lookup", "interpolated_lookup_jax",
    "int16_activation_params",
]
