"""Run layers on the generated core RTL (Icarus Verilog or Verilator).

The layers' programs and tensors go into one external memory image; the simulation harness
(:mod:`rowstation.sim.harness`) runs them back to back in the simulator, and the cocotb monitor
(:mod:`rowstation.sim.core_tb`) checks every layer's counters against the controller model. The
Verilog of a configuration is built once into ``build_root/core-<hash>-<sim>`` and reused.
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .controller_model import dram_image, dram_output, run_program
from .golden import layer_of
from .harness import MEMORY_BITS, PROGRAM_BITS, harness_verilog
from .runner import design_build, run_cocotb


__all__ = ["run_layers_rtl"]


def _hex(words, width):
    mask = (1 << width) - 1
    digits = -(-width // 4)
    return "".join(f"{int(word) & mask:0{digits}x}\n" for word in words)


def _words(memory, width):
    """Little-endian ``width``-bit words of the bytes ``memory`` (zero-padded to a word)."""
    size = width // 8
    padded = np.zeros(-(-len(memory) // size) * size, dtype=np.uint8)
    padded[:len(memory)] = memory
    return [int.from_bytes(padded[i:i + size].tobytes(), "little") for i in range(0, len(padded), size)]


def _read_hex(path, width):
    """The bytes of the words of a ``$writememh`` file (comments and blank lines skipped)."""
    out = bytearray()
    for line in Path(path).read_text().splitlines():
        line = line.split("//")[0].strip()
        if line:
            out += int(line, 16).to_bytes(width // 8, "little")
    return np.frombuffer(bytes(out), dtype=np.uint8)


def run_layers_rtl(config, layers, *, sim, build_root="build/rtl", stall=0.0, idle=0.0, seed=1,
                   timeout_us=None):
    """Run each layer (a dict of x, w, b, stride, padding, groups, and optionally shift and
    relu for on-chip requantisation and the mapper's tolerance) in one simulation, external
    memory stalling each channel with probability ``stall`` and the program streams with
    ``idle``; returns [(output, counters)] in order: the exact accumulation, or the requantised
    output with a shift."""
    from .. import gen
    from ..gen.mapper import map_layer
    from ..gen.isa import COUNTERS
    from ..gen.performance import layer_report
    from ..gen.program import DramLayout, compile_layer

    for name, value in (("stall", stall), ("idle", idle)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be a probability in [0, 1), not {value}")
    from ..hw.export import core_verilog

    build, verilog = design_build(
        config, name="core", sim=sim, build_root=build_root,
        sources=[Path(gen.__file__).parent / "isa.py", Path(__file__).parent / "harness.py", __file__],
        verilog=lambda: core_verilog(config) + harness_verilog(config, COUNTERS))
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=build))  # kept if the run fails, for its log

    images, cases, base = [], [], 0
    streams = {unit: [] for unit in ("load", "execute", "store")}
    for n, item in enumerate(layers):
        x, w, b = item["x"], item["w"], item.get("b")
        layer = layer_of(x, w, stride=item["stride"], padding=item["padding"], groups=item["groups"])
        mapping = map_layer(config, layer, tolerance=item.get("tolerance", 0.0))
        layout = DramLayout.packed(mapping, base, requantized=item.get("shift") is not None)
        program = compile_layer(mapping, b, layout, shift=item.get("shift"), relu=item.get("relu", False),
                                weights=w)
        image = dram_image(mapping, layout, x, w)
        expected = run_program(mapping, program.streams, image.copy(), x, w)
        images.append(image[base:])
        for unit, words in program.streams.items():
            streams[unit] += words
        base = len(image)
        cases.append({"name": str(layer), "layer": layer, "layout": layout, "macs": layer.macs,
                      "epochs": program.epochs, "tiles": program.tiles,
                      "predicted": layer_report(mapping, program), "expected": expected,
                      "stats": str(tmp / f"{n}-stats.json")})
    config.check_dram_span(base, "the layers' tensors")
    capacity = (1 << MEMORY_BITS) * config.dram_width // 8
    if base > capacity:
        raise ValueError(f"the layers need {base} bytes of external memory, more than the "
                         f"simulation harness's {capacity}")
    words = streams["load"] + streams["execute"] + streams["store"]
    if len(words) > 1 << PROGRAM_BITS:
        raise ValueError(f"the programs have {len(words)} words, more than the simulation "
                         f"harness's {1 << PROGRAM_BITS}")
    memory_words = _words(np.concatenate(images), config.dram_width)
    (tmp / "memory.hex").write_text(_hex(memory_words, config.dram_width))
    (tmp / "program.hex").write_text(_hex(words, 32))
    case = tmp / "case.json"
    # A generous bound (10 ns cycles) so a deadlock fails instead of hanging.
    case.write_text(json.dumps({
        "layers": [{key: c[key] for key in ("name", "macs", "expected", "stats")} for c in cases],
        "counters": list(COUNTERS), "counter_width": config.counter_width, "pe_count": config.pe_count,
        "mac_lanes": config.mac_lanes, "timeout_us": timeout_us or 1000 + 2 * (len(words) + base) + sum(c["macs"] for c in cases) // 10}))
    plusargs = [f"+memory={tmp / 'memory.hex'}", f"+program={tmp / 'program.hex'}",
                f"+dump={tmp / 'dump.hex'}", f"+dump_words={len(memory_words)}",
                *(f"+{unit}_words={len(unit_words)}" for unit, unit_words in streams.items()),
                f"+stall={round(stall * 256)}", f"+idle={round(idle * 256)}", f"+seed={seed}"]
    run_cocotb(sim=sim, verilog=verilog, toplevel="rowstation_harness",
               test_module="rowstation.sim.core_tb", build_dir=build / "sim", test_dir=tmp,
               env={"ROWSTATION_CASE": str(case)}, plusargs=plusargs)
    memory = _read_hex(tmp / "dump.hex", config.dram_width)
    results = []
    for c in cases:
        counters = json.loads(Path(c["stats"]).read_text())
        results.append((dram_output(memory, c["layout"], c["layer"]).copy(),
                        {"counters": counters, "epochs": c["epochs"], "tiles": c["tiles"],
                         "predicted": c["predicted"]}))
    shutil.rmtree(tmp)
    return results
