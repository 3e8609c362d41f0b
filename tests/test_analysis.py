"""Dataflow analysis and sweeps: the built-in networks, the RS figures against the performance
model, the analytic dataflows against loop-nest references, equal area, the survey's
qualitative findings, the report and plots, local and distributed runs, and bad input."""

import json
from itertools import product

import pytest

from rowstation.gen import ConvLayer, preset
from rowstation.gen.config import resolve_config
from rowstation.gen.analysis import analyze, dataflow_names, markdown, plot, run_tasks
from rowstation.gen.cli import main
from rowstation.gen.dataflows import (COSTS, DATAFLOWS, LEVELS, evaluate_layer, output_stationary,
                                      parse_costs, spatial_reduction, storage_bits, storage_budget)
from rowstation.gen.mapper import map_layer
from rowstation.gen.performance import layer_report
from rowstation.gen.program import compile_layer
from rowstation.gen.sweep import Space, load_space, pareto, run_sweep
from rowstation.gen.zoo import NETWORKS, network_layers, onnx_layers

from dataflow_loops import output_stationary_loops, spatial_reduction_loops


TINY = preset("tiny")
SMALL_LAYERS = [ConvLayer.parse(spec) for spec in (
    "N=2,C=4,H=7,W=7,M=6,R=3,S=3,P=1,G=2",
    "N=1,C=3,H=11,W=11,M=4,R=3,S=3,U=2",
    "N=3,C=4,H=6,W=6,M=5,R=1,S=1,U=2",     # stride beyond the filter: rows no window reads
    "N=2,C=6,H=3,W=3,M=7,R=3,S=3",         # fully connected
)]


# Built-in networks: their sizes against the published ones (weights without biases).

@pytest.mark.parametrize("name,conv_macs,total_macs,weights", [
    # Eyeriss: CONV1-5 666 M MACs; 61 M parameters.
    ("alexnet", 665_784_864, 724_406_816, 60_965_224 - 10_568),
    # 15.5 G MACs; 138,357,544 parameters, 13,416 of them biases.
    ("vgg16", 15_346_630_656, 15_470_264_320, 138_357_544 - 13_416),
    # 1.8 G MACs; torchvision's 11,689,512 parameters less 4,800 channels' batch-norm scale and
    # shift and the classifier's 1,000 biases.
    ("resnet18", 1_814_073_344 - 512_000, 1_814_073_344, 11_689_512 - 2 * 4_800 - 1_000),
    # 569 M mult-adds; Keras' 4,231,976 trainable parameters less 10,944 channels' batch-norm
    # scale and shift and the classifier's 1,000 biases.
    ("mobilenet-v1", 568_740_352 - 1_024_000, 568_740_352, 4_231_976 - 2 * 10_944 - 1_000),
])
def test_builtin_networks_have_the_published_sizes(name, conv_macs, total_macs, weights):
    layers = [layer for _, layer in network_layers(name)]
    assert sum(layer.macs for layer in layers if not (layer.R == layer.H and layer.S == layer.W)) == conv_macs
    assert sum(layer.macs for layer in layers) == total_macs
    assert sum(layer.M * (layer.C // layer.G) * layer.R * layer.S for layer in layers) == weights


def test_builtin_networks_chain_and_take_the_batch():
    for name in NETWORKS:
        layers = network_layers(name, 3)
        assert all(layer.N == 3 for _, layer in layers)
        assert len({n for n, _ in layers}) == len(layers)
    alexnet = dict(network_layers("alexnet"))
    assert alexnet["CONV1"].macs == 105_415_200          # the brief's 105.4 M
    assert (alexnet["CONV1"].E, alexnet["CONV2"].E, alexnet["CONV5"].E) == (55, 27, 13)


def test_onnx_layers_follow_the_model():
    from rowstation.sim.digits import MODEL

    layers = onnx_layers(MODEL, 4)
    assert all(layer.N == 4 for _, layer in layers)
    first, last = layers[0][1], layers[-1][1]
    assert (first.C, first.H, first.W) == (1, 8, 8)
    assert last.R == last.H and last.S == last.W and last.M == 10
    for (_, a), (_, b) in zip(layers, layers[1:]):
        assert b.C == a.M   # each layer reads the previous one's channels


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_must_be_positive(bad):
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        network_layers("lenet5", bad)


def test_unknown_network_is_refused():
    with pytest.raises(ValueError, match="unknown network 'resnet50'; built-in networks: alexnet"):
        network_layers("resnet50")


# RS: the mapper's mapping and the performance model.

@pytest.mark.parametrize("layer", SMALL_LAYERS[:2])
def test_rs_figures_are_the_performance_models(layer):
    result = evaluate_layer(TINY, "l", layer, "rs")
    mapping = map_layer(TINY, layer)
    report = layer_report(mapping, compile_layer(mapping, shift=0, check_storage=False))
    assert result["cycles"] == report["cycles"]
    assert result["dram_bytes"] == report["dram_read_bytes"] + report["dram_write_bytes"]
    assert result["accesses"]["glb"] == report["glb_reads"] + report["glb_writes"]
    assert result["accesses"]["rf"] == report["spad_reads"] + report["spad_writes"]
    # Every PE takes its filter block and its ifmap rows and passes its psum rows on (up the
    # chain or, at the top, out); chain bottoms take psums from the buffer but in a first fold.
    pe, rows = mapping.pe_config, mapping.n * layer.F * mapping.p
    expected = 0
    for (_, k), plan in zip(mapping.pass_order(), mapping.plans):
        active = len(plan.assign)
        expected += active * (pe.filter_words + mapping.n * mapping.q * pe.row_length + rows)
        expected += (len(plan.bottoms) if k else 0) * rows
    assert result["accesses"]["noc"] == expected * mapping.blocks


# The analytic dataflows against their loop-nest references, on every mapping of small layers.

LOOPS_CONFIG = TINY.replace(array_rows=2, array_cols=4)


def _compare(model, loops, layer, dataflow, mappings):
    """Check ``model`` against ``loops`` on each mapping (keyword arguments), with the
    dataflow's own buffer and with one that holds little; returns how many fitted."""
    config = LOOPS_CONFIG
    _, glb = storage_budget(config, dataflow)
    operand_bytes = config.memory_width(max(config.ifmap_width, config.weight_width)) // 8
    checked = 0
    for mapping in mappings:
        for bits in (glb, 900 * 8):
            got = model(config, layer, COSTS, dataflow, bits, **mapping)
            expected = loops(config, layer, dataflow, bits, **mapping)
            assert (got is None) == (expected is None), mapping
            if got is None:
                continue
            for key in ("macs", "cycles", "dram_bytes"):
                assert got[key] == expected[key], (key, mapping)
            for level in ("glb", "noc", "rf"):
                assert got["accesses"][level] == expected[level], (level, mapping)
            assert got["accesses"]["dram"] == expected["dram_bytes"] / operand_bytes
            checked += 1
    return checked


@pytest.mark.parametrize("layer", SMALL_LAYERS)
@pytest.mark.parametrize("dataflow", ["ws", "nlr"])
def test_spatial_reduction_counts_equal_the_loop_nest(layer, dataflow):
    K = (layer.C // layer.G) * layer.R * layer.S
    mappings = [dict(tm=tm, tk=tk, nb=nb, eb=eb) for tk, tm, nb, eb in
                product(range(1, min(K, 8) + 1), (1, 2, 3, 6), (1, layer.N), (1, 2, layer.E))
                if tm * tk <= LOOPS_CONFIG.pe_count and layer.N % nb == 0]
    assert _compare(spatial_reduction, spatial_reduction_loops, layer, dataflow, mappings) > 20


@pytest.mark.parametrize("layer", SMALL_LAYERS)
@pytest.mark.parametrize("dataflow", ["os-a", "os-b", "os-c"])
def test_output_stationary_counts_equal_the_loop_nest(layer, dataflow):
    tms = {"os-a": [1], "os-b": [2, 4], "os-c": [2, 4, 8]}[dataflow]
    mappings = [dict(tm=tm, nb=nb, eb=eb, streamed=streamed) for tm, nb, eb, streamed in
                product(tms, (1, layer.N), (1, 2, layer.E), (False, True)) if layer.N % nb == 0]
    assert _compare(output_stationary, output_stationary_loops, layer, dataflow, mappings) > 8


def test_equal_area():
    for config in (TINY, preset("eyeriss-v1")):
        total = storage_bits(config)
        for dataflow in DATAFLOWS:
            rf, glb = storage_budget(config, dataflow)
            assert config.pe_count * rf + glb == total
        assert storage_budget(config, "rs")[1] == config.glb_words * config.glb_bank_width
        assert storage_budget(config, "nlr") == (0, total)


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_energy_is_the_accesses_times_their_costs(dataflow):
    layer = SMALL_LAYERS[0]
    costs = {"dram": 150, "glb": 5, "noc": 3, "rf": 0.5, "alu": 2}
    result = evaluate_layer(TINY, "l", layer, dataflow, costs)
    for level in LEVELS:
        assert result["energy"][level] == pytest.approx(result["accesses"][level] * costs[level])
    assert result["energy"]["alu"] == 2 * layer.macs
    assert result["energy"]["total"] == pytest.approx(sum(v for k, v in result["energy"].items() if k != "total"))
    assert result["dram_over_compulsory"] >= 1
    assert result["utilization"] <= 1
    if dataflow != "rs":   # every MAC takes an ifmap value over the array, and all but WS a weight
        assert result["accesses"]["noc"] >= (layer.macs if dataflow == "ws" else 2 * layer.macs)


def test_survey_findings_on_alexnet_with_256_pes():
    """The survey's AlexNet comparison (256 PEs, equal area): RS needs the least energy on the
    convolutions, NLR the most global buffer energy and the least DRAM traffic, RS the least
    energy in the array and the global buffer. Batch 1 keeps the test short."""
    config = preset("eyeriss-v1").replace(array_rows=16, array_cols=16)
    layers = [(n, l) for n, l in network_layers("alexnet") if n in ("CONV2", "CONV3")]
    report = analyze(config, layers, network="alexnet", batch=1, dataflows=DATAFLOWS, workers=1)
    conv = {d: e["conv"] for d, e in report["dataflows"].items()}
    energy = {d: c["energy"] for d, c in conv.items()}
    assert min(energy, key=lambda d: energy[d]["total"]) == "rs"
    assert max(energy, key=lambda d: energy[d]["glb"]) == "nlr"
    assert conv["nlr"]["accesses"]["dram"] == min(c["accesses"]["dram"] for c in conv.values())
    assert min(energy, key=lambda d: energy[d]["noc"]) == "rs"
    assert report["energy_vs_rs"]["rs"]["conv"] == 1
    for table in (report["energy_vs_rs"], report["on_chip_energy_vs_rs"]):
        assert all(ratio["conv"] > 1 for d, ratio in table.items() if d != "rs")


def test_rs_maps_for_energy_within_a_tolerance():
    """With a cycle tolerance RS takes each layer's least-energy mapping within it (AlexNet
    CONV3: passes of whole runs of a filter block's rows, so less DRAM traffic), its modelled
    cycles within the tolerance of the fastest's; the report says so, and a tolerance outside
    [0, 1) is refused before any layer is costed."""
    config = preset("eyeriss-v1")
    layers = [(n, l) for n, l in network_layers("alexnet") if n == "CONV3"]
    fastest, leanest = (analyze(config, layers, network="alexnet", batch=1, tolerance=t, workers=1)
                        for t in (0.0, 0.05))
    (fast,), (lean,) = fastest["dataflows"]["rs"]["layers"], leanest["dataflows"]["rs"]["layers"]
    assert (fast["mapping"]["aligned"], lean["mapping"]["aligned"]) == (False, True)
    assert fast["cycles"] < lean["cycles"] <= 1.05 * fast["cycles"]
    assert lean["dram_bytes"] < fast["dram_bytes"] and lean["energy"]["total"] < fast["energy"]["total"]
    assert leanest["tolerance"] == 0.05 and "within 5.0% of its fewest cycles" in markdown(leanest)
    with pytest.raises(ValueError, match=r"^tolerance must be a fraction in \[0, 1\), not 1.5$"):
        analyze(config, layers, network="alexnet", batch=1, tolerance=1.5, workers=1)


def test_report_markdown_json_and_plot(tmp_path):
    report = analyze(TINY, network_layers("lenet5"), network="lenet5", batch=1, dataflows=["rs", "ws"], workers=1)
    for dataflow, entry in report["dataflows"].items():
        assert [r["name"] for r in entry["layers"]] == ["C1", "C3", "C5", "F6", "OUTPUT"]
        for r in entry["layers"]:
            assert set(r) >= {"name", "macs", "cycles", "utilization", "accesses", "energy", "weights"}
            assert set(r["accesses"]) == {"dram", "glb", "noc", "rf"}
            assert set(r["energy"]) == {"dram", "glb", "noc", "rf", "alu", "total"}
        total = entry["total"]
        assert total["macs"] == sum(r["macs"] for r in entry["layers"]) == 416_520
        assert total["cycles"] == sum(r["cycles"] for r in entry["layers"])
        assert entry["conv"]["layers"] == 2 and entry["fc"]["layers"] == 3   # C5 covers its whole input
    json.dumps(report)
    text = markdown(report)
    assert "## RS:" in text and "## WS:" in text and "| C3 | C=6,H=14,W=14,M=16,R=5,S=5 |" in text
    assert "## Energy relative to RS" in text
    plot(report, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_dataflow_names_and_costs():
    assert dataflow_names("all") == list(DATAFLOWS)
    assert dataflow_names("os,rs,os-a") == ["os-a", "os-b", "os-c", "rs"]
    with pytest.raises(ValueError, match="unknown dataflow 'xs'"):
        dataflow_names("rs,xs")
    assert parse_costs("dram=100, rf=0.5") == {**COSTS, "dram": 100, "rf": 0.5}
    for text, message in (("sram=3", "sram = 3.0: a cost is a non-negative number for one of dram, glb, noc, rf, alu"),
                          ("glb=x", "cost of glb must be a number, not 'x'"),
                          ("noc=-1", "noc = -1.0: a cost is a non-negative number"),
                          ("dram", "cost item 'dram' is not LEVEL=VALUE")):
        with pytest.raises(ValueError, match=message):
            parse_costs(text)


def test_a_layer_that_fits_no_blocking_names_the_limit():
    layer = ConvLayer.parse("N=1,C=64,H=200,W=200,M=8,R=3,S=3")
    with pytest.raises(ValueError, match=r"layer big .*dataflow ws: no blocking fits its \d+-byte global buffer "
                                         r"\(the smallest, one output row of one image, holds 3 ifmap rows x C = 64"):
        evaluate_layer(TINY, "big", layer, "ws")


# Running: local pool, Dask.

def _square(x):
    return x * x


def test_local_pool_keeps_the_order():
    seen = []
    assert run_tasks(_square, [(i,) for i in range(7)], workers=2, progress=lambda d, t: seen.append((d, t))) \
        == [i * i for i in range(7)]
    assert seen[-1] == (7, 7) and len(seen) == 7
    assert run_tasks(_square, [(3,)], workers=1) == [9]


SPACE = """
preset = "tiny"
networks = ["lenet5"]
[space]
array_rows = [2, 3]
array_cols = [2, 4]
glb_bank_depth = [256, 3]
[budget]
pes = 8
"""


def test_sweep_on_dask_equals_the_local_pool(tmp_path):
    """A LocalCluster runs the same evaluations and gives the same report as the local pool."""
    from dask.distributed import LocalCluster

    (tmp_path / "space.toml").write_text(SPACE)
    space = load_space(tmp_path / "space.toml")
    layers = {"lenet5": network_layers("lenet5")}
    local = run_sweep(space, layers, workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        distributed = run_sweep(space, layers, scheduler=cluster.scheduler_address)
    assert distributed == local
    points = local["points"]
    assert len(points) == 8
    invalid = [p for p in points if p["values"]["glb_bank_depth"] == 3]
    assert len(invalid) == 4 and all("glb_bank_depth must be a power of 2" in p["error"] for p in invalid)
    feasible = [p for p in points if "error" not in p]
    assert {p["pes"] for p in feasible} == {4, 6, 8, 12}
    best = points[local["best"]]
    assert best["pes"] <= 8 and best["within_budget"]
    assert best["throughput"] == max(p["throughput"] for p in feasible if p["pes"] <= 8)
    assert any(p["pareto"] for p in feasible)


def test_a_budget_on_resources_needs_synthesis():
    space = Space(base="tiny", space={"array_rows": [3]}, budget={"luts": 1000})
    with pytest.raises(ValueError, match="the budget limits luts, which only synthesis measures: run with --synth"):
        run_sweep(space, {"lenet5": network_layers("lenet5")}, workers=1)


def test_pareto_front():
    e = [{"point": i, "throughput": t, "energy_per_mac": en, "area": a}
         for i, (t, en, a) in enumerate([(1, 5, 1), (2, 5, 2), (2, 6, 2), (3, 4, 3), (1, 5, 2), (3, 4, 3)])]
    assert pareto(e, "area") == {0, 1, 3, 5}


def test_sweep_marks_points_whose_layers_cannot_be_mapped():
    space = Space(base="tiny", space={"glb_banks": [1, 4]}, networks=["lenet5"])
    report = run_sweep(space, {"big": [("wide", ConvLayer.parse("N=1,C=16,H=60,W=60,M=16,R=3,S=3"))]}, workers=1)
    small, large = report["points"]
    assert small["error"].startswith("layer big/wide (N=1,C=16,H=60,W=60,M=16,R=3,S=3,U=1,P=0,G=1), dataflow rs: "
                                     "no mapping of") and "fits the global buffer" in small["error"]
    assert "error" not in large and report["best"] == 1


@pytest.mark.parametrize("text,message", [
    ("[space]\nfoo = [1]\n", "unknown configuration key 'foo' in \\[space\\]"),
    ("[space]\narray_rows = 3\n", "array_rows must be a non-empty list of integers"),
    ("[space]\narray_rows = []\n", "array_rows must be a non-empty list of integers"),
    ("networks = ['alexnet2']\n[space]\narray_rows = [3]\n", "unknown network 'alexnet2'"),
    ("[space]\narray_rows = [3]\n[budget]\nwatts = 3\n", "budget.watts = 3: a budget limits pes"),
    ("costs = {dram = -2}\n[space]\narray_rows = [3]\n", "costs.dram = -2"),
    ("batch = 0\n[space]\narray_rows = [3]\n", "batch must be a positive integer"),
    ("presets = 'tiny'\n[space]\narray_rows = [3]\n", "unknown entries presets"),
    ("preset = 'big'\n[space]\narray_rows = [3]\n", "unknown preset 'big'"),
    ("array_rows = [3\n", "is not valid TOML"),
    ("preset = 'tiny'\n", "\\[space\\] must name at least one configuration key"),
    ("tolerance = 1.5\n[space]\narray_rows = [3]\n", "tolerance must be a fraction in \\[0, 1\\), not 1.5"),
    ("tolerance = 'x'\n[space]\narray_rows = [3]\n", "tolerance must be a fraction in \\[0, 1\\), not 'x'"),
])
def test_bad_spaces_are_refused(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_space(path)


# The command line.

def test_analyze_command(tmp_path, capsys):
    from rowstation.sim.digits import MODEL

    out = tmp_path / "a.json"
    assert main(["analyze", "--preset", "tiny", "--onnx", str(MODEL), "--batch", "2", "--dataflow", "rs,nlr",
                 "--json", str(out), "--plot", str(tmp_path / "a.png"), "--workers", "1",
                 "--costs", "dram=100", "--tolerance", "0.02"]) == 0
    report = json.loads(out.read_text())
    assert report["batch"] == 2 and report["costs"]["dram"] == 100 and list(report["dataflows"]) == ["rs", "nlr"]
    assert report["tolerance"] == 0.02
    assert "## NLR" in capsys.readouterr().out
    assert (tmp_path / "a.png").exists()


@pytest.mark.parametrize("args,message", [
    (["--network", "lenet5", "--dataflow", "ss"], "unknown dataflow 'ss'"),
    (["--network", "lenet5", "--batch", "0"], "batch must be a positive integer, not 0"),
    (["--network", "lenet5", "--costs", "dram=x"], "cost of dram must be a number"),
    (["--network", "lenet5", "--workers", "0"], "--workers must be at least 1, not 0"),
    (["--network", "lenet5", "--tolerance", "-0.1"], "tolerance must be a fraction in [0, 1), not -0.1"),
    (["--onnx", "missing.onnx"], "missing.onnx does not exist"),
])
def test_analyze_command_errors(args, message, capsys):
    assert main(["analyze", "--preset", "tiny", *args]) == 2
    assert message in capsys.readouterr().err


def test_sweep_command(tmp_path, capsys):
    (tmp_path / "space.toml").write_text("tolerance = 0.02\n" + SPACE)
    assert main(["sweep", "--space", str(tmp_path / "space.toml"), "--workers", "1", "-o", str(tmp_path / "out")]) == 0
    assert "Best within the budget: point" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert len(report["points"]) == 8 and report["area"] == "storage_kib" and report["tolerance"] == 0.02
    assert (tmp_path / "out" / "pareto.png").exists() and (tmp_path / "out" / "sweep.md").exists()
    # The best point's configuration builds: every key, read back by --config.
    best = report["points"][report["best"]]
    assert resolve_config(config_file=tmp_path / "out" / "best.toml") == preset("tiny").replace(**best["values"])
    assert main(["sweep", "--space", str(tmp_path / "space.toml"), "--onnx", "lenet5.onnx", "-o", str(tmp_path / "o3")]) == 2
    assert "--onnx lenet5.onnx: a network named 'lenet5' is already in the sweep" in capsys.readouterr().err
    (tmp_path / "empty.toml").write_text("[space]\narray_rows = [3]\n")
    assert main(["sweep", "--space", str(tmp_path / "empty.toml"), "-o", str(tmp_path / "o2")]) == 2
    assert "no network" in capsys.readouterr().err


def _fails_on_three(x):
    if x == 3:
        raise ValueError("three is refused")
    return x


def test_the_first_error_stops_the_run():
    with pytest.raises(ValueError, match="three is refused"):
        run_tasks(_fails_on_three, [(i,) for i in range(6)], workers=2)


def test_an_unreachable_scheduler_is_one_line(capsys):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["analyze", "--preset", "tiny", "--network", "lenet5", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "Timed out trying to connect to tcp://127.0.0.1:9" in capsys.readouterr().err


def test_sweep_synthesizes_each_point_for_ice40(tmp_path, capsys):
    """``--synth ice40``: each valid point's accelerator through yosys (about a minute): one
    SB_MAC16 per PE, LUTs as the area, a budget on them applied."""
    (tmp_path / "space.toml").write_text("preset = 'tiny'\nnetworks = ['lenet5']\n[space]\narray_rows = [1]\n"
                                         "array_cols = [2]\nglb_bank_depth = [3, 256]\n[budget]\nluts = 1000\n")
    assert main(["sweep", "--space", str(tmp_path / "space.toml"), "--synth", "ice40", "--workers", "2",
                 "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "sweep.json").read_text())
    invalid, point = report["points"]
    assert "invalid configuration" in invalid["error"] and "luts" not in invalid
    assert report["area"] == "luts" and report["synthesized"] == "ice40"
    assert point["dsps"] == 2 and point["brams"] >= 4 and point["luts"] > 1000
    assert not point["within_budget"] and report["best"] is None
    assert "Area: LUTs (ice40, yosys)" in capsys.readouterr().out
