"""Memory of a quantized network, computed from its learned quantizer parameters.

The paper constrains three quantities (Section 4): the weight memory
sum_l b_l^w * |W_l|, the total activation memory sum_l b_l^x * |x_l| and the
largest activation max_l b_l^x * |x_l| (per sample), and adds
lambda * max(0, memory - target)^2 to the loss for each constraint that is set.
The bitwidths are nnabla expressions of the quantizer parameters so the
penalties reach them through the straight-through rounding.

For quantizers that learn the bitwidth it is round(clip(b)); the others imply it:
U3 (d, q_max): b = ceil(log2(q_max/d + 1)) (+1 for the sign of weights) with
q_max snapped to the step grid; P3 (q_min, q_max): b = ceil(log2(log2(q_max/q_min)
+ 1) + 1); both at least the configured minimum bitwidth, as in the official code.
Sizes are in kilobytes (1 kB = 1024 bytes), as in the paper and official code.
"""
from dataclasses import dataclass

import nnabla as nn
import nnabla.functions as F
import numpy as np

from mpdnn import layers as L
from mpdnn import quantizers as Q

WEIGHT_SUFFIXES = ("quantized_conv/W", "quantized_conv/b", "quantized_affine/W",
                   "quantized_affine/b")
FLOAT_BITS = 32.


@dataclass
class LayerMemory:
    """One weight tensor or activation: its bitwidth as an nnabla expression."""
    name: str          # the parameter (weights) or the Asize scope (activations)
    kind: str          # "weight" or "activation"
    count: int         # values (per sample for activations)
    bits: nn.Variable  # scalar expression
    quantizer: dict    # parameter name -> Variable (empty for fixed/float)


def _clip(v, lo, hi):
    return F.minimum_scalar(F.maximum_scalar(v, lo), hi)


def _log2(v):
    return F.log(v) / np.log(2.)


def _constant(value):
    v = nn.Variable((), need_grad=False)
    v.d = value
    return v


def _bits(kind, params, b_min, b_max, ranges, signed):
    """Bitwidth expression of a parametric quantizer ``kind`` with raw ``params``."""
    p = Q.parametrization(kind)
    if "n" in p.params:
        return F.round(_clip(params["n"], b_min, b_max))
    if p.kind == "parametric_fp_d_xmax":
        d = Q._pow2_positive(_clip(params["d"], *ranges["d"]))
        xmax = F.round(_clip(params["xmax"], *ranges["xmax"]) / d) * d
        levels = _log2(xmax / d + 1.0) + (1.0 if signed else 0.0)
        return F.maximum_scalar(F.ceil(levels), b_min)
    xmin = Q._pow2(_clip(params["xmin"], *ranges["xmin"]))
    xmax = Q._pow2(_clip(params["xmax"], *ranges["xmax"]))
    return F.maximum_scalar(F.ceil(_log2(_log2(xmax / xmin) + 1.) + 1.), b_min)


def _quantizer_params(all_params, prefix, kind):
    p = Q.parametrization(kind)
    return {k: all_params[f"{prefix}/{p.kind}/{k}"] for k in p.params}


def _layer(qcfg, kind, name, count, params, quantizer_scope):
    """LayerMemory of one weight tensor (``kind`` "weight") or activation ("activation")
    whose learned quantizer, if any, lives in ``quantizer_scope``."""
    side = "w" if kind == "weight" else "a"

    def setting(key):
        return getattr(qcfg, f"{side}_{key}")

    quantizer = setting("quantize")
    if quantizer is None:
        return LayerMemory(name, kind, count, _constant(FLOAT_BITS), {})
    if quantizer in L.FIXED_WEIGHT_QUANTIZERS + L.FIXED_ACTIVATION_QUANTIZERS:
        return LayerMemory(name, kind, count, _constant(setting("bitwidth")), {})
    if kind == "activation":
        quantizer = quantizer[:-len("_relu")]
    qp = _quantizer_params(params, quantizer_scope, quantizer)
    ranges = {"d": (setting("stepsize_min"), setting("stepsize_max")),
              "xmin": (setting("xmin_min"), setting("xmin_max")),
              "xmax": (setting("xmax_min"), setting("xmax_max"))}
    bits = _bits(quantizer, qp, setting("bitwidth_min"), setting("bitwidth_max"), ranges,
                 signed=kind == "weight")
    return LayerMemory(name, kind, count, bits, qp)


def weight_layers(qcfg, params=None):
    """LayerMemory of every quantizable weight/bias tensor, in parameter order."""
    params = params if params is not None else nn.get_parameters(grad_only=False)
    # the bias of a layer has its own quantizer ("bquant") in the official layout
    return [_layer(qcfg, "weight", name, int(np.prod(var.shape)), params, name + "quant")
            for name, var in params.items() if name.endswith(WEIGHT_SUFFIXES)]


def activation_layers(qcfg, params=None):
    """LayerMemory of every recorded activation (``.../Asize``), in parameter order."""
    params = params if params is not None else nn.get_parameters(grad_only=False)
    out = []
    for name, var in params.items():
        if name.split("/")[-1] != "Asize":
            continue
        scope = name[:-len("/Asize")]
        out.append(_layer(qcfg, "activation", scope, int(round(float(var.d))), params,
                          (scope + "/" if scope else "") + "Aquant"))
    return out


def _kbytes(layer):
    return layer.bits * (layer.count / 8. / 1024.)


class NetworkMemory:
    """Weight and activation memory (kB) of the network built in the current scope, plus the
    penalty terms; build it after the network so every layer is registered."""

    def __init__(self, qcfg, params=None):
        self.weights = weight_layers(qcfg, params)
        self.activations = activation_layers(qcfg, params)
        self.weight_kbytes = F.add_n(*[_kbytes(layer) for layer in self.weights]) \
            if len(self.weights) > 1 else _kbytes(self.weights[0])
        per_layer = F.stack(*[F.reshape(_kbytes(layer), (1,)) for layer in self.activations],
                            axis=0) if self.activations else None
        self.activation_type = qcfg.target_activation_type
        if per_layer is None:
            self.activation_kbytes = _constant(0.)
        elif qcfg.target_activation_type == "sum":
            self.activation_kbytes = F.sum(per_layer)
        else:
            self.activation_kbytes = F.max(per_layer)
        self.total_activation_kbytes = F.sum(per_layer) if per_layer is not None else _constant(0.)
        self.max_activation_kbytes = F.max(per_layer) if per_layer is not None else _constant(0.)
        for v in (self.weight_kbytes, self.activation_kbytes, self.total_activation_kbytes,
                  self.max_activation_kbytes):
            v.persistent = True
        self.target_weight_kbytes = qcfg.target_weight_kbytes
        self.target_activation_kbytes = qcfg.target_activation_kbytes
        self.lambda_weight = _constant(qcfg.initial_cost_lambda2)
        self.lambda_activation = _constant(qcfg.initial_cost_lambda3)

    @property
    def constrained(self):
        return self.target_weight_kbytes > 0 or self.target_activation_kbytes > 0

    def penalty(self):
        """lambda_w max(0, weight kB - target)^2 + lambda_a max(0, activation kB - target)^2
        for the constraints that are set (target > 0), or None."""
        terms = []
        if self.target_weight_kbytes > 0:
            terms.append(self.lambda_weight
                         * F.relu(self.weight_kbytes - self.target_weight_kbytes) ** 2)
        if self.target_activation_kbytes > 0:
            terms.append(self.lambda_activation
                         * F.relu(self.activation_kbytes - self.target_activation_kbytes) ** 2)
        if not terms:
            return None
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def evaluate(self):
        """Current sizes as floats: weight kB, constrained activation kB, total and max."""
        out = {}
        for key in ("weight_kbytes", "activation_kbytes", "total_activation_kbytes",
                    "max_activation_kbytes"):
            var = getattr(self, key)
            if var.parent is not None:
                var.forward(clear_no_need_grad=True)
            out[key] = float(var.d)
        return out

    def satisfied(self, sizes=None):
        """True when every set constraint holds (sizes from :meth:`evaluate`)."""
        sizes = sizes or self.evaluate()
        return ((self.target_weight_kbytes <= 0
                 or sizes["weight_kbytes"] <= self.target_weight_kbytes)
                and (self.target_activation_kbytes <= 0
                     or sizes["activation_kbytes"] <= self.target_activation_kbytes))

    def layer_table(self):
        """Per tensor: name, kind, count, bits, memory kB and the derived quantizer values."""
        rows = []
        for layer in self.weights + self.activations:
            if layer.bits.parent is not None:
                layer.bits.forward(clear_no_need_grad=True)
            bits = float(layer.bits.d)
            row = {"name": layer.name, "kind": layer.kind, "count": layer.count, "bits": bits,
                   "kbytes": bits * layer.count / 8. / 1024.}
            for pname, var in layer.quantizer.items():
                row[pname] = float(var.d)
            rows.append(row)
        return rows
