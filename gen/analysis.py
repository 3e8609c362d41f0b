"""``rowstation analyze``: a network's layers under each dataflow, per layer and in total.

The work is a list of independent (dataflow, layer) evaluations, run by :func:`run_tasks` on a
local process pool or a Dask cluster; the report is plain data (JSON), rendered as Markdown
tables and, with matplotlib, as plots.
"""

import multiprocessing
import os

from .dataflows import COSTS, DATAFLOWS, LEVELS, evaluate_layer, storage_budget
from .mapper import check_tolerance


__all__ = ["run_tasks", "dataflow_names", "analyze", "totals", "markdown", "plot", "CHIP_UTILIZATION"]


#: The Eyeriss v1 chip's PE utilisation on AlexNet CONV1-5 (brief, section 2).
CHIP_UTILIZATION = {"CONV1": 0.92, "CONV2": 0.80, "CONV3": 0.93, "CONV4": 0.93, "CONV5": 0.93}


def run_tasks(function, tasks, *, scheduler=None, workers=None, progress=None):
    """``function(*task)`` of every task, in the tasks' order: on the Dask cluster whose scheduler
    is at ``scheduler`` (an address such as ``tcp://host:8786``), else on a local process pool of
    ``workers`` processes (default: one per CPU; 1 runs them in this process). ``progress(done,
    total)`` is called as tasks finish. The first exception a task raises is raised."""
    results, total = [None] * len(tasks), len(tasks)

    def finished(done):
        if progress is not None:
            progress(done, total)

    if scheduler is not None:
        from dask.distributed import Client, as_completed as completed

        with Client(scheduler) as client:
            futures = {client.submit(function, *task, pure=False): i for i, task in enumerate(tasks)}
            try:
                for done, future in enumerate(completed(futures), 1):
                    results[futures[future]] = future.result()
                    finished(done)
            except BaseException:
                client.cancel(list(futures))
                raise
        return results
    workers = workers or os.cpu_count() or 1
    if workers == 1 or total <= 1:
        for i, task in enumerate(tasks):
            results[i] = function(*task)
            finished(i + 1)
        return results
    # Leaving the pool terminates its workers, so the first error does not wait for the rest.
    with multiprocessing.Pool(min(workers, total)) as pool:
        jobs = [(function, i, task) for i, task in enumerate(tasks)]
        for done, (i, result) in enumerate(pool.imap_unordered(_indexed, jobs), 1):
            results[i] = result
            finished(done)
    return results


def _indexed(job):
    function, i, task = job
    return i, function(*task)


def dataflow_names(text):
    """Dataflows from ``"rs"``, ``"rs,ws"``, ``"os"`` (its variants A, B and C) or ``"all"``."""
    names = []
    for item in filter(None, (part.strip().lower() for part in text.split(","))):
        if item == "all":
            names += DATAFLOWS
        elif item == "os":
            names += [d for d in DATAFLOWS if d.startswith("os-")]
        elif item in DATAFLOWS:
            names.append(item)
        else:
            raise ValueError(f"unknown dataflow {item!r}; dataflows: {', '.join(DATAFLOWS)}, os, all")
    if not names:
        raise ValueError("no dataflow given")
    return list(dict.fromkeys(names))


def totals(config, layers):
    """Sums over ``layers`` (results of :func:`evaluate_layer`); utilisation and the per-MAC
    figures of the sums."""
    macs = sum(r["macs"] for r in layers)
    cycles = sum(r["cycles"] for r in layers)
    dram_bytes = sum(r["dram_bytes"] for r in layers)
    accesses = {level: sum(r["accesses"][level] for r in layers) for level in LEVELS}
    energy = {level: sum(r["energy"][level] for r in layers) for level in (*LEVELS, "alu", "total")}
    return {"layers": len(layers), "weights": sum(r["weights"] for r in layers), "macs": macs,
            "cycles": cycles, "utilization": macs / (config.peak_macs * cycles),
            "accesses": accesses, "energy": energy, "dram_bytes": dram_bytes,
            "dram_over_compulsory": dram_bytes / sum(r["dram_compulsory_bytes"] for r in layers),
            "dram_per_mac": accesses["dram"] / macs, "energy_per_mac": energy["total"] / macs}


def analyze(config, layers, *, network, batch, dataflows=("rs",), costs=COSTS, tolerance=0.0,
            scheduler=None, workers=None, progress=None):
    """The report of ``layers`` ((name, ConvLayer) pairs) under each of ``dataflows``: per
    dataflow its storage, layers and totals (all layers, the convolutions and the fully
    connected ones), and each dataflow's energy relative to RS where RS is among them. RS maps
    each layer for the fewest cycles, or for the least energy within ``tolerance`` of them."""
    if not layers:
        raise ValueError(f"network {network} has no layer with MACs")
    check_tolerance(tolerance)
    tasks = [(config, name, layer, dataflow, costs, tolerance) for dataflow in dataflows for name, layer in layers]
    results = run_tasks(evaluate_layer, tasks, scheduler=scheduler, workers=workers, progress=progress)
    report = {"network": network, "batch": batch, "pes": config.pe_count, "config": config.to_dict(),
              "costs": dict(costs), "tolerance": tolerance, "dataflows": {}}
    for i, dataflow in enumerate(dataflows):
        rows = results[i * len(layers):(i + 1) * len(layers)]
        rf_bits, glb_bits = storage_budget(config, dataflow)
        kinds = {"conv": [r for r in rows if not r["fc"]], "fc": [r for r in rows if r["fc"]]}
        report["dataflows"][dataflow] = {
            "storage": {"rf_bytes_per_pe": rf_bits / 8, "glb_bytes": glb_bits / 8},
            "layers": rows, "total": totals(config, rows),
            **{kind: totals(config, part) for kind, part in kinds.items() if part}}
    if "rs" in dataflows:
        rs = report["dataflows"]["rs"]

        def ratios(entry, on_chip):
            def energy(part):
                return part["energy"]["total"] - (part["energy"]["dram"] if on_chip else 0)
            return {kind: energy(entry[kind]) / energy(rs[kind]) for kind in ("total", "conv", "fc") if kind in entry}

        report["energy_vs_rs"] = {d: ratios(e, False) for d, e in report["dataflows"].items()}
        report["on_chip_energy_vs_rs"] = {d: ratios(e, True) for d, e in report["dataflows"].items()}
    return report


def _shape(d):
    """``d`` (a layer's shape as a dict) without N and the defaults of U, P and G."""
    extra = "".join(f",{k}={d[k]}" for k, default in (("U", 1), ("P", 0), ("G", 1)) if d[k] != default)
    return f"C={d['C']},H={d['H']},W={d['W']},M={d['M']},R={d['R']},S={d['S']}{extra}"


def markdown(report):
    """The report as Markdown: a table per dataflow, then the energy relative to RS."""
    costs = "/".join(f"{report['costs'][k]:g}" for k in (*LEVELS, "alu"))
    lanes = report["config"].get("mac_lanes", 1)
    lines = [f"# {report['network']}, batch {report['batch']}, {report['pes']} PEs"
             + (f" of {lanes} MAC lanes" if lanes > 1 else ""),
             "", f"Energy per access (DRAM/GLB/NoC/RF/ALU, relative to a MAC): {costs}."]
    if report.get("tolerance"):
        lines.append(f"RS maps each layer for the least energy within {report['tolerance']:.1%} of its fewest cycles.")
    head = ("| layer | shape | weights | MACs | cycles | utilization | DRAM | GLB | NoC | RF | "
            "DRAM/MAC | DRAM/compulsory | energy/MAC |")
    for dataflow, entry in report["dataflows"].items():
        storage = entry["storage"]
        lines += ["", f"## {dataflow.upper()}: {storage['rf_bytes_per_pe']:g} B of registers per PE, "
                      f"{storage['glb_bytes'] / 1024:.1f} KiB global buffer", "", head,
                  "|" + "---|" * 13]
        for r in [*entry["layers"], {"name": "total", **entry["total"]}]:
            a = r["accesses"]
            shape = _shape(r["layer"]) if "layer" in r else ""
            lines.append(f"| {r['name']} | {shape} | {r['weights']:,} | {r['macs']:,} | {r['cycles']:,} | "
                         f"{r['utilization']:.1%} | " + " | ".join(f"{a[level]:,.0f}" for level in LEVELS)
                         + f" | {a['dram'] / r['macs']:.4f} | {r['dram_over_compulsory']:.2f}x | "
                         f"{r['energy']['total'] / r['macs']:.2f} |")
    if "energy_vs_rs" in report and len(report["dataflows"]) > 1:
        lines += ["", "## Energy relative to RS", "",
                  "| dataflow | CONV layers | FC layers | all | CONV on chip | FC on chip | all on chip |",
                  "|---|---|---|---|---|---|---|"]
        for dataflow, ratios in report["energy_vs_rs"].items():
            on_chip = report["on_chip_energy_vs_rs"][dataflow]
            cells = [f"{table[kind]:.2f}x" if kind in table else "" for table in (ratios, on_chip)
                     for kind in ("conv", "fc", "total")]
            lines.append(f"| {dataflow.upper()} | " + " | ".join(cells) + " |")
        lines += ["", "On chip: the global buffer, array, register files and MACs, without DRAM."]
    return "\n".join(lines) + "\n"


def plot(report, path):
    """Energy per MAC by level for each dataflow (stacked, CONV and FC layers apart) and PE
    utilisation per layer (with the Eyeriss chip's on AlexNet's convolutions)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataflows = list(report["dataflows"])
    kinds = [kind for kind in ("conv", "fc") if any(kind in e for e in report["dataflows"].values())]
    fig, (energy_axis, util_axis) = plt.subplots(1, 2, figsize=(13, 4.8))
    width, colours = 0.8 / len(kinds), plt.get_cmap("tab10").colors
    for k, kind in enumerate(kinds):
        bottom = [0.0] * len(dataflows)
        for j, level in enumerate((*LEVELS, "alu")):
            heights = [e[kind]["energy"][level] / e[kind]["macs"] if kind in e else 0
                       for e in report["dataflows"].values()]
            xs = [i + (k - (len(kinds) - 1) / 2) * width for i in range(len(dataflows))]
            energy_axis.bar(xs, heights, width * 0.95, bottom=bottom, color=colours[j],
                            label=level.upper() if k == 0 else None, hatch="//" if kind == "fc" else None,
                            edgecolor="white")
            bottom = [b + h for b, h in zip(bottom, heights)]
    energy_axis.set_xticks(range(len(dataflows)), [d.upper() for d in dataflows])
    energy_axis.set_ylabel("normalised energy per MAC")
    energy_axis.set_title(f"{report['network']}, batch {report['batch']}: energy by level"
                          + (" (CONV plain, FC hatched)" if len(kinds) > 1 else ""))
    energy_axis.legend(fontsize="small")
    names = [r["name"] for r in next(iter(report["dataflows"].values()))["layers"]]
    width = 0.8 / (len(dataflows) + 1)
    for i, (dataflow, entry) in enumerate(report["dataflows"].items()):
        util_axis.bar([x + i * width for x in range(len(names))], [r["utilization"] * 100 for r in entry["layers"]],
                      width, label=dataflow.upper(), color=colours[i])
    if report["network"] == "alexnet":
        chip = [(x, CHIP_UTILIZATION[n] * 100) for x, n in enumerate(names) if n in CHIP_UTILIZATION]
        util_axis.bar([x + len(dataflows) * width for x, _ in chip], [u for _, u in chip], width,
                      label="Eyeriss chip", color="black")
    util_axis.set_xticks([x + (len(dataflows) - 1) * width / 2 for x in range(len(names))], names,
                         rotation=90 if len(names) > 10 else 0, fontsize="small")
    util_axis.set_ylabel("PE utilisation (%)")
    util_axis.set_ylim(0, 100)
    util_axis.set_title(f"PE utilisation per layer ({report['pes']} PEs)")
    util_axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
