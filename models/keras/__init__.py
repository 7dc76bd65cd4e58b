"""Keras 3 liquid layers: CfC and LTC over ncc wirings, ncps.keras maths.

    from ncc.models.keras import CfC, LTC, AutoNCP
    layer = CfC(AutoNCP(32, output_size=4), mode="default")
    y = layer(x)            # x: (batch, T, F)  -> y: (batch, T, 4)
    y = layer([x, dt])      # dt: (batch, T) or (batch, T, 1) time spans

    # quantization-aware: fake-quant where the deployed integer arithmetic rounds
    layer = CfC(AutoNCP(32, output_size=4), quantization=QuantConfig())
    set_quant_mode(model, "observe"); model.predict(x); freeze(model)

Importing this package registers every class (and the wirings) with Keras under
the "ncc" package, so `keras.models.load_model(path, safe_mode=True)` finds them.
"""

import keras

from ncc.models.keras.base import LiquidCell, LiquidRNN, lecun_tanh
from ncc.models.keras.cfc import CfC, CfCCell
from ncc.models.keras.ltc import LTC, LTCCell
from ncc.models.keras.ncps_compat import (
    cfc_from_ncps,
    convert_ncps,
    load_ncps_weights,
    ltc_from_ncps,
)
from ncc.models.keras.quant import (
    QuantDense,
    QuantPoint,
    WeightQuant,
    freeze,
    set_quant_mode,
    sync_quant_state,
)
from ncc.models.wirings import NCP, AutoNCP, FullyConnected, Random, Wiring

for _cls in (Wiring, FullyConnected, Random, NCP, AutoNCP):
    keras.saving.register_keras_serializable(package="ncc")(_cls)

__all__ = ["CfC", "CfCCell", "LTC", "LTCCell", "LiquidCell", "LiquidRNN", "lecun_tanh",
           "Wiring", "FullyConnected", "Random", "NCP", "AutoNCP", "cfc_from_ncps",
           "ltc_from_ncps", "convert_ncps", "load_ncps_weights", "QuantDense", "QuantPoint",
           "WeightQuant", "set_quant_mode", "freeze", "sync_quant_state"]
