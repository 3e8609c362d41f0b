"""Small float ONNX models built with ``onnx.helper`` for the compiler's tests."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    """Nodes and random initializers of a model with one float input."""

    def __init__(self, shape, seed=0, batch="N"):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape])
        self.current, self.count = "x", 0

    def tensor(self, array, dtype=np.float32):
        self.count += 1
        name = f"t{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def random(self, *shape, scale=0.5):
        return self.tensor(self.rng.normal(scale=scale, size=shape))

    def node(self, op, *inputs, chain=True, **attrs):
        self.count += 1
        out = f"{op.lower()}{self.count}"
        ins = [self.current, *inputs] if chain else list(inputs)
        self.nodes.append(helper.make_node(op, ins, [out], name=f"{op}_{self.count}", **attrs))
        self.current = out
        return out

    def conv(self, C, M, K, *, groups=1, bias=True, **attrs):
        ins = [self.random(M, C // groups, K, K)] + ([self.random(M)] if bias else [])
        return self.node("Conv", *ins, kernel_shape=[K, K], group=groups, **attrs)

    def batchnorm(self, M):
        return self.node("BatchNormalization", self.tensor(self.rng.uniform(0.5, 1.5, M)),
                         self.random(M), self.random(M), self.tensor(self.rng.uniform(0.5, 2.0, M)))

    def model(self, path, output_shape, opset=17):
        out = helper.make_tensor_value_info(self.current, TensorProto.FLOAT, output_shape)
        graph = helper.make_graph(self.nodes, "test", [self.input], [out], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.save(model, str(path))
        return path


def cnn(path, seed=0):
    """Conv (pad 1) + BN + ReLU, max pool, grouped stride-2 Conv + ReLU, depthwise Conv, average
    pool, Flatten, Gemm + Softmax: (N, 2, 10, 10) -> (N, 10)."""
    b = Builder((2, 10, 10), seed)
    b.conv(2, 8, 3, pads=[1, 1, 1, 1], bias=False)
    b.batchnorm(8)
    b.node("Relu")
    b.node("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    b.conv(8, 8, 3, groups=2, strides=[2, 2], pads=[1, 1, 1, 1])
    b.node("Relu")
    b.conv(8, 8, 3, groups=8, pads=[1, 1, 1, 1])          # depthwise
    b.node("AveragePool", kernel_shape=[3, 3], strides=[3, 3])
    b.node("Flatten", axis=1)
    b.node("Gemm", b.random(10, 8), b.random(10), transB=1)
    b.node("Softmax", axis=1)
    return b.model(path, ["N", 10])


def view_flatten(path, seed=1):
    """PyTorch's ``x.view(x.size(0), -1)`` (Shape, Gather, Unsqueeze, Concat, Reshape), ReLU after a
    pool, Dropout, MatMul + bias Add, Gemm with alpha/beta and an untransposed B."""
    b = Builder((3, 8, 8), seed)
    b.conv(3, 6, 5, strides=[1, 1])
    b.node("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    b.node("Relu")
    x = b.current
    shape = b.node("Shape", x, chain=False)
    batch = b.node("Gather", shape, b.tensor(0, np.int64), chain=False, axis=0)
    batch = b.node("Unsqueeze", batch, b.tensor([0], np.int64), chain=False)
    target = b.node("Concat", batch, b.tensor([-1], np.int64), chain=False, axis=0)
    b.current = x
    b.node("Reshape", target)
    b.node("Dropout")
    b.node("MatMul", b.random(24, 12))
    b.node("Add", b.random(12))
    b.node("Relu")
    b.node("Gemm", b.random(12, 5), b.random(5), alpha=0.5, beta=2.0)
    return b.model(path, ["N", 5])


def global_pool(path, seed=2):
    """Conv, GlobalAveragePool, Squeeze, MatMul without bias; a fixed batch of 2."""
    b = Builder((4, 6, 6), seed, batch=2)
    b.conv(4, 6, 3)
    b.node("Relu")
    b.node("GlobalAveragePool")
    b.node("Squeeze", b.tensor([2, 3], np.int64))
    b.node("MatMul", b.random(6, 3))
    return b.model(path, [2, 3])


def mlp(path, seed=3):
    """A 2-D input (N, 20): Gemm + ReLU, Gemm, LogSoftmax."""
    b = Builder((20,), seed)
    b.node("Gemm", b.random(16, 20), b.random(16), transB=1)
    b.node("Relu")
    b.node("Gemm", b.random(4, 16), b.random(4), transB=1)
    b.node("LogSoftmax", axis=1)
    return b.model(path, ["N", 4])


MODELS = {"cnn": (cnn, (2, 10, 10)), "view_flatten": (view_flatten, (3, 8, 8)),
          "global_pool": (global_pool, (4, 6, 6)), "mlp": (mlp, (20,))}
