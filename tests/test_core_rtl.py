"""Whole layers on the generated core (cocotb): the controller runs each layer's program with
the global buffer and a stalling external memory; bit-exact against the golden model, every
counter equal to the controller model's count (checked in the testbench)."""

import numpy as np
import pytest

from rowstation.gen import ConvLayer, preset
from rowstation.gen.mapper import map_layer
from rowstation.gen.performance import layer_report
from rowstation.gen.program import compile_layer, load_bound
from rowstation.hw.export import array_verilog, core_verilog
from rowstation.sim.golden import conv2d, requantize
from rowstation.sim.rtl import run_layers_rtl
from rowstation.sim.runner import lint
from rowstation.sim.stimulus import random_layer_arrays

from test_pe_rtl import BUILD


TINY = preset("tiny")
#: Two lanes of the psum and output networks (PE columns 0, 2 and 1, 3), and the global buffer
#: in banks small enough that each lane's psums have banks of their own.
LANES = TINY.replace(psum_noc_lanes=2, glb_banks=8, glb_bank_depth=128)
#: Two MAC lanes per PE, behind a register after the filter spad.
MAC_LANES = TINY.replace(mac_lanes=2, weight_register=1)
#: Three lanes of the ifmap network, the global buffer in 16 smaller banks so that a pass's rows
#: lie in several and the lanes read them side by side.
IFMAP_LANES = TINY.replace(ifmap_noc_lanes=3, glb_banks=16, glb_bank_depth=64)
# Another array shape and scratchpads, and a global buffer too small for most layers at once:
# psums go out and return between epochs; two psum lanes of unequal width (columns 0, 2 and 1).
SMALL = TINY.replace(array_rows=2, array_cols=3, filter_spad_depth=16, ifmap_spad_depth=6,
                     psum_spad_depth=3, glb_banks=4, glb_bank_depth=32, psum_noc_lanes=2)

# Stride 1-4, padding, groups and depthwise, 1x1, FC, R > array rows, E > array cols, batch > 1,
# S wider than a PE (segments); without stalls and with random stalls on every memory channel.
LAYERS = [
    "N=1,C=2,H=6,W=6,M=2,R=3,S=3,P=1",
    "N=2,C=3,H=7,W=5,M=4,R=2,S=2,U=2",
    "N=1,C=2,H=6,W=9,M=2,R=5,S=3,P=1,G=2",
    "N=1,C=4,H=6,W=6,M=4,R=3,S=3,P=1,G=4",
    "N=2,C=3,H=5,W=5,M=5,R=1,S=1",
    "N=2,C=6,H=3,W=3,M=4,R=3,S=3",
    "N=1,C=2,H=9,W=11,M=2,R=3,S=3,U=3",
    "N=1,C=1,H=9,W=12,M=2,R=2,S=4,U=4",
    "N=1,C=1,H=4,W=16,M=2,R=2,S=14",
    ALIGNED := "N=1,C=3,H=7,W=7,M=6,R=3,S=3,P=1",   # passes of whole runs of a filter block's rows
]
# (simulator, configuration, layers, external memory stall and program idle probabilities)
RUNS = [("verilator", TINY, LAYERS, 0.0, 0.0), ("verilator", TINY, LAYERS[::-1], 0.5, 0.3),
        ("icarus", LANES, LAYERS[1:4] + LAYERS[7:8], 0.3, 0.2),
        ("icarus", MAC_LANES, LAYERS[:1] + LAYERS[2:5] + LAYERS[9:], 0.3, 0.2),
        ("icarus", IFMAP_LANES, LAYERS[:2] + LAYERS[5:7], 0.3, 0.2)]


def run(config, specs, sim, *, stall, idle, tolerance=0.0):
    """Every other layer is requantised on chip (shift, ReLU on every fourth), the others
    write the exact accumulation; each mapped with the mapper's ``tolerance``."""
    cases, wants = [], []
    for n, spec in enumerate(specs):
        layer = ConvLayer.parse(spec)
        arrays = random_layer_arrays(config, layer, seed=n, zeros=0.25)
        post = {"shift": 2 + n, "relu": n % 4 == 1} if n % 2 else {}
        cases.append(dict(x=arrays["ifmap"], w=arrays["weights"], b=arrays["bias"], stride=layer.U,
                          padding=layer.P, groups=layer.G, tolerance=tolerance, **post))
        acc = conv2d(arrays["ifmap"], arrays["weights"], arrays["bias"], stride=layer.U,
                     padding=layer.P, groups=layer.G)
        if post:
            acc = requantize(acc, width=config.ifmap_width, **post)
        wants.append((layer, acc))
    results = run_layers_rtl(config, cases, sim=sim, build_root=BUILD, stall=stall, idle=idle)
    for (layer, want), (got, stats), case in zip(wants, results, cases):
        np.testing.assert_array_equal(got, want, err_msg=str(layer))
        counts = stats["counters"]
        assert counts["mac"] + counts["gated_mac"] == layer.macs
        assert counts["cycles"] * config.peak_macs >= layer.macs
        # The row cache's bound, by which the mapper orders and prunes block sizes of images.
        assert counts["cycles"] >= load_bound(map_layer(config, layer, tolerance=tolerance))
        width = config.ifmap_width if "shift" in case else config.psum_width
        assert counts["dram_writes"] * config.dram_width >= want.size * config.memory_width(width)
    return results


def _keeps_filters(config, spec):
    """Whether some PE of the layer's program keeps its filters from one pass to the next."""
    mapping = map_layer(config, ConvLayer.parse(spec))
    return compile_layer(mapping).filter_loads < sum(len(plan.assign) for plan in mapping.plans) * mapping.blocks


#: How far the performance model's cycles may be from the RTL's without stalls: the core issue's
#: bound (measured: at most 2.5 % on these runs; docs/performance.md).
MODEL_TOLERANCE = 0.03


def _check_model(specs, results):
    """The performance model's cycles for the program each layer ran are within
    MODEL_TOLERANCE of the RTL's (no stalls)."""
    for spec, (_, stats) in zip(specs, results):
        predicted, measured = stats["predicted"]["cycles"], stats["counters"]["cycles"]
        assert abs(predicted - measured) <= MODEL_TOLERANCE * measured, (spec, predicted, measured)


@pytest.mark.parametrize("sim,config,specs,stall,idle", RUNS,
                         ids=["verilator", "verilator-stalls", "icarus-stalls", "icarus-mac-lanes-stalls",
                              "icarus-ifmap-lanes-stalls"])
def test_core_layers_bit_exact(sim, config, specs, stall, idle):
    assert map_layer(TINY, ConvLayer.parse(ALIGNED)).aligned
    assert any(_keeps_filters(config, spec) for spec in specs)    # some PEs keep theirs across passes
    results = run(config, specs, sim, stall=stall, idle=idle)
    if not (stall or idle):
        _check_model(specs, results)


#: A layer whose passes one psum per cycle on the output network binds on TINY.
OUTPUT_BOUND = "N=1,C=2,H=8,W=16,M=8,R=3,S=1"


def test_psum_lanes_speed_up_an_output_bound_layer():
    """Two lanes of the psum and output networks carry two psums a cycle: the layer the
    single-lane network binds runs faster, bit-exact, as the performance model predicts."""
    mapping = map_layer(LANES.replace(psum_noc_lanes=1), ConvLayer.parse(OUTPUT_BOUND))
    assert layer_report(mapping, compile_layer(mapping))["binding"] == "output network"
    cycles = []
    for config in (LANES.replace(psum_noc_lanes=1), LANES):
        results = run(config, [OUTPUT_BOUND], "verilator", stall=0.0, idle=0.0)
        _check_model([OUTPUT_BOUND], results)
        cycles.append(results[0][1]["counters"]["cycles"])
    assert cycles[1] < 0.95 * cycles[0], cycles


#: A layer whose passes one activation per cycle on the ifmap network binds on IFMAP_LANES.
IFMAP_BOUND = "N=1,C=3,H=8,W=20,M=1,R=3,S=2"


def test_ifmap_lanes_speed_up_an_ifmap_bound_layer():
    """Two lanes of the ifmap network, each carrying its share of a pass's rows, carry two
    activations a cycle: the layer the single lane binds runs faster, bit-exact, as the
    performance model predicts."""
    configs = [IFMAP_LANES.replace(ifmap_noc_lanes=1), IFMAP_LANES.replace(ifmap_noc_lanes=2)]
    mapping = map_layer(configs[0], ConvLayer.parse(IFMAP_BOUND))
    assert layer_report(mapping, compile_layer(mapping))["binding"] == "ifmap network"
    cycles = []
    for config in configs:
        results = run(config, [IFMAP_BOUND], "verilator", stall=0.0, idle=0.0)
        _check_model([IFMAP_BOUND], results)
        cycles.append(results[0][1]["counters"]["cycles"])
    assert cycles[1] < 0.85 * cycles[0], cycles


def test_one_psum_buffer_waits_for_each_store():
    """The mapping with one psum buffer (ONE_BUFFER within 10 %: each tile waits for the store
    before it) runs bit-exact, with and without stalls, as the performance model predicts."""
    from test_mapper import ONE_BUFFER

    assert map_layer(TINY, ConvLayer.parse(ONE_BUFFER), tolerance=0.1).allocation.psum_buffers == 1
    _check_model([ONE_BUFFER], run(TINY, [ONE_BUFFER], "verilator", stall=0.0, idle=0.0, tolerance=0.1))
    run(TINY, [ONE_BUFFER], "verilator", stall=0.5, idle=0.3, tolerance=0.1)


#: A layer whose loads bind: short rows, little compute per row.
LOAD_BOUND = "N=2,C=2,H=12,W=11,M=1,R=2,S=1,U=3"


def test_single_word_bursts_stream_a_word_a_cycle():
    """A memory without bursts (``dram_burst`` 1: a command per word) still streams a word a
    cycle (the readers keep enough words in flight for the round trip): the load-bound layer
    takes the cycles the model predicts, as with bursts of 16."""
    for config in (TINY.replace(dram_burst=1), TINY):
        _check_model([LOAD_BOUND], run(config, [LOAD_BOUND], "verilator", stall=0.0, idle=0.0))


#: Two psum lanes in TINY's four banks: both lanes' psums share a bank, whose one read and one
#: write a cycle the lanes (and the ifmap stream) take in turns.
SHARED_BANKS = TINY.replace(psum_noc_lanes=2)


def test_psum_lanes_sharing_a_bank_take_turns():
    """Where the global buffer is too small to give each psum lane banks of its own, the
    streams take turns at the bank they share: the performance model counts the busiest bank's
    accesses (they bind these layers) and stays within MODEL_TOLERANCE of the RTL."""
    specs = [OUTPUT_BOUND, LAYERS[4], "N=1,C=1,H=7,W=7,M=8,R=3,S=3,P=1"]
    for spec in specs:
        mapping = map_layer(SHARED_BANKS, ConvLayer.parse(spec))
        assert layer_report(mapping, compile_layer(mapping))["binding"] == "buffer banks", spec
    _check_model(specs, run(SHARED_BANKS, specs, "verilator", stall=0.0, idle=0.0))


#: Layers whose passes the MAC slots bind on TINY.
MAC_BOUND = ["N=1,C=4,H=8,W=12,M=8,R=3,S=3,P=1", "N=1,C=6,H=10,W=10,M=8,R=3,S=3"]


def test_mac_lanes_speed_up_mac_bound_layers():
    """Two MAC lanes per PE compute two filters of each ifmap value at once: layers the MAC
    slots bind run at least 1.4 times faster, bit-exact, as the performance model predicts."""
    cycles = []
    for config in (TINY, MAC_LANES):
        results = run(config, MAC_BOUND, "verilator", stall=0.0, idle=0.0)
        _check_model(MAC_BOUND, results)
        cycles.append([stats["counters"]["cycles"] for _, stats in results])
    for one, two in zip(*cycles):
        assert two * 1.4 < one, cycles


#: 16-bit operands on a tall narrow array, an odd number of buffer banks, one filter bank.
WIDE = TINY.replace(array_rows=4, array_cols=2, ifmap_width=16, weight_width=16, psum_width=40,
                    filter_spad_depth=32, filter_banks=1, ifmap_spad_depth=9, psum_spad_depth=4,
                    glb_bank_width=64, dram_width=64, glb_banks=5, glb_bank_depth=64)


def test_core_with_16_bit_operands_one_filter_bank_and_five_banks():
    specs = ["N=2,C=3,H=7,W=7,M=4,R=3,S=3,P=1", "N=1,C=4,H=9,W=6,M=6,R=2,S=3,U=2,G=2",
             "N=1,C=2,H=6,W=13,M=2,R=4,S=5,P=1"]
    assert any(_keeps_filters(WIDE, spec) for spec in specs)    # a single bank kept across passes
    run(WIDE, specs, "verilator", stall=0.3, idle=0.2)


#: A batch whose pass does not fit SMALL's buffer: it runs in blocks of images.
BATCH = "N=6,C=2,H=8,W=8,M=3,R=3,S=3,P=1"
#: A layer whose passes each take one output row of several filter blocks on SMALL.
ROWS = "N=1,C=4,H=8,W=8,M=8,R=3,S=3,P=1"


def test_core_on_a_small_array_with_a_small_global_buffer():
    assert map_layer(SMALL, ConvLayer.parse(BATCH)).blocks > 1
    assert map_layer(SMALL, ConvLayer.parse(ROWS)).e_block == 1
    assert any(map_layer(SMALL, ConvLayer.parse(spec)).stationary for spec in LAYERS[1:3] + LAYERS[4:6])
    results = run(SMALL, LAYERS[1:3] + LAYERS[4:6] + [BATCH, ROWS], "verilator", stall=0.2, idle=0.1)
    assert max(stats["epochs"] for _, stats in results) > 1


@pytest.mark.parametrize("config", [TINY, SMALL, MAC_LANES, IFMAP_LANES],
                         ids=["tiny", "two-psum-lanes", "two-mac-lanes", "three-ifmap-lanes"])
def test_core_verilog_is_lint_clean(tmp_path, config):
    verilog = tmp_path / "rowstation_core.v"
    verilog.write_text(core_verilog(config))
    assert lint(verilog, top="rowstation_core") == []


def test_array_verilog_is_lint_clean(tmp_path):
    verilog = tmp_path / "rowstation_array.v"
    verilog.write_text(array_verilog(TINY))
    assert lint(verilog, top="rowstation_array") == []


@pytest.mark.slow
def test_eyeriss_core_runs_layers_bit_exact():
    """The full eyeriss-v1 core (12 x 14 PEs, 108 KB global buffer) in Verilator: a padded
    layer with batch 2 and a grouped strided one, under stalls."""
    eyeriss = preset("eyeriss-v1")
    results = run(eyeriss, ["N=2,C=4,H=14,W=14,M=8,R=3,S=3,P=1", "N=1,C=4,H=15,W=15,M=8,R=5,S=5,U=2,G=2"],
                  "verilator", stall=0.2, idle=0.1)
    assert all(stats["counters"]["passes"] >= 1 for _, stats in results)


@pytest.mark.parametrize("name,value", [("stall", 1.0), ("idle", -0.1)])
def test_stall_probabilities_are_checked(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be a probability in \[0, 1\), not {value}$"):
        run_layers_rtl(TINY, [], sim="icarus", build_root=BUILD, **{name: value})


def test_core_with_16_bit_psums_in_the_global_buffer():
    """Psums held two a word in the global buffer (``glb_psum_width``) and widened again on the
    way to the chains and the store: bit-exact under stalls for layers whose weights keep
    every partial sum in 16 bits."""
    config = TINY.replace(glb_psum_width=16)
    cases, wants = [], []
    for n, spec in enumerate(["N=1,C=8,H=6,W=6,M=4,R=3,S=3,P=1", "N=2,C=12,H=5,W=5,M=4,R=3,S=3"]):
        assert map_layer(config, ConvLayer.parse(spec)).chunks > 1   # psums go through the buffer
        layer = ConvLayer.parse(spec)
        arrays = random_layer_arrays(config, layer, seed=20 + n, zeros=0.2)
        w = np.clip(arrays["weights"], -1, 1)   # 108 terms of at most 128: 15-bit psums
        cases.append(dict(x=arrays["ifmap"], w=w, b=arrays["bias"], stride=layer.U, padding=layer.P,
                          groups=layer.G))
        wants.append(conv2d(arrays["ifmap"], w, arrays["bias"], stride=layer.U, padding=layer.P,
                            groups=layer.G))
    results = run_layers_rtl(config, cases, sim="verilator", build_root=BUILD, stall=0.3)
    for want, (got, _) in zip(wants, results):
        np.testing.assert_array_equal(got, want)
