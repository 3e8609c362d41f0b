"""Layer shapes of well-known networks (shapes only, no weights), and of an ONNX model.

Each network is a list of (name, :class:`ConvLayer`) with the batch given; fully connected
layers are convolutions whose filter covers the whole ifmap (H = R, W = S). Pooling, ReLU and
the other layers without MACs are not listed.
"""

from .layer import ConvLayer


__all__ = ["NETWORKS", "check_batch", "network_layers", "onnx_layers", "is_fc"]


def _alexnet():
    # Krizhevsky et al. 2012, as the Eyeriss papers run it (227 x 227 input, CONV2/4/5 in two groups).
    return [("CONV1", dict(C=3, H=227, W=227, M=96, R=11, S=11, U=4)),
            ("CONV2", dict(C=96, H=27, W=27, M=256, R=5, S=5, P=2, G=2)),
            ("CONV3", dict(C=256, H=13, W=13, M=384, R=3, S=3, P=1)),
            ("CONV4", dict(C=384, H=13, W=13, M=384, R=3, S=3, P=1, G=2)),
            ("CONV5", dict(C=384, H=13, W=13, M=256, R=3, S=3, P=1, G=2)),
            ("FC6", dict(C=256, H=6, W=6, M=4096, R=6, S=6)),
            ("FC7", dict(C=4096, H=1, W=1, M=4096, R=1, S=1)),
            ("FC8", dict(C=4096, H=1, W=1, M=1000, R=1, S=1))]


def _vgg16():
    # Simonyan and Zisserman 2015, configuration D: 3 x 3 convolutions (padding 1) in five stages.
    layers, C, H = [], 3, 224
    for stage, (M, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for i in range(1, convs + 1):
            layers.append((f"CONV{stage}_{i}", dict(C=C, H=H, W=H, M=M, R=3, S=3, P=1)))
            C = M
        H //= 2
    return layers + [("FC6", dict(C=512, H=7, W=7, M=4096, R=7, S=7)),
                     ("FC7", dict(C=4096, H=1, W=1, M=4096, R=1, S=1)),
                     ("FC8", dict(C=4096, H=1, W=1, M=1000, R=1, S=1))]


def _lenet5():
    # LeCun et al. 1998: 32 x 32 input, C5 a 5 x 5 convolution over the 5 x 5 maps.
    return [("C1", dict(C=1, H=32, W=32, M=6, R=5, S=5)),
            ("C3", dict(C=6, H=14, W=14, M=16, R=5, S=5)),
            ("C5", dict(C=16, H=5, W=5, M=120, R=5, S=5)),
            ("F6", dict(C=120, H=1, W=1, M=84, R=1, S=1)),
            ("OUTPUT", dict(C=84, H=1, W=1, M=10, R=1, S=1))]


def _resnet18():
    # He et al. 2016: a 7 x 7 stem, four stages of two basic blocks, 1 x 1 stride-2 shortcuts.
    layers = [("conv1", dict(C=3, H=224, W=224, M=64, R=7, S=7, U=2, P=3))]
    C, H = 64, 56
    for stage, M in enumerate([64, 128, 256, 512], 1):
        for block in range(2):
            U = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            layers.append((f"{name}.conv1", dict(C=C, H=H, W=H, M=M, R=3, S=3, U=U, P=1)))
            if U == 2:
                layers.append((f"{name}.downsample", dict(C=C, H=H, W=H, M=M, R=1, S=1, U=2)))
            H //= U
            layers.append((f"{name}.conv2", dict(C=M, H=H, W=H, M=M, R=3, S=3, P=1)))
            C = M
    return layers + [("fc", dict(C=512, H=1, W=1, M=1000, R=1, S=1))]


def _mobilenet_v1():
    # Howard et al. 2017, width 1.0: depthwise 3 x 3 (G = C) then pointwise 1 x 1 convolutions.
    layers = [("conv1", dict(C=3, H=224, W=224, M=32, R=3, S=3, U=2, P=1))]
    C, H = 32, 112
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (M, U) in enumerate(plan, 1):
        layers.append((f"dw{i}", dict(C=C, H=H, W=H, M=C, R=3, S=3, U=U, P=1, G=C)))
        H = (H + 2 - 3) // U + 1
        layers.append((f"pw{i}", dict(C=C, H=H, W=H, M=M, R=1, S=1)))
        C = M
    return layers + [("fc", dict(C=1024, H=1, W=1, M=1000, R=1, S=1))]


#: The built-in networks: name -> a function of no arguments giving (name, shape) pairs.
NETWORKS = {"alexnet": _alexnet, "vgg16": _vgg16, "lenet5": _lenet5, "resnet18": _resnet18,
            "mobilenet-v1": _mobilenet_v1}


def check_batch(batch):
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")


def network_layers(name, batch=1):
    """The (name, :class:`ConvLayer`) of built-in network ``name`` at ``batch``."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; built-in networks: {', '.join(NETWORKS)}")
    check_batch(batch)
    return [(layer, ConvLayer(N=batch, **shape)) for layer, shape in NETWORKS[name]()]


def onnx_layers(path, batch=1):
    """The (name, :class:`ConvLayer`) of the Conv, pooling-as-convolution and fully connected
    layers of the ONNX model at ``path`` (read by :func:`rowstation.gen.frontend.read_onnx`)."""
    from .frontend import read_onnx

    check_batch(batch)
    network = read_onnx(path, batch=batch)
    N, C, H, W = network.input_shape
    layers = []
    for layer in network.layers:
        if layer.kind == "maxpool":
            K, U = layer.kernel, layer.stride
            H, W = (H - K) // U + 1, (W - K) // U + 1
            continue
        if layer.kind == "fc":
            M = layer.weights.shape[0]
            shape = ConvLayer(N=N, C=C, H=H, W=W, M=M, R=H, S=W)
        else:
            M, _, R, S = layer.weights.shape
            shape = ConvLayer(N=N, C=C, H=H, W=W, M=M, R=R, S=S, U=layer.stride, P=layer.padding,
                              G=layer.groups)
        layers.append((layer.name, shape))
        C, H, W = M, shape.E, shape.F
    return layers


def is_fc(layer):
    """Whether ``layer`` is fully connected: its filter covers the whole (padded) ifmap."""
    return layer.R == layer.H + 2 * layer.P and layer.S == layer.W + 2 * layer.P
