"""The ``rowstation`` command line.

Every command that builds or runs hardware takes the configuration as ``--preset NAME``, an
optional ``--config FILE.toml`` and ``--set key=value`` overrides, in that order of precedence.
Bad input ends with a one-line error and exit status 2.
"""

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from ..boards.toolchain import FAMILIES
from .config import PRESETS, c_header, resolve_config
from .isa import WORD_WIDTH
from .layer import ConvLayer
from .network import load_npy
from .zoo import NETWORKS


SIMULATORS = ("golden", "icarus", "verilator")


def _config_parser():
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("configuration")
    group.add_argument("--preset", choices=sorted(PRESETS), help="base configuration (default: eyeriss-v1)")
    group.add_argument("--config", metavar="FILE", help="TOML file of configuration keys")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override one configuration key (repeatable)")
    return parser


def _config(args):
    return resolve_config(args.preset, args.config, args.overrides)


def versions():
    """Versions of the tools a run used, for its report."""
    found = {"python": platform.python_version()}
    for package in ("rowstation", "amaranth", "numpy", "cocotb", "verilator"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def cmd_presets(args):
    header = f"{'preset':<12} {'array':>7} {'MACs':>5} {'ifmap/weight/psum':>18} {'spads f/i/p':>12} {'GLB':>10}"
    print(header)
    for name, config in PRESETS.items():
        widths = f"{config.ifmap_width}/{config.weight_width}/{config.psum_width} b"
        spads = f"{config.filter_spad_depth}/{config.ifmap_spad_depth}/{config.psum_spad_depth}"
        print(f"{name:<12} {config.array_rows:>3}x{config.array_cols:<3} {config.peak_macs:>5} {widths:>18} "
              f"{spads:>12} {config.glb_bytes / 1024:>6g} KiB")


def write_rtl(config, out):
    """Write the accelerator's Verilog, its C header, register map and configuration into
    ``out``; return the paths."""
    from ..hw.export import accelerator_verilog, core_verilog, to_verilog
    from ..hw.pe import PE
    from .csr import ControlRegisters
    from . import descriptor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "rowstation_accel.v": accelerator_verilog(config),
        "rowstation_core.v": core_verilog(config),
        "rowstation_pe.v": to_verilog(PE(config, counters=True), name="rowstation_pe"),
        "rowstation_config.h": c_header(config),
        "registers.md": "# rowstation_accel: control registers\n\n" + ControlRegisters(config).markdown()
                        + "\n\n# Layer descriptors\n\n" + descriptor.markdown() + "\n",
        "config.json": config.to_json(),
    }
    for name, text in files.items():
        (out / name).write_text(text)
    return [out / name for name in files]


def cmd_generate(args):
    for path in write_rtl(_config(args), args.output):
        print(path)


def cmd_random_layer(args):
    from ..sim.stimulus import random_layer_arrays
    import numpy as np

    config = _config(args)
    layer = ConvLayer.parse(args.layer)
    arrays = random_layer_arrays(config, layer, seed=args.seed, zeros=args.zeros,
                                 bias=not args.no_bias)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(out / f"{name}.npy", array)
        print(out / f"{name}.npy", array.shape)
    (out / "layer.json").write_text(json.dumps(layer.to_dict(), indent=2) + "\n")


def check_equal(result, golden, what):
    """A RuntimeError naming the first element where ``result`` differs from the golden model's."""
    import numpy as np

    if not np.array_equal(result, golden):
        index = tuple(int(i) for i in np.argwhere(result != golden)[0])
        raise RuntimeError(f"{what} {result[index]} differs from the golden model's {golden[index]} at {index}")


def measured_report(config, layer, counts, predicted, *, runs=1):
    """The report keys of a layer run ``runs`` times on the RTL, from its counters (summed over
    the runs) and the model's prediction (of one run)."""
    word = config.dram_width // 8
    return {
        "cycles": counts["cycles"],
        "pe_utilization": layer.macs * runs / (config.peak_macs * counts["cycles"]),
        "passes": counts["passes"],
        "dram_read_bytes": counts["dram_reads"] * word,
        "dram_write_bytes": counts["dram_writes"] * word,
        "dram_compulsory_bytes": predicted["dram_compulsory_bytes"] * runs,
        "program_bytes": counts["program_words"] * WORD_WIDTH // 8,
        **{name: counts[name] for name in ("glb_reads", "glb_writes", "filt_transfers",
                                           "ifmap_transfers", "psum_transfers", "opsum_transfers")},
        "spad_reads": sum(counts[f"{spad}_read"] for spad in ("filter", "ifmap", "psum")),
        "spad_writes": sum(counts[f"{spad}_write"] for spad in ("filter", "ifmap", "psum")),
        "binding": predicted["binding"],
        "active_pe_cycles": counts["active_pe"],
        "predicted": predicted,
        "counters": counts,
    }


def cmd_run_layer(args):
    import numpy as np
    from ..sim.golden import as_int_array, requantize, run_layer

    config = _config(args)
    x = load_npy("ifmap", args.ifmap)
    w = load_npy("weights", args.weights)
    b = None if args.bias is None else load_npy("bias", args.bias)
    # The golden model validates the layer (shapes, ranges, exact accumulation) in every case.
    acc, layer = run_layer(config, x, w, b, stride=args.stride, padding=args.padding,
                           groups=args.groups, shift=args.shift, relu=args.relu, raw=True)
    report = {"sim": args.sim, "layer": layer.to_dict(), "ofmap_shape": list(acc.shape),
              "macs": layer.macs}
    y = acc if args.raw else requantize(acc, shift=args.shift, relu=args.relu, width=config.ifmap_width)
    if args.sim != "golden":
        from ..sim.rtl import run_layers_rtl

        ints = [as_int_array(name, a) if a is not None else None
                for name, a in (("ifmap", x), ("weights", w), ("bias", b))]
        post = {} if args.raw else {"shift": args.shift, "relu": args.relu}
        [(rtl, stats)] = run_layers_rtl(config, [dict(x=ints[0], w=ints[1], b=ints[2], stride=args.stride,
                                                      padding=args.padding, groups=args.groups,
                                                      tolerance=args.tolerance, **post)],
                                        sim=args.sim, build_root=args.build_dir)
        check_equal(rtl, y, "RTL result")
        report.update(measured_report(config, layer, stats["counters"], stats["predicted"]),
                      epochs=stats["epochs"], tiles=stats["tiles"], matches_golden=True)
    np.save(args.output, y)
    report.update({"requantization": None if args.raw else {"shift": args.shift, "relu": args.relu,
                                                             "where": "golden model" if args.sim == "golden" else "core"},
                   "config": config.to_dict(), "versions": versions()})
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    cycles = f", {report['cycles']} cycles" if "cycles" in report else ""
    print(f"{args.output}: {layer} -> {tuple(y.shape)}, {layer.macs} MACs{cycles} ({args.sim})")


def progress_printer(what):
    """A ``progress(done, total)`` callback that shows a bar on a terminal, else a line about
    every tenth of the way."""
    def progress(done, total):
        bar = "#" * (30 * done // total)
        if sys.stderr.isatty():
            print(f"\r  {what} [{bar:<30}] {done}/{total}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)
        elif done == total or 10 * done // total != 10 * (done - 1) // total:   # about every tenth
            print(f"  {what}: {done}/{total}", file=sys.stderr, flush=True)
    return progress


def network_inputs(config, network, path):
    """The integer inputs of ``path`` for ``network``: integers as they are, floats quantised
    at the network's input scale (a compiled ONNX model's), any batch."""
    import numpy as np
    from .network import load_inputs
    from .quantize import quantize_input

    x = load_inputs("input", path, network.input_shape)
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.int64)
    if network.quantization is None:
        raise ValueError(f"input file {path} holds {x.dtype} values and the network has no input scale; "
                         f"give integers, or compile the model with 'rowstation compile'")
    frac = network.quantization["input_frac"]
    q, saturated = quantize_input(x, frac, config.ifmap_width)
    if saturated:
        print(f"rowstation: note: {saturated} input values beyond the {config.ifmap_width}-bit range at "
              f"scale 2**-{frac} saturated", file=sys.stderr)
    return q


def shaped_output(network, y):
    """``y`` as (count, features) where the compiled model's output is flat, else as it is."""
    flat = network.quantization is not None and network.quantization.get("flat_output")
    return y.reshape(len(y), -1) if flat else y


def cmd_run_net(args):
    import numpy as np
    from .network import Network, compile_network
    from .performance import layer_report
    from .quantize import dequantize
    from ..sim.network import batches, run_network_golden_batches, run_network_rtl

    config = _config(args)
    network = Network.load(args.network)
    x = network_inputs(config, network, args.input)
    compiled = compile_network(config, network)
    chunks, _ = batches(x, network.input_shape[0])
    for chunk in chunks:
        compiled.input_bytes(chunk)     # every input's range, before any simulation
    runs = len(chunks)
    y = run_network_golden_batches(config, network, x)
    layers = [{"name": layer.spec.name, "type": layer.spec.kind, "layer": layer.layer.to_dict(),
               "macs": layer.layer.macs * runs, "runs": runs,
               "predicted": layer_report(layer.mapping, layer.program, fetched=True) if layer.spec.computes
               else layer.layer.report(config)} for layer in compiled.layers]
    if args.sim != "golden":
        rtl, counters = run_network_rtl(compiled, x, sim=args.sim, build_root=args.build_dir,
                                        progress=progress_printer(f"{args.sim}, batches of {network.input_shape[0]}"))
        check_equal(rtl, y, "RTL result")
        for entry, layer, counts in zip(layers, compiled.layers, counters):
            if layer.spec.computes:
                entry.update(measured_report(config, layer.layer, counts, entry["predicted"], runs=runs))
            else:   # the pooler's traffic is not counted (its words are exact in the prediction)
                entry.update(cycles=counts["cycles"], pe_utilization=0.0, counters=counts,
                             dram_read_bytes=entry["predicted"]["dram_read_bytes"] * runs,
                             dram_write_bytes=entry["predicted"]["dram_write_bytes"] * runs)
    key = "cycles" if args.sim != "golden" else None
    cycles = sum(entry[key] for entry in layers) if key else runs * sum(e["predicted"]["cycles"] for e in layers)
    macs = sum(entry["macs"] for entry in layers)
    total = {"cycles": cycles, "macs": macs, "pe_utilization": macs / (config.peak_macs * cycles), "runs": runs,
             "inputs": len(x), "measured": key is not None}
    if key:
        for name in ("dram_read_bytes", "dram_write_bytes", "glb_reads", "glb_writes", "spad_reads",
                     "spad_writes"):
            total[name] = sum(entry.get(name, 0) for entry in layers)
    q = network.quantization
    if args.dequantize:
        if q is None:
            raise ValueError("--dequantize needs a network with scales (compiled by 'rowstation compile')")
        y = dequantize(y, q["output_frac"])
    y = shaped_output(network, y)
    np.save(args.output, y)
    if args.report:
        Path(args.report).write_text(json.dumps({"sim": args.sim, "network": network.name, "layers": layers,
                                                 "total": total, "config": config.to_dict(),
                                                 "versions": versions()}, indent=2) + "\n")
    for entry in layers:
        where = entry.get("cycles", runs * entry["predicted"]["cycles"])
        print(f"  {entry['name']:<12} {entry['macs']:>12,} MACs {where:>12,} cycles")
    print(f"{args.output}: {network.name} on {len(x)} inputs ({runs} runs of batch {network.input_shape[0]}) -> "
          f"{tuple(y.shape)}, {macs:,} MACs, {cycles:,} cycles {'measured' if key else 'predicted'} "
          f"({total['pe_utilization']:.1%} of peak, {args.sim})")


def cmd_compile(args):
    from .frontend import read_onnx
    from .model import compile_model
    from .network import load_inputs

    config = _config(args)
    network = read_onnx(args.model, batch=args.batch)
    calibration = load_inputs("calibration", args.calibrate, network.input_shape).astype(float)
    summary = compile_model(args.model, config, calibration, args.output, batch=args.batch,
                            percentile=args.percentile, network=network)
    print((Path(args.output) / "summary.md").read_text())
    print(f"{args.output}: network.json, summary.md, mappings/, programs/, image.bin "
          f"({summary['total']['cycles']:,} cycles predicted per batch of {args.batch})")


def cmd_map(args):
    from .mapper import map_layer
    from .performance import layer_report
    from .program import compile_layer

    config = _config(args)
    mapping = map_layer(config, ConvLayer.parse(args.layer), tolerance=args.tolerance)
    report = layer_report(mapping, compile_layer(mapping, shift=None if args.raw else 0, check_storage=False))
    if args.json:
        L, a = mapping.layer, mapping.allocation
        print(json.dumps({"layer": L.to_dict(), "E": L.E, "F": L.F, **report,
                          "pe": {"p": mapping.p, "q": mapping.q, "s": mapping.seg,
                                 "u": mapping.pe_stride, "f": L.F, "rows": L.N},
                          "chain": mapping.chain, "folds": mapping.chunks,
                          "e_block": mapping.e_block or L.E, "aligned": mapping.aligned,
                          "stationary": mapping.stationary,
                          "chains_per_pass": mapping.chains_per_pass,
                          "glb_words": mapping.glb_words,
                          "allocation": {"ifmap_buffers": a.ifmap_buffers, "psum_buffers": a.psum_buffers,
                                         "ifmap_words": a.ifmap_words, "psum_words": a.psum_words,
                                         "tile_groups": a.tile_groups}}, indent=2))
    else:
        print(mapping.describe())
        print(f"model      {report['cycles']} cycles, PE utilization {report['pe_utilization']:.1%}, "
              f"bound by {report['binding']}; {report['epochs']} epochs, {report['tiles']} tiles; "
              f"DRAM {report['dram_read_bytes'] + report['dram_write_bytes']} bytes "
              f"({(report['dram_read_bytes'] + report['dram_write_bytes']) / report['dram_compulsory_bytes']:.2f}x "
              f"compulsory)")


def _parallel(args):
    """The --workers and --scheduler options as run_tasks' keywords."""
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, not {args.workers}")
    return {"workers": args.workers, "scheduler": args.scheduler}


def cmd_analyze(args):
    from .analysis import analyze, dataflow_names, markdown, plot
    from .dataflows import parse_costs
    from .zoo import network_layers, onnx_layers

    config = _config(args)
    dataflows = dataflow_names(args.dataflow)
    costs = parse_costs(args.costs or "")
    if args.onnx:
        layers, network = onnx_layers(args.onnx, args.batch), Path(args.onnx).stem
    else:
        layers, network = network_layers(args.network, args.batch), args.network
    report = analyze(config, layers, network=network, batch=args.batch, dataflows=dataflows, costs=costs,
                     tolerance=args.tolerance,
                     progress=progress_printer(f"{network}: {len(dataflows)} dataflow(s) x {len(layers)} layers"),
                     **_parallel(args))
    print(markdown(report), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(report, args.plot)
    for path in filter(None, (args.json, args.plot)):
        print(f"wrote {path}", file=sys.stderr)


def cmd_sweep(args):
    from .sweep import load_space, markdown, run_sweep, write_report
    from .zoo import network_layers, onnx_layers

    space = load_space(args.space)
    batch = args.batch or space.batch
    layers = {name: network_layers(name, batch) for name in dict.fromkeys([*space.networks, *args.network])}
    for path in args.onnx:
        if Path(path).stem in layers:
            raise ValueError(f"--onnx {path}: a network named {Path(path).stem!r} is already in the sweep")
        layers[Path(path).stem] = onnx_layers(path, batch)
    if not layers:
        raise ValueError(f"no network: name one in {args.space} (networks = [...]) or with --network/--onnx")
    report = run_sweep(space, layers, synth=args.synth, build=Path(args.output) / "synth",
                       progress=progress_printer(f"{len(space)} points x {sum(map(len, layers.values()))} layers"
                                                 + (" + synthesis" if args.synth else "")),
                       **_parallel(args))
    paths = write_report(report, args.output)
    print(markdown(report), end="")
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)


def cmd_bench(args):
    from ..sim.bench import run_bench

    run_bench(quick=args.quick, output=args.output, build=args.build_dir)


def cmd_build(args):
    from ..boards.build import BOARDS, build_board

    if args.board not in BOARDS:
        raise ValueError(f"unknown board {args.board!r}; boards: {', '.join(BOARDS)}")
    config = resolve_config(args.preset or BOARDS[args.board].preset, args.config, args.overrides)
    report = build_board(args.board, config, args.output, clock_mhz=args.clock)
    print((Path(args.output) / "report.md").read_text())
    if not report["timing_met"]:
        print(f"rowstation build: warning: timing NOT met: Fmax {report['fmax_mhz']:.1f} MHz is below the "
              f"{report['clock_mhz']:g} MHz run clock", file=sys.stderr)
    print(f"{report['bitstream']} ({report['seconds']:.0f} s; report.json, tool logs in {args.output})")


def _one_layer_network(args):
    """The network of one layer from a ``random-layer`` directory and the requantisation options."""
    import numpy as np
    from .network import LayerSpec, Network

    directory = Path(args.layer)
    if not (directory / "layer.json").exists():
        raise ValueError(f"{directory} has no layer.json (write one with 'rowstation random-layer')")
    shape = json.loads((directory / "layer.json").read_text())
    bias = directory / "bias.npy"
    spec = LayerSpec("layer", "conv", weights=load_npy("weights", directory / "weights.npy"),
                     bias=load_npy("bias", bias) if bias.exists() else None, stride=shape.get("U", 1),
                     padding=shape.get("P", 0), groups=shape.get("G", 1), shift=args.shift, relu=args.relu)
    x = load_npy("ifmap", directory / "ifmap.npy")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"ifmap file {directory / 'ifmap.npy'} holds {x.dtype} values, not integers")
    return Network("layer", tuple(x.shape), [spec]), x.astype(np.int64)


def cmd_board_run(args):
    import asyncio
    import numpy as np
    from ..boards.build import BOARDS
    from .bridge import BridgeTransport, SerialLink
    from .driver import Driver, summed
    from .network import Network, compile_network
    from ..sim.network import batches, run_network_golden_batches, run_network_rtl

    if args.board not in BOARDS:
        raise ValueError(f"unknown board {args.board!r}; boards: {', '.join(BOARDS)}")
    board = BOARDS[args.board]
    config = resolve_config(args.preset or board.preset, args.config, args.overrides)
    if args.net:
        network = Network.load(args.net)
        if args.input is None:
            raise ValueError("--net needs --input X.npy")
        x = network_inputs(config, network, args.input)
    else:
        network, x = _one_layer_network(args)
    compiled = compile_network(config, network)
    compiled.check_fits(board.memory_bytes)
    golden = run_network_golden_batches(config, network, x)
    progress = progress_printer(f"{args.board}, batches of {network.input_shape[0]}")
    if args.sim:
        y, layers = run_network_rtl(compiled, x, sim=args.sim, progress=progress, build_root=args.build_dir,
                                    board={"memory_bytes": board.memory_bytes, "divisor": args.divisor})
    else:
        if args.port is None:
            raise ValueError("give --port (the board's serial port) or --sim")
        chunks, count = batches(x, network.input_shape[0])
        link = SerialLink(args.port, board.baud)
        driver = Driver(BridgeTransport(link, timeout=2.0), config)
        jobs = [compiled.job(chunk) for chunk in chunks]
        try:
            runs = asyncio.run(driver.run_inputs(jobs[0], [job.input[1] for job in jobs], poll=1,
                                                 done=lambda i, output, counters: progress(i + 1, len(jobs))))
        finally:
            link.close()
        y = np.concatenate([compiled.output_array(output) for output, _ in runs])[:count]
        layers = summed([counters for _, counters in runs])
    check_equal(y, golden, "the board's result")
    np.save(args.output, shaped_output(network, y))
    for layer, counts in zip(compiled.layers, layers):
        print(f"  {layer.spec.name:<12} {counts['cycles']:>12,} cycles")
    total = sum(counts["cycles"] for counts in layers)
    print(f"{args.output}: {network.name} on {len(x)} inputs -> {tuple(y.shape)}, equal to the golden model; "
          f"{total:,} cycles ({args.board}{', simulated' if args.sim else ''})")


def cmd_demo(args):
    from ..sim.demo import run_demo

    run_demo(args.output, config_name=args.preset, images=args.images, batch=args.batch, sim=args.sim,
             build_root=args.build_dir, synth=args.synth, plot=args.plot,
             progress=progress_printer(f"{args.sim}, batches of {args.batch}"))


def _layer_argument(parser):
    parser.add_argument("--layer", required=True, metavar="SPEC",
                        help='e.g. "N=1,C=3,H=227,W=227,M=96,R=11,S=11,U=4,P=0" (U, P, G optional)')


def _parallel_arguments(parser):
    group = parser.add_argument_group("parallelism")
    group.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per CPU)")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://scheduler-host:8786)")


def _tolerance_argument(sub):
    sub.add_argument("--tolerance", type=float, default=0.0, metavar="FRACTION",
                     help="map for the least energy among mappings within this fraction of the fewest "
                          "cycles (default 0: the fewest cycles)")


def build_parser():
    parser = argparse.ArgumentParser(prog="rowstation", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _config_parser()

    sub = commands.add_parser("presets", help="list the configuration presets")
    sub.set_defaults(run=cmd_presets)

    sub = commands.add_parser("generate", parents=[common],
                              help="write Verilog, config.json and a C header")
    sub.add_argument("-o", "--output", required=True, metavar="DIR")
    sub.set_defaults(run=cmd_generate)

    sub = commands.add_parser("random-layer", parents=[common],
                              help="write random in-range ifmap/weights/bias .npy files for a layer")
    _layer_argument(sub)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--zeros", type=float, default=0.0, metavar="FRACTION",
                     help="fraction of ifmap values forced to zero (as after ReLU)")
    sub.add_argument("--no-bias", action="store_true")
    sub.add_argument("-o", "--output", required=True, metavar="DIR")
    sub.set_defaults(run=cmd_random_layer)

    sub = commands.add_parser("map", parents=[common],
                              help="print the mapping of a layer and its predicted cycles")
    _layer_argument(sub)
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_argument("--raw", action="store_true",
                     help="the output is the exact accumulation, not requantised to the activation width")
    _tolerance_argument(sub)
    sub.set_defaults(run=cmd_map)

    sub = commands.add_parser("run-net", parents=[common],
                              help="run a network directory on the golden model or the simulated accelerator")
    sub.add_argument("network", metavar="DIR", help="a directory with network.json and its .npy files")
    sub.add_argument("--sim", choices=SIMULATORS, default="golden")
    sub.add_argument("--input", required=True, metavar="X.npy",
                     help="inputs (any batch, C, H, W): integers, or floats for a compiled model (quantised "
                          "at its input scale)")
    sub.add_argument("-o", "--output", required=True, metavar="Y.npy")
    sub.add_argument("--dequantize", action="store_true",
                     help="write floats (the outputs times the network's output scale)")
    sub.add_argument("--report", metavar="R.json", help="per-layer and total cycles, utilisation, traffic")
    sub.add_argument("--build-dir", default="build/rtl", metavar="DIR",
                     help="where simulator builds are kept and reused")
    sub.set_defaults(run=cmd_run_net)

    sub = commands.add_parser("compile", parents=[common],
                              help="compile a float ONNX CNN: quantise, map, write a network directory")
    sub.add_argument("model", metavar="MODEL.onnx")
    sub.add_argument("--calibrate", required=True, metavar="DATA.npy",
                     help="float inputs (any batch) that choose the activation scales")
    sub.add_argument("--batch", type=int, default=1, metavar="N", help="the compiled batch (default 1)")
    sub.add_argument("--percentile", type=float, default=100.0, metavar="P",
                     help="activation scales cover this percentile of magnitudes (default 100: the largest)")
    sub.add_argument("-o", "--output", required=True, metavar="DIR")
    sub.set_defaults(run=cmd_compile)

    sub = commands.add_parser("run-layer", parents=[common], help="run one convolution layer")
    sub.add_argument("--sim", choices=SIMULATORS, default="golden")
    sub.add_argument("--ifmap", required=True, metavar="X.npy", help="integer array (N, C, H, W)")
    sub.add_argument("--weights", required=True, metavar="W.npy", help="integer array (M, C/G, R, S)")
    sub.add_argument("--bias", metavar="B.npy", help="integer array (M,)")
    sub.add_argument("--stride", type=int, default=1, metavar="U")
    sub.add_argument("--padding", type=int, default=0, metavar="P")
    sub.add_argument("--groups", type=int, default=1, metavar="G")
    sub.add_argument("--shift", type=int, default=0, metavar="K",
                     help="requantisation right shift (round half up)")
    sub.add_argument("--relu", action="store_true")
    sub.add_argument("--raw", action="store_true", help="write the exact accumulation")
    _tolerance_argument(sub)
    sub.add_argument("-o", "--output", required=True, metavar="Y.npy")
    sub.add_argument("--report", metavar="R.json")
    sub.add_argument("--build-dir", default="build/rtl", metavar="DIR",
                     help="simulator builds, one per configuration (default: build/rtl)")
    sub.set_defaults(run=cmd_run_layer)

    sub = commands.add_parser("demo", help="classify held-out handwritten digits with the committed CNN "
                                           "on the simulated accelerator (what `make demo` runs)")
    sub.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    sub.add_argument("--images", type=int, default=300, metavar="N", help="held-out images on the RTL (default 300)")
    sub.add_argument("--batch", type=int, default=8, metavar="N", help="the compiled batch (default 8)")
    sub.add_argument("--sim", choices=SIMULATORS[1:], default="verilator")
    sub.add_argument("--synth", action="store_true",
                     help="add each precision's ECP5 resources (yosys) to the precision table")
    sub.add_argument("--plot", metavar="FILE.png", help="the precision plot (default: OUTPUT/precision.png)")
    sub.add_argument("-o", "--output", default="build/demo", metavar="DIR")
    sub.add_argument("--build-dir", default="build/rtl", metavar="DIR",
                     help="simulator builds, one per configuration (default: build/rtl)")
    sub.set_defaults(run=cmd_demo)

    sub = commands.add_parser("build", parents=[common],
                              help="build a board's bitstream (YoWASP yosys + nextpnr) with a resource and Fmax report")
    sub.add_argument("--board", required=True, metavar="NAME", help="icebreaker, ulx3s-12f, -25f, -45f or -85f")
    sub.add_argument("--clock", type=float, metavar="MHZ",
                     help="run clock, made by the PLL on ECP5 boards (default: the board's; see docs/boards.md)")
    sub.add_argument("-o", "--output", required=True, metavar="DIR")
    sub.set_defaults(run=cmd_build)

    sub = commands.add_parser("board", help="run networks on a board through its UART host bridge")
    board = sub.add_subparsers(dest="board_command", required=True, metavar="COMMAND")
    sub = board.add_parser("run", parents=[common], help="load a network or a layer, run it, read results and counters")
    sub.add_argument("--board", required=True, metavar="NAME")
    sub.add_argument("--port", metavar="DEVICE", help="the board's serial port, e.g. /dev/ttyUSB0")
    sub.add_argument("--sim", choices=SIMULATORS[1:],
                     help="drive the simulated board top instead (cocotb, a UART model, the same host code)")
    sub.add_argument("--divisor", type=int, default=4, metavar="N",
                     help="with --sim: clock cycles per UART bit (default 4, for speed)")
    what = sub.add_mutually_exclusive_group(required=True)
    what.add_argument("--net", metavar="DIR", help="a network directory (compile or hand-written)")
    what.add_argument("--layer", metavar="DIR", help="a random-layer directory (ifmap, weights, bias, layer.json)")
    sub.add_argument("--input", metavar="X.npy", help="with --net: the inputs")
    sub.add_argument("--shift", type=int, default=0, metavar="K", help="with --layer: requantisation shift")
    sub.add_argument("--relu", action="store_true", help="with --layer: ReLU")
    sub.add_argument("-o", "--output", required=True, metavar="Y.npy")
    sub.add_argument("--build-dir", default="build/rtl", metavar="DIR")
    sub.set_defaults(run=cmd_board_run)

    sub = commands.add_parser("analyze", parents=[common],
                              help="per-layer cycles, accesses and energy of a network under RS and the "
                                   "survey's other dataflows (WS, OS, NLR) on equal area")
    what = sub.add_mutually_exclusive_group(required=True)
    what.add_argument("--network", choices=sorted(NETWORKS), help="a built-in network's layer shapes")
    what.add_argument("--onnx", metavar="FILE", help="the layer shapes of an ONNX model")
    sub.add_argument("--batch", type=int, default=1, metavar="N", help="images per batch (default 1)")
    sub.add_argument("--dataflow", default="rs", metavar="NAMES",
                     help="rs, ws, os (variants os-a, os-b, os-c), nlr, all, or a comma-separated list (default rs)")
    sub.add_argument("--costs", metavar="LEVEL=VALUE,...",
                     help="energy per access relative to a MAC (default dram=200,glb=6,noc=2,rf=1,alu=1)")
    sub.add_argument("--json", metavar="FILE", help="write the report as JSON")
    sub.add_argument("--plot", metavar="FILE.png", help="energy by level and utilisation per layer")
    _tolerance_argument(sub)
    _parallel_arguments(sub)
    sub.set_defaults(run=cmd_analyze)

    sub = commands.add_parser("sweep", help="evaluate every configuration of a design space on networks "
                                            "(model, optionally yosys) with the Pareto front")
    sub.add_argument("--space", required=True, metavar="SPACE.toml", help="base preset, keys and values, budget")
    sub.add_argument("--network", action="append", default=[], choices=sorted(NETWORKS),
                     help="a built-in network (repeatable; adds to the space's networks)")
    sub.add_argument("--onnx", action="append", default=[], metavar="FILE", help="an ONNX model's layers (repeatable)")
    sub.add_argument("--batch", type=int, metavar="N", help="images per batch (default: the space's, else 1)")
    sub.add_argument("--synth", nargs="?", const="ecp5", choices=sorted(FAMILIES), metavar="FAMILY",
                     help="synthesise each point's accelerator with yosys for ecp5 (the default) or ice40 "
                          "(LUTs, FFs, DSPs, BRAMs)")
    sub.add_argument("-o", "--output", required=True, metavar="DIR", help="sweep.json, sweep.md, pareto.png, best.toml")
    _parallel_arguments(sub)
    sub.set_defaults(run=cmd_sweep)

    sub = commands.add_parser("bench", help="the performance model on AlexNet and layers on the RTL "
                                            "(Verilator), with the model's error")
    sub.add_argument("--quick", action="store_true",
                     help="model and the tiny core only (minutes); without it also AlexNet layers on "
                          "the eyeriss-v1 core (about 5 minutes)")
    sub.add_argument("-o", "--output", default="build/bench", metavar="DIR",
                     help="where bench.json and bench.md go (default: build/bench)")
    sub.add_argument("--build-dir", default="build/rtl", metavar="DIR",
                     help="simulator builds, one per configuration (default: build/rtl)")
    sub.set_defaults(run=cmd_bench)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"rowstation {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
