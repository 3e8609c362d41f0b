"""The accelerator top level: register map, descriptors, networks on the golden model, the
controller model and the generated ``rowstation_accel`` driven over AXI by the host driver."""

import dataclasses
import json

import numpy as np
import pytest

from rowstation.gen import preset
from rowstation.gen import descriptor
from rowstation.gen.csr import Access, ControlRegisters
from rowstation.gen.isa import COUNTERS
from rowstation.gen.network import LayerSpec, Network, compile_network
from rowstation.hw.export import accelerator_verilog
from rowstation.sim.network import run_accel_test, run_network_golden, run_network_model, run_network_rtl
from rowstation.sim.runner import lint

from reference import conv2d_loops, max_pool_loops, requantize_loops
from test_pe_rtl import BUILD


TINY = preset("tiny")


def _random(rng, shape, bits):
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape)


def network(seed=0):
    """A batch of two through a strided, padded, grouped conv; overlapping max pooling (3x3,
    stride 2); a 1x1 conv; a fully connected layer (raw output)."""
    rng = np.random.default_rng(seed)
    return Network("test-net", (2, 4, 12, 12), [
        LayerSpec("conv1", "conv", _random(rng, (6, 2, 3, 3), 4), _random(rng, (6,), 8), stride=2,
                  padding=1, groups=2, shift=5, relu=True),
        LayerSpec("pool1", "maxpool", kernel=3, stride=2),
        LayerSpec("conv2", "conv", _random(rng, (8, 6, 1, 1), 4), None, shift=4, relu=False),
        LayerSpec("fc", "fc", _random(rng, (5, 8 * 2 * 2), 3), _random(rng, (5,), 8)),
    ]), _random(rng, (2, 4, 12, 12), 8)


def reference(net, x, width):
    """The network with the independent loop reference."""
    for spec in net.layers:
        if spec.kind == "maxpool":
            x = max_pool_loops(x, spec.kernel, spec.stride)
            continue
        w = spec.conv_weights(x.shape)
        b = spec.bias if spec.bias is not None else np.zeros(w.shape[0], dtype=np.int64)
        layer = spec.layer(x.shape)
        acc = conv2d_loops(x, w, b, layer.U, layer.P, layer.G)
        x = acc if spec.shift is None else requantize_loops(acc, spec.shift, spec.relu, width)
    return x


def test_register_map_is_consistent():
    regs = ControlRegisters(TINY)
    words = {}
    for r in regs:
        for offset in (r.offset, r.offset + 4) if r.counter else (r.offset,):
            assert offset % 4 == 0 and offset not in words, r.name
            words[offset] = r.name
        bits = set()
        for f in r.fields:
            span = set(range(f.offset, f.offset + f.width))
            assert not bits & span and max(span) < (64 if r.counter else 32), (r.name, f.name)
            bits |= span
    assert [r.name for r in regs if r.counter] == [f"COUNT_{n.upper()}" for n in COUNTERS]
    table = regs.markdown()
    assert all(r.name in table for r in regs)
    header = "\n".join(regs.c_lines("RS"))
    assert "#define RS_STATUS_ERROR_SHIFT 8u" in header and "#define RS_COUNT_MAC_HI 0x104u" in header
    assert regs["CONFIG_ARRAY"].field("rows").access is Access.CONST


def test_descriptor_encoding():
    words = descriptor.encode(kind=descriptor.Kind.CONV, load_program=0x100, load_words=3)
    assert len(words) == descriptor.DESCRIPTOR_WORDS and words[:3] == [1, 0x100, 3]
    assert descriptor.decode(words)["load_words"] == 3
    with pytest.raises(ValueError, match="bogus"):
        descriptor.encode(bogus=1)
    with pytest.raises(ValueError, match="ifmap = 4294967296 does not fit 32 bits"):
        descriptor.encode(ifmap=1 << 32)


def test_network_golden_and_model_match_reference():
    net, x = network()
    golden, _ = run_network_golden(TINY, net, x)
    np.testing.assert_array_equal(golden, reference(net, x, TINY.ifmap_width))
    model, counts = run_network_model(compile_network(TINY, net), x)
    np.testing.assert_array_equal(model, golden)
    assert [c["passes"] > 0 for c in counts] == [True, False, True, True]   # the pool runs no pass


def test_network_round_trips_through_a_directory(tmp_path):
    net, x = network()
    net.save(tmp_path)
    loaded = Network.load(tmp_path)
    assert loaded.input_shape == net.input_shape and len(loaded.layers) == len(net.layers)
    np.testing.assert_array_equal(run_network_golden(TINY, loaded, x)[0], run_network_golden(TINY, net, x)[0])


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update(layers=[{"type": "pool", "weights": "w.npy"}]), "type 'pool'; supported: conv, fc, maxpool"),
    (lambda s: s["layers"][1].pop("kernel"), "maxpool layer pool1 names no kernel"),
    (lambda s: s["layers"][1].update(weights="w.npy"), r"pool1 has unknown keys \['weights'\]"),
    (lambda s: s.update(input=[1, 2, 3]), r"input must be \[N, C, H, W\]"),
    (lambda s: s["layers"][0].update(speed=3), r"unknown keys \['speed'\]"),
    (lambda s: s["layers"][0].update(weights="missing.npy"), "missing.npy does not exist"),
    (lambda s: s["layers"][0].pop("weights"), "names no weights"),
])
def test_malformed_network_is_refused(tmp_path, edit, message):
    net, _ = network()
    net.save(tmp_path)
    spec = json.loads((tmp_path / "network.json").read_text())
    edit(spec)
    (tmp_path / "network.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=message):
        Network.load(tmp_path)


def test_network_errors_name_the_value_and_limit(tmp_path):
    net, x = network()
    np.save(tmp_path / "f.npy", np.zeros((2, 2), dtype=np.float32))
    (tmp_path / "network.json").write_text(json.dumps(
        {"input": [1, 1, 2, 2], "layers": [{"type": "conv", "weights": "f.npy"}]}))
    with pytest.raises(ValueError, match="holds float32 values, not integers"):
        Network.load(tmp_path)
    middle = Network("n", net.input_shape, [dataclasses.replace(net.layers[0], shift=None), *net.layers[1:]])
    with pytest.raises(ValueError, match="only the last layer may write the exact accumulation"):
        middle.shapes()
    fc = Network("n", (1, 4, 9, 9), [LayerSpec("fc", "fc", np.zeros((3, 10), dtype=np.int64))])
    with pytest.raises(ValueError, match=r"fc weights \(3, 10\) do not match its input"):
        fc.shapes()
    compiled = compile_network(TINY, net)
    with pytest.raises(ValueError, match=r"input value 128 at index \(0, 0, 0, 0\) is outside the signed "
                                         r"8-bit range \[-128, 127\]"):
        compiled.job(np.full(x.shape, 128))
    big = Network("n", net.input_shape, [dataclasses.replace(net.layers[0], weights=net.layers[0].weights * 64),
                                         *net.layers[1:]])
    with pytest.raises(ValueError, match=r"layer conv1 weights value -?\d+ at index .* outside the signed 8-bit"):
        compile_network(TINY, big)
    with pytest.raises(ValueError, match="layer p: maxpool window 9 is larger than its input 6x6"):
        Network("n", (1, 1, 6, 6), [LayerSpec("p", "maxpool", kernel=9, stride=1)]).shapes()
    with pytest.raises(ValueError, match=r"layer p: maxpool .* needs K <= 8"):
        compile_network(TINY, Network("n", (1, 1, 12, 12), [LayerSpec("p", "maxpool", kernel=9, stride=1)]))
    with pytest.raises(ValueError, match=r"^the network's memory image ends at byte 0x[0-9a-f]+, beyond the "
                                         r"0x1000 bytes that dram_addr_width = 12 addresses$"):
        compile_network(TINY.replace(dram_addr_width=12), net)
    wide = Network("n", (1, 64, 9, 9), [LayerSpec("wide", "conv", np.full((2, 64, 3, 3), 127), None, shift=8)])
    with pytest.raises(ValueError, match="layer wide needs 2[0-9]-bit partial sums .* psum_width is 16"):
        compile_network(TINY.replace(psum_width=16), wide)
    with pytest.raises(ValueError, match=r"input has shape \(2, 4, 12\); the network takes \(2, 4, 12, 12\)"):
        compiled.job(x[:, :, :, 0])
    with pytest.raises(ValueError, match="base 0x2 is not a multiple of the 4-byte memory word"):
        compile_network(TINY, net, base=2)


def test_accelerator_verilog_is_lint_clean(tmp_path):
    path = tmp_path / "rowstation_accel.v"
    path.write_text(accelerator_verilog(TINY))
    assert lint(path, top="rowstation_accel") == []


def test_accelerator_refuses_narrow_memory():
    from rowstation.hw.accelerator import Accelerator

    with pytest.raises(ValueError, match="dram_width of at least 32 bits .* not 16"):
        Accelerator(TINY.replace(dram_width=16, filter_noc_width=1, psum_width=16))


@pytest.mark.parametrize("sim,stall,width", [("verilator", 0.3, 32), ("icarus", 0.2, 32),
                                             ("verilator", 0.3, 64), ("verilator", 0.3, 128)])
def test_network_on_the_accelerator_is_bit_exact(sim, stall, width):
    """AXI data widths 32, 64 and 128 bits."""
    config = TINY.replace(dram_width=width)
    net, x = network()
    compiled = compile_network(config, net)
    golden, _ = run_network_golden(config, net, x)
    _, expected = run_network_model(compiled, x)
    output, layers = run_network_rtl(compiled, x, sim=sim, build_root=BUILD, stall=stall)
    np.testing.assert_array_equal(output, golden)
    for spec, want, got in zip(net.layers, expected, layers):
        differ = {name: (got[name], value) for name, value in want.items() if got[name] != value}
        assert not differ, f"{spec.name}: counters (RTL, model) differ: {differ}"
        assert got["cycles"] > 0


@pytest.mark.parametrize("testcase", ["registers", "errors"])
def test_accelerator_registers_and_errors(testcase, tmp_path):
    """Reset values, read-only and write-one-to-clear fields, SLVERR outside the map, start
    while busy, the interrupt; each error code stops the run cleanly; then a real run works."""
    net, x = network()
    compiled = compile_network(TINY, net)
    job = compiled.job(x)
    job.save(tmp_path / "job")
    run = run_accel_test(TINY, "verilator", BUILD, testcase, {"job": str(tmp_path / "job"), "timeout_us": 4000})
    output = compiled.output_array((run / "output.bin").read_bytes())
    np.testing.assert_array_equal(output, run_network_golden(TINY, net, x)[0])


def test_docs_register_map_and_descriptors_are_generated_from_the_code():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "accelerator.md").read_text()
    for marker, table in (("registers", ControlRegisters(TINY).markdown()), ("descriptors", descriptor.markdown())):
        block = text.split(f"<!-- {marker}:")[1].split("-->", 1)[1].split(f"<!-- end {marker} -->")[0]
        assert block.strip() == table, f"docs/accelerator.md's {marker} table is stale"


@pytest.mark.parametrize("pools,shape", [
    ([(3, 2), (2, 3), (1, 1), (3, 1)], (2, 3, 17, 17)),     # overlapping, gapped, identity, down to 1x1
    ([(8, 1), (2, 2)], (1, 2, 9, 12)),                      # the widest window, then F = 1 rows
])
def test_max_pooling_chains_on_the_rtl(pools, shape):
    """Chains of pooling passes alone: every window and stride the pooler handles, rows of one
    output, bit-exact against the loop reference."""
    layers = [LayerSpec(f"pool{i}", "maxpool", kernel=k, stride=u) for i, (k, u) in enumerate(pools)]
    net = Network("pools", shape, layers)
    x = np.random.default_rng(7).integers(-128, 128, shape)
    output, _ = run_network_rtl(compile_network(TINY, net), x, sim="verilator", build_root=BUILD, stall=0.3)
    expected = x
    for k, u in pools:
        expected = max_pool_loops(expected, k, u)
    np.testing.assert_array_equal(output, expected)
