"""The ONNX front end: a float ONNX CNN read into a chain of float layers rowstation runs.

:func:`read_onnx` interprets the graph (the ``onnx`` package, no runtime) as a chain of
:class:`FloatLayer` (``conv``, ``fc``, ``maxpool``) with ReLU, BatchNormalization and bias
additions folded into the layer they follow; :meth:`FloatNetwork.run` evaluates that reading in
float64 NumPy, so it can be checked against onnxruntime before anything is quantised.

Supported: Conv (stride, symmetric padding, groups, depthwise), Relu (or a Clip at 0 with no
upper bound), MaxPool (no padding),
AveragePool (no padding) and GlobalAveragePool (depthwise convolutions with weights 1/K),
Gemm and MatMul (with a constant operand), Add of a constant (a bias), BatchNormalization after a
Conv, Flatten, Reshape and Squeeze to (N, features), Identity and Dropout (inference), and a
final Softmax or LogSoftmax (kept on the host: the hardware outputs the logits). Nodes whose
inputs are all constants (shape arithmetic such as Shape -> Gather -> Concat -> Reshape, weight
transposes) are evaluated at compile time with onnx's reference evaluator, whatever their
operator. Anything else is refused with a one-line error naming the node, the operator and the
attribute.
"""

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


__all__ = ["FloatLayer", "FloatNetwork", "read_onnx", "SUPPORTED"]

SUPPORTED = ("Conv", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "MatMul", "Add",
             "BatchNormalization", "Flatten", "Reshape", "Squeeze", "Identity", "Dropout", "Constant", "Shape",
             "Softmax", "LogSoftmax")


@dataclass
class FloatLayer:
    """One layer as float tensors: ``conv`` weights (M, C/G, R, S), ``fc`` weights (M, C*H*W)."""

    name: str
    kind: str                      # conv, fc or maxpool
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0
    groups: int = 1
    relu: bool = False
    kernel: int = 0                # maxpool window
    nodes: list = field(default_factory=list)   # the ONNX nodes folded into it


@dataclass
class FloatNetwork:
    name: str
    input_shape: tuple             # (N, C, H, W)
    layers: list
    flat_output: bool = False      # the graph's output is (N, features)
    host_output: str | None = None  # "Softmax" / "LogSoftmax": applied on the host, after the logits

    def run(self, x, *, activations=False):
        """The float64 output for input ``x`` (N, C, H, W), as the ONNX graph computes it
        (with the final softmax, if any); with ``activations``, also every layer's output."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2:
            x = x[:, :, None, None]
        outputs = []
        for layer in self.layers:
            x = _float_layer(layer, x)
            outputs.append(x)
        y = _host_output(self.host_output, x.reshape(x.shape[0], -1) if self.flat_output else x)
        return (y, outputs) if activations else y


def _host_output(op, x):
    if op is None:
        return x
    z = x - x.max(axis=1, keepdims=True)
    log = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return log if op == "LogSoftmax" else np.exp(log)


def _float_layer(layer, x):
    if layer.kind == "maxpool":
        K, U = layer.kernel, layer.stride
        return sliding_window_view(x, (K, K), axis=(2, 3))[:, :, ::U, ::U].max(axis=(4, 5))
    w = layer.weights
    if layer.kind == "fc":
        y = x.reshape(x.shape[0], -1) @ w.T
        y = y[:, :, None, None]
    else:
        y = _conv(x, w, layer.stride, layer.padding, layer.groups)
    if layer.bias is not None:
        y = y + layer.bias[None, :, None, None]
    return np.maximum(y, 0) if layer.relu else y


def _conv(x, w, stride, padding, groups):
    N, C = x.shape[:2]
    M, Cg, R, S = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(xp, (R, S), axis=(2, 3))[:, :, ::stride, ::stride]
    Mg = M // groups
    out = []
    for g in range(groups):
        cols = windows[:, g * Cg:(g + 1) * Cg]
        out.append(np.einsum("nchwrs,mcrs->nmhw", cols, w[g * Mg:(g + 1) * Mg], optimize=True))
    return np.concatenate(out, axis=1)


class _Reader:
    """Walks an ONNX graph in order, keeping the chain's current tensor and its shape."""

    def __init__(self, model, batch):
        import onnx
        from onnx import numpy_helper

        self.numpy_helper = numpy_helper
        graph = model.graph
        self.graph = graph
        self.opsets = list(model.opset_import)
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise ValueError(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                             f"rowstation runs single-input networks")
        self.input = inputs[0]
        dims = self.input.type.tensor_type.shape.dim
        shape = []
        for i, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(dim.dim_value if i else batch or dim.dim_value)
            elif i == 0:
                shape.append(batch or 1)     # a symbolic batch: the compiled batch
            else:
                raise ValueError(f"input {self.input.name}: dimension {i} is dynamic "
                                 f"({dim.dim_param or '?'}); rowstation needs static shapes")
        if len(shape) == 2:
            shape += [1, 1]
        if len(shape) != 4:
            raise ValueError(f"input {self.input.name} has shape {shape}; rowstation takes (N, C, H, W) "
                             f"or (N, features)")
        self.shape = tuple(shape)
        self.flat = len(dims) == 2
        self.current = self.input.name
        self.layers = []
        self.owner = None          # the layer whose output is the current tensor (None: input or pool)
        self.relu_target = None    # the layer a ReLU may still fold into
        self.host_output = None
        self.onnx = onnx

    # Helpers.

    def attributes(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def refuse(self, node, what):
        raise ValueError(f"node {node.name or node.output[0]} ({node.op_type}): {what}")

    def check_attributes(self, node, attrs, allowed):
        for name in attrs:
            if name not in allowed:
                self.refuse(node, f"attribute {name} is not supported")

    def constant(self, node, name):
        """A constant input as float64."""
        if name not in self.constants:
            self.refuse(node, f"input {name} must be a constant (an initializer), not a computed tensor")
        return np.asarray(self.constants[name], dtype=np.float64)

    def onnx_shape(self):
        """The chain tensor's shape as the ONNX graph sees it."""
        N, C, H, W = self.shape
        return (N, C * H * W) if self.flat else self.shape

    def fold(self, node):
        """Evaluate a node whose inputs are all constants (shape arithmetic, weight transposes)."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        names = [name for name in node.input if name]
        inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(self.constants[name].dtype),
                                                self.constants[name].shape) for name in names]
        outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
        graph = helper.make_graph([node], "fold", inputs, outputs)
        try:
            values = ReferenceEvaluator(helper.make_model(graph, opset_imports=self.opsets)).run(
                None, {name: self.constants[name] for name in names})
        except Exception as error:   # the reference evaluator raises many types
            self.refuse(node, f"cannot evaluate it on its constant inputs: {error}")
        self.constants.update(zip([name for name in node.output if name], (np.asarray(v) for v in values)))

    def chained(self, node, name):
        if name != self.current:
            self.refuse(node, f"input {name} is not the output of the previous layer "
                              f"({self.current}); rowstation runs chains of layers (no branches)")

    def add(self, layer, node, shape):
        layer.nodes.append(node.name or node.output[0])
        self.layers.append(layer)
        self.owner = layer if layer.kind != "maxpool" else None
        self.relu_target = layer if layer.kind != "maxpool" else self.relu_target
        self.shape = shape
        self.current = node.output[0]

    def name(self, node):
        base = (node.name or node.output[0]).strip("/").replace("/", "_").replace(".", "_") or node.op_type
        names = {layer.name for layer in self.layers}
        unique, i = base, 1
        while unique in names:
            unique, i = f"{base}_{i}", i + 1
        return unique

    def square(self, node, attrs, key, default=None):
        values = list(attrs.get(key, default or []))
        if len(values) != 2 or values[0] != values[1]:
            self.refuse(node, f"attribute {key} = {values} is not supported (square 2-D windows only)")
        return int(values[0])

    def pads(self, node, attrs):
        """The padding of a convolution or pooling node (auto_pad NOTSET or VALID, no dilation)."""
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            self.refuse(node, f"attribute auto_pad = {attrs['auto_pad']!r} is not supported (give pads)")
        if any(d != 1 for d in attrs.get("dilations", [1])):
            self.refuse(node, f"attribute dilations = {list(attrs['dilations'])} is not supported")
        return list(attrs.get("pads", [0, 0, 0, 0]))

    def no_padding(self, node, attrs):
        if any(self.pads(node, attrs)):
            self.refuse(node, f"attribute pads = {list(attrs['pads'])} is not supported (no padding "
                              f"for pooling)")

    def pooled_shape(self, node, attrs, K, U):
        N, C, H, W = self.shape
        E, F = (H - K) // U + 1, (W - K) // U + 1
        if attrs.get("ceil_mode", 0) and ((H - K) % U or (W - K) % U):
            self.refuse(node, f"attribute ceil_mode = 1 is not supported (it keeps partial windows "
                              f"of this {H}x{W} input)")
        if K > min(H, W):
            self.refuse(node, f"window {K} is larger than its input {H}x{W}")
        return N, C, E, F

    # Operators.

    def Conv(self, node, attrs):
        self.chained(node, node.input[0])
        self.check_attributes(node, attrs, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
        if self.flat:
            self.refuse(node, "input is flattened; a convolution needs (N, C, H, W)")
        w = self.constant(node, node.input[1])
        b = self.constant(node, node.input[2]).copy() if len(node.input) > 2 and node.input[2] else None
        if w.ndim != 4:
            self.refuse(node, f"weights of shape {w.shape} are not supported (2-D convolutions only)")
        pads = self.pads(node, attrs)
        if len(set(pads)) != 1:
            self.refuse(node, f"attribute pads = {pads} is not supported (equal padding on every side)")
        stride = self.square(node, attrs, "strides", [1, 1])
        groups = int(attrs.get("group", 1))
        N, C, H, W = self.shape
        M, Cg, R, S = w.shape
        if Cg * groups != C:
            self.refuse(node, f"weights {w.shape} with group = {groups} do not match {C} input channels")
        layer = FloatLayer(self.name(node), "conv", w.copy(), b, stride=stride, padding=pads[0], groups=groups)
        P = pads[0]
        if R > H + 2 * P or S > W + 2 * P:
            self.refuse(node, f"kernel {R}x{S} is larger than its padded input {H + 2 * P}x{W + 2 * P}")
        self.add(layer, node, (N, M, (H + 2 * P - R) // stride + 1, (W + 2 * P - S) // stride + 1))

    def BatchNormalization(self, node, attrs):
        self.chained(node, node.input[0])
        self.check_attributes(node, attrs, {"epsilon", "momentum", "training_mode", "spatial"})
        if attrs.get("training_mode", 0):
            self.refuse(node, "attribute training_mode = 1 is not supported (inference only)")
        layer = self.owner
        if layer is None or layer.kind != "conv" or layer.relu:
            self.refuse(node, "BatchNormalization is folded into the Conv it follows, and follows none here")
        gamma, beta, mean, var = (self.constant(node, name) for name in node.input[1:5])
        scale = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
        layer.weights = layer.weights * scale[:, None, None, None]
        bias = layer.bias if layer.bias is not None else np.zeros(len(scale))
        layer.bias = (bias - mean) * scale + beta
        layer.nodes.append(node.name or node.output[0])
        self.current = node.output[0]

    def Relu(self, node, attrs):
        self.chained(node, node.input[0])
        # ReLU commutes with max pooling, so it may fold into the layer before a pool.
        layer = self.relu_target
        between = self.layers[self.layers.index(layer) + 1:] if layer is not None else []
        if layer is None or layer.relu or any(other.kind != "maxpool" for other in between):
            self.refuse(node, "a ReLU must follow a Conv or Gemm (or a MaxPool after one) not already rectified")
        layer.relu = True
        layer.nodes.append(node.name or node.output[0])
        self.current = node.output[0]

    def Clip(self, node, attrs):
        """A Clip at 0 with no upper bound is a ReLU (ReLU6 and other bounds are refused)."""
        bounds = [attrs.get("min"), attrs.get("max")]
        for i, name in enumerate(node.input[1:3]):
            if name:
                bounds[i] = float(self.constant(node, name).ravel()[0])
        if bounds[0] != 0 or (bounds[1] is not None and np.isfinite(bounds[1])):
            self.refuse(node, f"bounds {bounds} are not supported (only a ReLU: min 0, no max)")
        self.Relu(node, {})

    def MaxPool(self, node, attrs):
        self.chained(node, node.input[0])
        self.check_attributes(node, attrs, {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                                            "storage_order", "strides"})
        if len(node.output) > 1 and node.output[1]:
            self.refuse(node, "the Indices output is not supported")
        self.no_padding(node, attrs)
        K = self.square(node, attrs, "kernel_shape")
        U = self.square(node, attrs, "strides", [1, 1])
        shape = self.pooled_shape(node, attrs, K, U)
        self.add(FloatLayer(self.name(node), "maxpool", stride=U, kernel=K), node, shape)

    def AveragePool(self, node, attrs):
        self.chained(node, node.input[0])
        self.check_attributes(node, attrs, {"auto_pad", "ceil_mode", "count_include_pad", "dilations",
                                            "kernel_shape", "pads", "strides"})
        self.no_padding(node, attrs)
        K = self.square(node, attrs, "kernel_shape")
        U = self.square(node, attrs, "strides", [1, 1])
        self._average(node, K, K, U, self.pooled_shape(node, attrs, K, U))

    def GlobalAveragePool(self, node, attrs):
        self.chained(node, node.input[0])
        N, C, H, W = self.shape
        self._average(node, H, W, 1, (N, C, 1, 1))

    def _average(self, node, R, S, U, shape):
        """An average over R x S windows: a depthwise convolution with weights 1 / (R S)."""
        C = self.shape[1]
        w = np.full((C, 1, R, S), 1.0 / (R * S))
        self.add(FloatLayer(self.name(node), "conv", w, stride=U, groups=C), node, shape)

    def Flatten(self, node, attrs):
        self.chained(node, node.input[0])
        if attrs.get("axis", 1) != 1:
            self.refuse(node, f"attribute axis = {attrs['axis']} is not supported (axis 1: (N, features))")
        self.flat = True
        self.current = node.output[0]

    def Reshape(self, node, attrs):
        self.chained(node, node.input[0])
        target = [int(v) for v in self.constant(node, node.input[1]).ravel()]
        N, C, H, W = self.shape
        resolved = [N if v == 0 and i == 0 else v for i, v in enumerate(target)]
        if len(resolved) != 2 or resolved[0] not in (N, -1) or resolved[1] not in (C * H * W, -1) \
                or resolved == [-1, -1]:
            self.refuse(node, f"shape {target} is not supported (only a flatten to (N, {C * H * W}))")
        self.flat = True
        self.current = node.output[0]

    def Gemm(self, node, attrs):
        self.chained(node, node.input[0])
        self.check_attributes(node, attrs, {"alpha", "beta", "transA", "transB"})
        if attrs.get("transA", 0):
            self.refuse(node, "attribute transA = 1 is not supported")
        w = self.constant(node, node.input[1])
        w = w if attrs.get("transB", 0) else w.T
        b = self.constant(node, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if b is not None:
            b = np.broadcast_to(b * attrs.get("beta", 1.0), (w.shape[0],)).copy()
        self._fc(node, w * attrs.get("alpha", 1.0), b)

    def MatMul(self, node, attrs):
        self.chained(node, node.input[0])
        w = self.constant(node, node.input[1])
        if w.ndim != 2:
            self.refuse(node, f"a constant operand of shape {w.shape} is not supported (2-D only)")
        self._fc(node, w.T, None)

    def _fc(self, node, w, b):
        N, C, H, W = self.shape
        if not self.flat and (H, W) != (1, 1):
            self.refuse(node, f"input of shape {self.shape} is not flattened (add a Flatten)")
        if w.ndim != 2 or w.shape[1] != C * H * W:
            self.refuse(node, f"weights {w.shape} do not match {C * H * W} input features")
        self.add(FloatLayer(self.name(node), "fc", np.ascontiguousarray(w), b), node, (N, w.shape[0], 1, 1))
        self.flat = True

    def Add(self, node, attrs):
        ins = list(node.input)
        if self.current not in ins or all(name not in self.constants for name in ins):
            self.refuse(node, "an Add of two computed tensors (a residual connection) is not supported: "
                              "networks are chains")
        other = self.constant(node, ins[1 - ins.index(self.current)])
        layer = self.owner
        if layer is None or layer.relu:
            self.refuse(node, "an Add of a constant is folded as a bias into the Conv or Gemm it follows")
        M = self.shape[1]
        squeezed = np.squeeze(other)
        if squeezed.size == 1:
            squeezed = np.full(M, float(squeezed))
        if squeezed.shape != (M,) or other.ndim > 4 or (other.ndim >= 3 and other.shape[-2:] != (1, 1)) \
                or (other.ndim == 2 and not self.flat):
            self.refuse(node, f"a constant of shape {other.shape} is not a per-channel bias for {M} channels")
        layer.bias = squeezed if layer.bias is None else layer.bias + squeezed
        layer.nodes.append(node.name or node.output[0])
        self.current = node.output[0]

    def Identity(self, node, attrs):
        self.chained(node, node.input[0])
        self.current = node.output[0]

    Dropout = Identity

    def Constant(self, node, attrs):
        value = attrs.get("value")
        if value is None:
            self.refuse(node, f"attributes {sorted(attrs)} are not supported (a tensor value only)")
        self.constants[node.output[0]] = self.numpy_helper.to_array(value)

    def Shape(self, node, attrs):
        self.chained(node, node.input[0])
        shape = np.array(self.onnx_shape(), dtype=np.int64)
        self.constants[node.output[0]] = shape[attrs.get("start", 0):attrs.get("end", len(shape))]

    def Squeeze(self, node, attrs):
        self.chained(node, node.input[0])
        axes = attrs.get("axes") or (self.constant(node, node.input[1]).astype(int).tolist()
                                     if len(node.input) > 1 and node.input[1] else None)
        N, C, H, W = self.shape
        if self.flat or (H, W) != (1, 1) or sorted(a % 4 for a in (axes or [2, 3])) != [2, 3]:
            self.refuse(node, f"only squeezing the 1x1 spatial axes of (N, C, 1, 1) is supported, not axes "
                              f"{axes} of {self.onnx_shape()}")
        self.flat = True
        self.current = node.output[0]

    def Softmax(self, node, attrs):
        self.chained(node, node.input[0])
        if attrs.get("axis", -1) not in (1, -1) or not self.flat:
            self.refuse(node, "only a softmax over the features of an (N, features) output is supported")
        self.host_output = node.op_type
        self.current = node.output[0]

    LogSoftmax = Softmax

    def read(self):
        for node in self.graph.node:
            if self.host_output is not None:
                self.refuse(node, f"only the graph's output may follow {self.host_output} (it runs on the host)")
            if node.op_type not in ("Constant", "Shape") and all(
                    name in self.constants for name in node.input if name) and any(node.input):
                self.fold(node)
                continue
            handler = getattr(self, node.op_type, None) if node.op_type in SUPPORTED else None
            if handler is None or node.domain not in ("", "ai.onnx"):
                raise ValueError(f"node {node.name or node.output[0]}: operator {node.op_type} is not "
                                 f"supported (supported: {', '.join(SUPPORTED)})")
            handler(node, self.attributes(node))
        outputs = [o.name for o in self.graph.output]
        if outputs != [self.current]:
            raise ValueError(f"the graph's outputs {outputs} are not the end of its chain ({self.current})")
        if not any(layer.kind != "maxpool" for layer in self.layers):
            raise ValueError("the model computes nothing rowstation runs (no Conv, Gemm or MatMul)")


def read_onnx(path, *, batch=None):
    """The :class:`FloatNetwork` of the ONNX model at ``path``, with batch ``batch`` (default: the
    model's own, or 1 where it is symbolic); a one-line ValueError on anything it cannot run."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist")
    except (DecodeError, onnx.checker.ValidationError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a valid ONNX model: {first}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    reader = _Reader(model, batch)
    input_shape = reader.shape
    reader.read()
    name = model.graph.name or "network"
    return FloatNetwork(name, input_shape, reader.layers, reader.flat, reader.host_output)
