"""Networks: a list of layers with their integer tensors, and their compilation into one memory
image the accelerator runs after one start (:mod:`rowstation.gen.descriptor`).

A network directory holds ``network.json`` and the ``.npy`` files it names::

    {"name": "tiny-cnn", "input": [1, 1, 8, 8],
     "layers": [{"name": "conv1", "type": "conv", "weights": "conv1.w.npy", "bias": "conv1.b.npy",
                 "stride": 1, "padding": 1, "groups": 1, "shift": 6, "relu": true},
                {"name": "fc", "type": "fc", "weights": "fc.w.npy"}]}

``conv`` weights are (M, C/G, R, S); ``fc`` weights (M, C*H*W) or (M, C, H, W), a convolution
whose filter covers its input. ``maxpool`` takes ``kernel`` and ``stride`` (default: the
kernel), no padding, and runs on chip too. ``shift`` requantises the output on chip (rounding shift,
``relu``, saturation to the activation width); a layer without it writes the exact
accumulation, so only the last layer may omit it. ``bias`` is optional. A network compiled from
ONNX (:mod:`rowstation.gen.model`) also holds ``quantization``: its scales.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import descriptor
from .isa import COUNTERS
from .layer import ConvLayer
from .mapper import map_layer
from .program import DramLayout, arranged_weights, compile_layer, element_bytes, read_elements, words_spanned


__all__ = ["PoolLayer", "LayerSpec", "Network", "CompiledLayer", "CompiledNetwork", "compile_network", "load_npy",
           "load_inputs"]

KINDS = ("conv", "fc", "maxpool")


@dataclass(frozen=True)
class PoolLayer:
    """Max pooling of an (N, C, H, W) input over K x K windows at stride U, no padding."""

    N: int
    C: int
    H: int
    W: int
    K: int
    U: int

    @property
    def E(self):
        return (self.H - self.K) // self.U + 1

    @property
    def F(self):
        return (self.W - self.K) // self.U + 1

    @property
    def ofmap_shape(self):
        return (self.N, self.C, self.E, self.F)

    macs = 0

    def to_dict(self):
        return {"N": self.N, "C": self.C, "H": self.H, "W": self.W, "K": self.K, "U": self.U}

    def report(self, config):
        """The pass's external memory traffic (exact, in whole words: the pooler reads each
        output row's K input rows and writes the row) and an estimate of its cycles (one
        element a cycle in and out, ``ROW_OVERHEAD`` cycles a row, ``PASS_OVERHEAD`` for the
        descriptor and the counters)."""
        size, word = config.memory_width(config.ifmap_width) // 8, config.dram_width // 8
        plane, rows = self.H * self.W * size, self.N * self.C * self.E
        reads = sum(words_spanned(p * plane + (e * self.U + k) * self.W * size, self.W, size, word)
                    for p in range(self.N * self.C) for e in range(self.E) for k in range(self.K))
        writes = sum(words_spanned(r * self.F * size, self.F, size, word) for r in range(rows))
        return {"cycles": rows * (self.K * self.W + self.F + self.ROW_OVERHEAD) + self.PASS_OVERHEAD,
                "dram_read_bytes": reads * word, "dram_write_bytes": writes * word}

    #: The estimate's overheads, fitted on four Verilator runs on ``tiny`` (docs/accelerator.md).
    ROW_OVERHEAD, PASS_OVERHEAD = 4, 46

    def __str__(self):
        return f"maxpool N={self.N},C={self.C},H={self.H},W={self.W},K={self.K},U={self.U}"


@dataclass
class LayerSpec:
    name: str
    kind: str                   # one of KINDS
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0
    groups: int = 1
    shift: int | None = None    # None: the exact accumulation
    relu: bool = False
    kernel: int = 0             # maxpool: the window

    @property
    def computes(self):
        """The layer runs a program on the array (a convolution or FC layer)."""
        return self.kind != "maxpool"

    def conv_weights(self, input_shape):
        """The weights as (M, C/G, R, S) for an input of ``input_shape`` (N, C, H, W)."""
        w = self.weights
        if self.kind == "fc":
            _, C, H, W = input_shape
            if w.ndim == 2 and w.shape[1] == C * H * W:
                return w.reshape(w.shape[0], C, H, W)
            if w.ndim != 4 or tuple(w.shape[1:]) != (C, H, W):
                raise ValueError(f"layer {self.name}: fc weights {tuple(w.shape)} do not match its input "
                                 f"(C, H, W) = {(C, H, W)}: expected (M, {C * H * W}) or (M, {C}, {H}, {W})")
        return w

    def layer(self, input_shape):
        """The :class:`ConvLayer` (or :class:`PoolLayer`) this layer computes on an input of
        ``input_shape``."""
        N, C, H, W = input_shape
        if not self.computes:
            for name, value in (("kernel", self.kernel), ("stride", self.stride)):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"layer {self.name}: maxpool {name} must be a positive integer, not {value!r}")
            if self.kernel > min(H, W):
                raise ValueError(f"layer {self.name}: maxpool window {self.kernel} is larger than its input {H}x{W}")
            return PoolLayer(N=N, C=C, H=H, W=W, K=self.kernel, U=self.stride)
        w = self.conv_weights(input_shape)
        if w.ndim != 4:
            raise ValueError(f"layer {self.name}: weights must be (M, C/G, R, S), not {tuple(w.shape)}")
        M, Cg, R, S = w.shape
        if self.kind == "fc":
            return ConvLayer(N=N, C=C, H=H, W=W, M=M, R=R, S=S)
        if Cg * self.groups != C:
            raise ValueError(f"layer {self.name}: weights have {Cg} channels per group, its input has "
                             f"C = {C} in G = {self.groups} groups")
        return ConvLayer(N=N, C=C, H=H, W=W, M=M, R=R, S=S, U=self.stride, P=self.padding, G=self.groups)


@dataclass
class Network:
    name: str
    input_shape: tuple
    layers: list = field(default_factory=list)
    quantization: dict | None = None   # the scales of a compiled model (rowstation.gen.quantize)

    def shapes(self):
        """The :class:`ConvLayer` of every layer, checking that each one's output feeds the next."""
        out, shape = [], tuple(self.input_shape)
        for i, spec in enumerate(self.layers):
            if spec.computes and spec.shift is None and i != len(self.layers) - 1:
                raise ValueError(f"layer {spec.name}: only the last layer may write the exact "
                                 f"accumulation; give it a shift")
            layer = spec.layer(shape)
            out.append(layer)
            shape = layer.ofmap_shape
        return out

    @classmethod
    def load(cls, directory):
        """The network of ``directory/network.json``; a clear ValueError on anything malformed."""
        directory = Path(directory)
        path = directory / "network.json"
        try:
            spec = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path} does not exist")
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}")
        for key in ("input", "layers"):
            if key not in spec:
                raise ValueError(f"{path} lacks {key!r}")
        shape = spec["input"]
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ValueError(f"{path}: input must be [N, C, H, W] of positive integers, not {shape!r}")
        layers = []
        for i, item in enumerate(spec["layers"]):
            name = item.get("name", f"layer{i}")
            kind = item.get("type")
            if kind not in KINDS:
                raise ValueError(f"{path}: layer {name} has type {kind!r}; supported: {', '.join(KINDS)}")
            known = {"name", "type", "weights", "bias", "stride", "padding", "groups", "shift", "relu"} \
                if kind != "maxpool" else {"name", "type", "kernel", "stride"}
            unknown = set(item) - known
            if unknown:
                raise ValueError(f"{path}: layer {name} has unknown keys {sorted(unknown)}")
            if kind == "maxpool":
                if "kernel" not in item:
                    raise ValueError(f"{path}: maxpool layer {name} names no kernel")
                layers.append(LayerSpec(name=name, kind=kind, kernel=item["kernel"],
                                        stride=item.get("stride", item["kernel"])))
                continue
            if "weights" not in item:
                raise ValueError(f"{path}: layer {name} names no weights")
            arrays = {key: _load_array(directory / item[key], f"layer {name} {key}")
                      for key in ("weights", "bias") if item.get(key) is not None}
            layers.append(LayerSpec(name=name, kind=kind, weights=arrays["weights"], bias=arrays.get("bias"),
                                    stride=item.get("stride", 1), padding=item.get("padding", 0),
                                    groups=item.get("groups", 1), shift=item.get("shift"),
                                    relu=bool(item.get("relu", False))))
        quantization = spec.get("quantization")
        if quantization is not None and not (isinstance(quantization, dict) and
                                             isinstance(quantization.get("input_frac"), int) and
                                             isinstance(quantization.get("output_frac"), int)):
            raise ValueError(f"{path}: quantization must hold integer input_frac and output_frac")
        return cls(spec.get("name", directory.name), tuple(shape), layers, quantization)

    def save(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        items = []
        for spec in self.layers:
            if not spec.computes:
                items.append({"name": spec.name, "type": spec.kind, "kernel": spec.kernel, "stride": spec.stride})
                continue
            item = {"name": spec.name, "type": spec.kind, "weights": f"{spec.name}.weights.npy"}
            np.save(directory / item["weights"], spec.weights)
            if spec.bias is not None:
                item["bias"] = f"{spec.name}.bias.npy"
                np.save(directory / item["bias"], spec.bias)
            if spec.kind == "conv":
                item.update(stride=spec.stride, padding=spec.padding, groups=spec.groups)
            if spec.shift is not None:
                item.update(shift=spec.shift, relu=spec.relu)
            items.append(item)
        spec = {"name": self.name, "input": list(self.input_shape), "layers": items}
        if self.quantization is not None:
            spec["quantization"] = self.quantization
        (directory / "network.json").write_text(json.dumps(spec, indent=2) + "\n")


def load_npy(name, path):
    """An ``.npy`` file as an array, or a ValueError that names the file and the problem."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{name} file {path} does not exist")
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{name} file {path} is not a readable .npy array: {error}")
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} file {path} is an .npz archive, not a single .npy array")
    return array


def load_inputs(name, path, input_shape):
    """The inputs in ``path`` for a network taking ``input_shape``, any batch: (batch, C, H, W),
    or (batch, C) where H = W = 1; integers or finite floats."""
    x = load_npy(name, path)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} file {path} holds {x.dtype} values, not numbers")
    sample = tuple(input_shape[1:])
    if x.ndim == 2 and sample[1:] == (1, 1):
        x = x[:, :, None, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != sample or not len(x):
        raise ValueError(f"{name} file {path} has shape {tuple(x.shape)}; the network takes "
                         f"(batch, {', '.join(map(str, sample))})")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{name} file {path} holds values that are not finite")
    return x


def _load_array(path, what):
    array = load_npy(what, path)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} file {path} holds {array.dtype} values, not integers")
    return array.astype(np.int64)


@dataclass
class CompiledLayer:
    spec: LayerSpec
    layer: object          # ConvLayer or PoolLayer
    descriptor: dict       # the descriptor's fields
    mapping: object = None  # a convolution's: its mapping, program and weights (M, C/G, R, S)
    program: object = None
    weights: np.ndarray | None = None


@dataclass
class CompiledNetwork:
    """One memory image from ``base`` holding the descriptors, the counters' slots, the
    programs, the weights and room for every activation; ``input`` and ``output`` are the
    network's tensors (address, shape, element bytes)."""

    config: object
    network: Network
    base: int
    image: bytearray
    descriptors: int       # address of the descriptor list
    layers: list
    input: tuple
    output: tuple

    @property
    def end(self):
        return self.base + len(self.image)

    def check_fits(self, memory_bytes):
        """A ValueError unless the image fits a memory of ``memory_bytes`` from address 0."""
        if self.end > memory_bytes:
            raise ValueError(f"the network's memory image ends at {self.end:#x}, beyond the board's "
                             f"{memory_bytes} bytes of memory")

    def input_bytes(self, x):
        """The bytes of input ``x`` at its address, checked against the network's input."""
        from ..sim.golden import as_int_array, check_signed

        addr, shape, size = self.input
        x = as_int_array("input", x)
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"input has shape {tuple(x.shape)}; the network takes {tuple(shape)}")
        check_signed("input", x, self.config.ifmap_width)
        return element_bytes(x, size)

    def job(self, x):
        """The :class:`~rowstation.gen.driver.Job` that runs the network on input ``x``."""
        from .driver import Job

        addr, shape, size = self.output
        return Job(self.base, bytes(self.image), self.descriptors, len(self.layers),
                   (self.input[0], self.input_bytes(x)), (addr, int(np.prod(shape)) * size),
                   [layer.descriptor["stats"] for layer in self.layers])

    def output_array(self, data):
        _, shape, size = self.output
        return read_elements(data, 0, int(np.prod(shape)), size).reshape(shape)


def _check_tensors(config, spec, w):
    """Weights and bias within their widths, every sum exact in the accumulator (as the golden
    model requires): nothing the memory image holds may be wrapped."""
    from ..sim.golden import check_signed, psum_bits_needed

    check_signed(f"layer {spec.name} weights", w, config.weight_width)
    if spec.bias is not None:
        check_signed(f"layer {spec.name} bias", spec.bias, config.psum_width)
    need = psum_bits_needed(w, spec.bias, config.ifmap_width)
    if need > config.psum_width:
        raise ValueError(f"layer {spec.name} needs {need}-bit partial sums for exact accumulation, "
                         f"but psum_width is {config.psum_width}")


def compile_network(config, network, *, base=0x1000):
    """Map and compile every layer of ``network`` for ``config`` into one image from ``base``
    (a multiple of the memory word)."""
    word = config.dram_width // 8
    if base % word:
        raise ValueError(f"base {base:#x} is not a multiple of the {word}-byte memory word")
    layers = network.shapes()
    count = len(layers)
    image = bytearray()

    def place(data, align):
        at = -(-(base + len(image)) // align) * align
        image.extend(bytes(at - base - len(image)))
        image.extend(data)
        return at

    descriptors = place(bytes(count * descriptor.DESCRIPTOR_BYTES), word)
    stats = [place(bytes(8 * len(COUNTERS)), max(8, word)) for _ in layers]
    ifmap_size = config.memory_width(config.ifmap_width) // 8
    shape = tuple(network.input_shape)
    activation = place(bytes(int(np.prod(shape)) * ifmap_size), word)
    input_tensor, out_size = (activation, shape, ifmap_size), ifmap_size
    compiled = []
    for i, (spec, layer) in enumerate(zip(network.layers, layers)):
        if not spec.computes:
            if layer.K > descriptor.MAX_WINDOW or layer.F > config.max_dim or max(layer.E, layer.W) >= 1 << 16:
                raise ValueError(f"layer {spec.name}: {layer} needs K <= {descriptor.MAX_WINDOW}, "
                                 f"F <= {config.max_dim} (max_dim), and E and W below 65536")
            output = place(bytes(int(np.prod(layer.ofmap_shape)) * ifmap_size), word)
            fields = {"kind": descriptor.Kind.MAXPOOL, "ifmap": activation, "output": output, "stats": stats[i],
                      "pool_planes": layer.N * layer.C, "pool_width": layer.W | layer.F << 16,
                      "pool_window": layer.K | layer.U << 8 | layer.E << 16,
                      "pool_row_step": layer.U * layer.W * ifmap_size, "pool_plane_step": layer.H * layer.W * ifmap_size}
            compiled.append(CompiledLayer(spec, layer, fields))
            activation, shape, out_size = output, layer.ofmap_shape, ifmap_size
            continue
        w = spec.conv_weights(shape)
        _check_tensors(config, spec, w)
        mapping = map_layer(config, layer)
        requantized = spec.shift is not None
        relative = DramLayout.packed(mapping, 0, requantized=requantized)
        zero = DramLayout(0, 0, 0, 0, relative.weight_bytes, relative.ifmap_bytes, relative.output_bytes)
        program = compile_layer(mapping, spec.bias, zero, shift=spec.shift, relu=spec.relu, weights=w)
        weights = place(element_bytes(arranged_weights(mapping, w), relative.weight_bytes), word)
        streams = {unit: place(np.asarray(words, dtype="<u4").tobytes(), 4)
                   for unit, words in program.streams.items()}
        output = place(bytes(int(np.prod(layer.ofmap_shape)) * relative.output_bytes), word)
        fields = {"kind": descriptor.Kind.CONV, "weights": weights, "ifmap": activation, "output": output,
                  "stats": stats[i]}
        for unit, words in program.streams.items():
            fields[f"{unit}_program"], fields[f"{unit}_words"] = streams[unit], len(words)
        compiled.append(CompiledLayer(spec, layer, fields, mapping, program, w))
        activation, shape = output, layer.ofmap_shape
        out_size = relative.output_bytes
    config.check_dram_span(base + len(image), "the network's memory image")
    for i, layer in enumerate(compiled):
        words = descriptor.encode(**layer.descriptor)
        at = descriptors - base + i * descriptor.DESCRIPTOR_BYTES
        image[at:at + descriptor.DESCRIPTOR_BYTES] = np.asarray(words, dtype="<u4").tobytes()
    return CompiledNetwork(config, network, base, image, descriptors, compiled, input_tensor,
                           (activation, tuple(shape), out_size))
