"""The ONNX compiler: the float reading against onnxruntime, dynamic fixed-point quantisation,
`rowstation compile`, float inputs and batches in `run-net`, clear errors, and the demo."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnx_models import MODELS, Builder
from rowstation.gen import preset
from rowstation.gen.cli import main
from rowstation.gen.frontend import read_onnx
from rowstation.gen.model import ORT_TOLERANCE, check_against_onnxruntime, onnxruntime_outputs
from rowstation.gen.network import Network
from rowstation.gen.quantize import dequantize, fraction_bits, quantize, quantize_input
from rowstation.sim.golden import psum_bits_needed
from rowstation.sim.network import run_network_golden_batches

#: Quantised (golden) vs float outputs, relative to the largest float output, on these models.
TOLERANCE = {"tiny": 0.1, "tiny-16": 1e-3}
KINDS = {"cnn": ["conv", "maxpool", "conv", "conv", "conv", "fc"], "view_flatten": ["conv", "maxpool", "fc", "fc"],
         "global_pool": ["conv", "conv", "fc"], "mlp": ["fc", "fc"]}


def inputs(shape, count, seed):
    return np.random.default_rng(seed).uniform(-1, 1, size=(count, *shape))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return {name: (make(root / f"{name}.onnx"), shape) for name, (make, shape) in MODELS.items()}


@pytest.mark.parametrize("name", MODELS)
def test_reading_matches_onnxruntime(models, name):
    path, shape = models[name]
    network = read_onnx(path, batch=2)
    assert [layer.kind for layer in network.layers] == KINDS[name]
    assert check_against_onnxruntime(path, network, inputs(shape, 8, 1)) <= ORT_TOLERANCE


def test_folding_and_attributes(models):
    """BatchNormalization and ReLUs fold into their Conv (a ReLU after a pool too), the bias
    Add into its MatMul, Gemm's alpha/beta/transB into the weights; a fixed batch is kept."""
    network = read_onnx(models["cnn"][0], batch=3)
    conv = network.layers[0]
    assert conv.relu and conv.bias is not None and [n.split("_")[0] for n in conv.nodes] == ["Conv", "BatchNormalization", "Relu"]
    assert (network.layers[2].stride, network.layers[2].padding, network.layers[2].groups) == (2, 1, 2)
    assert network.layers[3].groups == 8 and network.host_output == "Softmax" and network.input_shape == (3, 2, 10, 10)
    flat = read_onnx(models["view_flatten"][0])
    assert flat.layers[0].relu and flat.layers[2].relu and flat.layers[2].bias is not None
    assert read_onnx(models["global_pool"][0]).input_shape[0] == 2


@pytest.mark.parametrize("config", TOLERANCE)
@pytest.mark.parametrize("name", MODELS)
def test_quantised_golden_is_close_to_float(models, name, config):
    path, shape = models[name]
    config_ = preset(config)
    network = read_onnx(path, batch=2)
    quantized = quantize(network, config_, inputs(shape, 64, 2))
    q = quantized.quantization
    x = inputs(shape, 32, 3)
    ints, saturated = quantize_input(x.reshape(len(x), *quantized.input_shape[1:]), q["input_frac"],
                                     config_.ifmap_width)
    y = dequantize(run_network_golden_batches(config_, quantized, ints), q["output_frac"]).reshape(len(x), -1)
    reference = network.run(x, activations=True)[1][-1].reshape(len(x), -1)
    assert np.abs(y - reference).max() <= TOLERANCE[config] * np.abs(reference).max()


def test_quantisation_rule(models):
    """Power-of-two scales: the largest fraction that holds the calibration's largest
    magnitude; shift = f_in + f_w - f_out; biases at the accumulator's scale; the last layer
    exact."""
    assert fraction_bits(1.0, 8) == 6 and fraction_bits(16.0, 8) == 2 and fraction_bits(0.9, 4) == 2
    assert fraction_bits(127.0, 8) == 0 and fraction_bits(128.0, 8) == -1 and fraction_bits(0.0, 8) == 0
    path, shape = models["view_flatten"]
    network = read_onnx(path)
    calibration = inputs(shape, 64, 4)
    config = preset("tiny")
    quantized = quantize(network, config, calibration)
    q = quantized.quantization
    assert q["input_frac"] == fraction_bits(np.abs(calibration).max(), 8)
    _, activations = network.run(calibration, activations=True)
    for spec, detail, layer, y in zip(quantized.layers, q["layers"], network.layers, activations):
        if spec.kind == "maxpool":
            assert detail["input_frac"] == detail["output_frac"]
            continue
        assert detail["weight_frac"] == fraction_bits(np.abs(layer.weights).max(), 8)
        np.testing.assert_array_equal(spec.weights, np.floor(layer.weights * 2.0 ** detail["weight_frac"] + 0.5))
        np.testing.assert_array_equal(spec.bias, np.floor(layer.bias * 2.0 ** detail["accumulator_frac"] + 0.5))
        if spec is quantized.layers[-1]:
            assert spec.shift is None and detail["output_frac"] == detail["accumulator_frac"]
        else:
            assert detail["output_frac"] == min(fraction_bits(np.abs(y).max(), 8), detail["accumulator_frac"])
            assert spec.shift == detail["accumulator_frac"] - detail["output_frac"]


def test_narrow_accumulator_rescales_weights(models):
    """With 16-bit psums an 8x8-bit layer of 20 products cannot keep its ideal weight scale:
    its weights lose bits until every sum is exact, and the summary says how many."""
    config = preset("tiny").replace(psum_width=16, glb_bank_width=32)
    network = read_onnx(models["mlp"][0])
    quantized = quantize(network, config, inputs((20,), 32, 5))
    first = quantized.quantization["layers"][0]
    assert first["rescaled_bits"] > 0 and first["weight_frac"] == first["ideal_weight_frac"] - first["rescaled_bits"]
    for spec in quantized.layers:
        assert psum_bits_needed(spec.weights, spec.bias, 8) <= 16


def test_compile_writes_everything_a_run_needs(models, tmp_path, capsys):
    path, shape = models["cnn"]
    np.save(tmp_path / "cal.npy", inputs(shape, 32, 6).astype(np.float32))
    out = tmp_path / "net"
    assert main(["compile", str(path), "--preset", "tiny", "--calibrate", str(tmp_path / "cal.npy"),
                 "--batch", "2", "-o", str(out)]) == 0
    assert "| total |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [row["type"] for row in summary["layers"]] == KINDS["cnn"]
    assert all(row["cycles"] > 0 for row in summary["layers"]) and summary["onnxruntime_error"] <= ORT_TOLERANCE
    image = json.loads((out / "image.json").read_text())
    assert (out / "image.bin").stat().st_size == image["bytes"] and image["count"] == 6
    assert len(list((out / "programs").glob("*.hex"))) == 3 * 5 and len(list((out / "mappings").glob("*.txt"))) == 5
    network = Network.load(out)
    assert network.input_shape == (2, 2, 10, 10) and network.quantization["host_output"] == "Softmax"

    # run-net: float inputs quantised at the input scale, 5 inputs as three runs of the batch.
    x = inputs(shape, 5, 7).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run-net", str(out), "--preset", "tiny", "--input", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy"), "--dequantize", "--report", str(tmp_path / "r.json")]) == 0
    y = np.load(tmp_path / "y.npy")
    q = network.quantization
    ints, _ = quantize_input(x, q["input_frac"], 8)
    expected = dequantize(run_network_golden_batches(preset("tiny"), network, ints), q["output_frac"])
    np.testing.assert_array_equal(y, expected.reshape(5, -1))
    assert json.loads((tmp_path / "r.json").read_text())["total"]["runs"] == 3
    float_logits = network_float(path, x)
    assert np.mean(y.argmax(1) == float_logits.argmax(1)) >= 0.8


def network_float(path, x):
    return read_onnx(path).run(x, activations=True)[1][-1].reshape(len(x), -1)


def test_compiled_model_runs_bit_exact_on_the_rtl(models, tmp_path):
    """A compiled ONNX model (grouped, depthwise, pooled) on the generated accelerator, five
    inputs as three runs of batch 2 in one simulation: equal to the golden model."""
    from rowstation.gen.model import compile_model
    from rowstation.gen.network import compile_network
    from rowstation.sim.network import run_network_rtl

    path, shape = models["cnn"]
    config = preset("tiny")
    compile_model(path, config, inputs(shape, 32, 8), tmp_path / "net", batch=2)
    network = Network.load(tmp_path / "net")
    ints, _ = quantize_input(inputs(shape, 5, 9), network.quantization["input_frac"], 8)
    seen = []
    output, counters = run_network_rtl(compile_network(config, network), ints, sim="verilator",
                                       build_root="build/rtl", stall=0.2, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_array_equal(output, run_network_golden_batches(config, network, ints))
    assert seen[-1] == (3, 3) and counters[0]["mac"] + counters[0]["gated_mac"] == 3 * network.shapes()[0].macs


def _model(tmp_path, build):
    b = Builder((2, 6, 6))
    build(b)
    return b.model(tmp_path / "bad.onnx", ["N", 4, 6, 6])


@pytest.mark.parametrize("build,message", [
    (lambda b: b.node("Sigmoid"), r"node Sigmoid_1: operator Sigmoid is not supported"),
    (lambda b: b.conv(2, 4, 3, pads=[1, 1, 1, 1], dilations=[2, 2]), r"\(Conv\): attribute dilations = \[2, 2\]"),
    (lambda b: b.conv(2, 4, 3, pads=[1, 0, 1, 0]), r"\(Conv\): attribute pads = \[1, 0, 1, 0\]"),
    (lambda b: b.conv(2, 4, 3, pads=[1, 1, 1, 1], strides=[1, 2]), r"attribute strides = \[1, 2\]"),
    (lambda b: b.node("MaxPool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]), r"\(MaxPool\): attribute pads"),
    (lambda b: b.node("MaxPool", kernel_shape=[4, 4], strides=[4, 4], ceil_mode=1), r"attribute ceil_mode = 1"),
    (lambda b: b.node("Add", "x", chain=True), r"\(Add\): an Add of two computed tensors \(a residual"),
    (lambda b: b.batchnorm(2), r"BatchNormalization is folded into the Conv it follows"),
    (lambda b: b.node("Relu"), r"\(Relu\): a ReLU must follow a Conv or Gemm"),
    (lambda b: b.node("LeakyRelu", alpha=0.1), r"operator LeakyRelu is not supported"),
    (lambda b: (b.conv(2, 4, 3), b.node("Clip", b.tensor(0.0), b.tensor(6.0))), r"\(Clip\): bounds \[0.0, 6.0\]"),
])
def test_unsupported_models_are_refused_naming_node_and_attribute(tmp_path, build, message):
    with pytest.raises(ValueError, match=message):
        read_onnx(_model(tmp_path, build))


def test_malformed_and_dynamic_models_are_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model at all\xff\xfe")
    with pytest.raises(ValueError, match=r"junk.onnx is not a valid ONNX model"):
        read_onnx(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match=r"missing.onnx does not exist"):
        read_onnx(tmp_path / "missing.onnx")
    b = Builder((2, 6, 6))
    b.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", 6])
    b.conv(2, 4, 3)
    with pytest.raises(ValueError, match=r"input x: dimension 2 is dynamic \(H\)"):
        read_onnx(b.model(tmp_path / "dynamic.onnx", ["N", 4, 4, 4]))
    b = Builder((2, 6, 6))
    b.conv(2, 4, 3)
    graph = b.model(tmp_path / "two.onnx", ["N", 4, 4, 4])
    model = onnx.load(str(graph))
    model.graph.input.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]))
    onnx.save(model, str(tmp_path / "two.onnx"))
    with pytest.raises(ValueError, match=r"the model has 2 inputs"):
        read_onnx(tmp_path / "two.onnx")


def test_compile_errors_name_the_value(models, tmp_path, capsys):
    path, _ = models["cnn"]
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 10, 10), dtype=np.float32))
    assert main(["compile", str(path), "--preset", "tiny", "--calibrate", str(tmp_path / "wrong.npy"),
                 "-o", str(tmp_path / "out")]) == 2
    assert "calibration file" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert main(["compile", str(path), "--preset", "tiny", "--calibrate", str(tmp_path / "junk.npy"),
                 "-o", str(tmp_path / "out")]) == 2
    assert "is not a readable .npy array" in capsys.readouterr().err
    np.save(tmp_path / "nan.npy", np.full((2, 2, 10, 10), np.nan, dtype=np.float32))
    assert main(["compile", str(path), "--calibrate", str(tmp_path / "nan.npy"), "-o", str(tmp_path / "out")]) == 2
    assert "not finite" in capsys.readouterr().err


def test_float_input_needs_a_compiled_network(tmp_path, capsys):
    from test_accel import network

    net, x = network()
    net.save(tmp_path / "net")
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    assert main(["run-net", str(tmp_path / "net"), "--preset", "tiny", "--input", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 2
    assert "has no input scale" in capsys.readouterr().err


def test_clip_at_zero_is_a_relu(tmp_path):
    b = Builder((2, 6, 6))
    b.conv(2, 4, 3)
    b.node("Clip", b.tensor(0.0))
    path = b.model(tmp_path / "clip.onnx", ["N", 4, 4, 4])
    network = read_onnx(path)
    assert network.layers[0].relu
    check_against_onnxruntime(path, network, inputs((2, 6, 6), 4, 12))


def test_onnxruntime_reference_runs_fixed_batches_one_chunk_at_a_time(models):
    path, shape = models["global_pool"]
    x = inputs(shape, 5, 10)
    np.testing.assert_allclose(onnxruntime_outputs(path, x), read_onnx(path).run(x), rtol=1e-5, atol=1e-6)


def test_mlp_with_two_dimensional_input(models, tmp_path):
    path, _ = models["mlp"]
    x = inputs((20,), 6, 11)
    np.save(tmp_path / "cal.npy", x)
    assert main(["compile", str(path), "--preset", "tiny", "--calibrate", str(tmp_path / "cal.npy"),
                 "-o", str(tmp_path / "net")]) == 0
    assert main(["run-net", str(tmp_path / "net"), "--preset", "tiny", "--input", str(tmp_path / "cal.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 0
    assert np.load(tmp_path / "y.npy").shape == (6, 4)


def test_demo_end_to_end(tmp_path):
    """`make demo` on a few images: the committed model on the RTL equals the golden model on
    every image, and quantisation at 8 and 16 bits keeps the float accuracy within a point."""
    from rowstation.sim.demo import run_demo

    result = run_demo(tmp_path / "demo", images=16, batch=8, log=lambda *a: None)
    assert result["rtl_equals_golden"] and result["accuracy"]["rtl"] == result["accuracy"]["golden"]
    assert result["accuracy"]["float"] >= 0.9
    by_bits = {row["bits"]: row["accuracy"] for row in result["precision"]}
    assert by_bits[8] >= by_bits[16] - 0.01 and by_bits[16] >= 0.95
    assert (tmp_path / "demo" / "precision.png").stat().st_size > 0
    assert (tmp_path / "demo" / "rtl" / "rowstation_accel.v").exists()
