"""``rowstation sweep``: every configuration of a design space on networks, by the performance
model, optionally synthesised; the Pareto front of throughput, energy and area.

A space is a TOML file::

    preset = "eyeriss-v1"              # the base configuration (default eyeriss-v1)
    networks = ["alexnet"]             # built-in networks (the command line may add more)
    batch = 1
    costs = { dram = 200 }             # energy per access, replacing the survey's defaults
    [space]                            # configuration keys and the values to try
    array_rows = [8, 12, 16]
    glb_banks = [16, 27]
    [budget]                           # upper limits on result columns, for the best point
    dsps = 156

Every combination of the ``[space]`` values is a point; a point whose configuration is invalid,
or on which a layer cannot be mapped, is reported with the reason and takes no part in the
front. Area is the LUT count when the points are synthesised (for ECP5 or iCE40), else the
on-chip storage.
"""

import json
from dataclasses import fields
from itertools import product
from math import prod
from pathlib import Path

from .analysis import run_tasks, totals
from .config import AcceleratorConfig, preset as preset_config, read_toml
from .dataflows import cost_table, evaluate_layer, storage_bits
from .mapper import check_tolerance
from .zoo import NETWORKS, check_batch


__all__ = ["Space", "load_space", "run_sweep", "pareto", "markdown", "plot", "write_report", "BUDGET_KEYS"]


#: Result columns that synthesis measures.
SYNTHESIS_KEYS = ("luts", "ffs", "dsps", "brams")

#: Result columns a budget may limit.
BUDGET_KEYS = ("pes", "storage_kib", *SYNTHESIS_KEYS, "cycles", "energy_per_mac")


class Space:
    """A validated design space: the base configuration, the keys swept with their values, the
    networks, batch, energy costs, budget, and the mapper's cycle tolerance (RS maps each layer
    for the least energy within it of the fewest cycles)."""

    def __init__(self, *, base="eyeriss-v1", space, networks=(), batch=1, costs=None, budget=None, tolerance=0.0,
                 source="space"):
        names = {field.name for field in fields(AcceleratorConfig)}
        self.base = preset_config(base)
        if not isinstance(space, dict) or not space:
            raise ValueError(f"{source}: [space] must name at least one configuration key and its values")
        for key, values in space.items():
            if key not in names:
                raise ValueError(f"{source}: unknown configuration key {key!r} in [space]; known keys: "
                                 f"{', '.join(sorted(names))}")
            if not isinstance(values, list) or not values or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError(f"{source}: [space] {key} must be a non-empty list of integers, not {values!r}")
        self.space = {key: list(dict.fromkeys(values)) for key, values in space.items()}
        for network in networks:
            if network not in NETWORKS:
                raise ValueError(f"{source}: unknown network {network!r}; built-in networks: {', '.join(NETWORKS)}")
        self.networks = list(dict.fromkeys(networks))
        try:
            check_batch(batch)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        self.batch = batch
        try:
            self.costs = cost_table(costs or {})
        except ValueError as error:
            raise ValueError(f"{source}: costs.{error}") from None
        self.budget = {}
        for key, value in (budget or {}).items():
            if key not in BUDGET_KEYS or not isinstance(value, (int, float)):
                raise ValueError(f"{source}: budget.{key} = {value!r}: a budget limits "
                                 f"{', '.join(BUDGET_KEYS)} by a number")
            self.budget[key] = value
        try:
            check_tolerance(tolerance)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        self.tolerance = tolerance

    def __len__(self):
        """Points in the space, valid or not."""
        return prod(len(values) for values in self.space.values())

    def points(self):
        """(values, configuration or the ValueError that refused it) of every point."""
        keys = list(self.space)
        for combination in product(*self.space.values()):
            values = dict(zip(keys, combination))
            try:
                yield values, self.base.replace(**values)
            except (ValueError, TypeError) as error:
                yield values, error


def load_space(path):
    """The :class:`Space` of TOML file ``path``."""
    table = read_toml(path, "space")
    known = {"preset", "networks", "batch", "costs", "space", "budget", "tolerance"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"space {path}: unknown entries {', '.join(unknown)}; a space has {', '.join(sorted(known))}")
    networks = table.get("networks", [])
    if not isinstance(networks, list):
        raise ValueError(f"space {path}: networks must be a list of names, not {networks!r}")
    return Space(base=table.get("preset", "eyeriss-v1"), space=table.get("space"), networks=networks,
                 batch=table.get("batch", 1), costs=table.get("costs"), budget=table.get("budget"),
                 tolerance=table.get("tolerance", 0.0), source=str(path))


def _evaluate(config, name, layer, costs, tolerance):
    """RS figures of one layer of one point, or its error (the point is then infeasible)."""
    try:
        return evaluate_layer(config, name, layer, "rs", costs, tolerance)
    except ValueError as error:
        return {"error": str(error)}


def _synthesize(config, build, family):
    from ..boards.toolchain import fpga_resources

    try:
        return fpga_resources(config, build, family)
    except RuntimeError as error:
        return {"error": str(error).splitlines()[0]}


def run_sweep(space, layers, *, synth=None, build="build/sweep", scheduler=None, workers=None, progress=None):
    """Evaluate every point of ``space`` on ``layers`` ({network: [(name, ConvLayer)]}); with
    ``synth`` (an FPGA family: ecp5 or ice40), also synthesise each valid point for it (its
    Verilog under ``build``). Returns
    the report: one entry per point with its figures, whether it is on the Pareto front and
    within the budget, and the best point (highest throughput within the budget, then least
    energy)."""
    unmeasured = [key for key in space.budget if key in SYNTHESIS_KEYS and not synth]
    if unmeasured:
        raise ValueError(f"the budget limits {', '.join(unmeasured)}, which only synthesis measures: "
                         f"run with --synth, or drop them from [budget]")
    points = list(space.points())
    valid = [(i, config) for i, (_, config) in enumerate(points) if isinstance(config, AcceleratorConfig)]
    tasks = [(config, f"{network}/{name}", layer, space.costs, space.tolerance)
             for _, config in valid for network, shapes in layers.items() for name, layer in shapes]
    per_point = sum(len(shapes) for shapes in layers.values())
    jobs = [(_evaluate, task) for task in tasks]
    if synth:
        jobs += [(_synthesize, (config, str(Path(build) / f"point-{i}"), synth)) for i, config in valid]
    results = run_tasks(_call, jobs, scheduler=scheduler, workers=workers, progress=progress)
    entries = []
    for i, (values, config) in enumerate(points):
        entries.append({"point": i, "values": values})
        if not isinstance(config, AcceleratorConfig):
            entries[-1]["error"] = f"invalid configuration: {config}"
    for j, (i, config) in enumerate(valid):
        rows = results[j * per_point:(j + 1) * per_point]
        entry = entries[i]
        entry.update(pes=config.pe_count, storage_kib=storage_bits(config) / 8192)
        failed = [r["error"] for r in rows if "error" in r]
        if failed:
            entry["error"] = failed[0]
            continue
        total = totals(config, rows)
        entry.update(macs=total["macs"], cycles=total["cycles"], throughput=total["macs"] / total["cycles"],
                     utilization=total["utilization"], energy=total["energy"]["total"],
                     energy_per_mac=total["energy_per_mac"], dram_per_mac=total["dram_per_mac"],
                     networks={network: _network_total(config, rows, network) for network in layers})
        if synth:
            resources = results[len(tasks) + j]
            if "error" in resources:
                entry["error"] = f"synthesis failed: {resources['error']}"
            else:
                entry.update(resources)
    area = "luts" if synth else "storage_kib"
    feasible = [e for e in entries if "error" not in e]
    front = pareto(feasible, area)
    for entry in feasible:
        entry["pareto"] = entry["point"] in front
        entry["within_budget"] = all(entry[key] <= limit for key, limit in space.budget.items())
    candidates = [e for e in feasible if e["within_budget"]]
    best = max(candidates, key=lambda e: (e["throughput"], -e["energy_per_mac"]), default=None)
    return {"base": space.base.to_dict(), "space": space.space, "networks": {n: [name for name, _ in s] for n, s in layers.items()},
            "batch": next(layer.N for shapes in layers.values() for _, layer in shapes), "costs": space.costs, "budget": space.budget, "tolerance": space.tolerance, "area": area,
            "synthesized": synth, "points": entries, "best": best["point"] if best else None}


def _call(function, args):
    return function(*args)


def _network_total(config, rows, network):
    total = totals(config, [r for r in rows if r["name"].startswith(f"{network}/")])
    return {"cycles": total["cycles"], "utilization": total["utilization"], "energy": total["energy"]["total"]}


def pareto(entries, area):
    """Points of ``entries`` that no other beats on throughput (higher), energy per MAC and
    ``area`` (lower) at once."""
    def dominates(a, b):
        no_worse = (a["throughput"] >= b["throughput"] and a["energy_per_mac"] <= b["energy_per_mac"]
                    and a[area] <= b[area])
        better = (a["throughput"] > b["throughput"] or a["energy_per_mac"] < b["energy_per_mac"]
                  or a[area] < b[area])
        return no_worse and better
    return {b["point"] for b in entries if not any(dominates(a, b) for a in entries)}


def markdown(report):
    keys = list(report["space"])
    synth = report["synthesized"]
    extra = ["LUTs", "FFs", "DSPs", "BRAMs"] if synth else []
    head = (["point", *keys, "PEs", "storage KiB", *extra, "cycles", "MACs/cycle", "utilization",
             "energy/MAC", "DRAM/MAC", "Pareto", "budget"])
    lines = [f"# Sweep: {', '.join(report['networks'])} at batch {report['batch']}, "
             f"{len(report['points'])} points", "",
             f"Area: {f'LUTs ({synth}, yosys)' if synth else 'on-chip storage'}; budget: "
             + (", ".join(f"{k} <= {v:g}" for k, v in report["budget"].items()) or "none") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in report["points"]:
        cells = [str(e["point"]), *(str(e["values"][k]) for k in keys)]
        if "error" in e:
            cells += [str(e.get("pes", "")), f"{e['storage_kib']:.1f}" if "storage_kib" in e else ""]
            lines.append("| " + " | ".join(cells) + f" | {e['error']} |")
            continue
        cells += [str(e["pes"]), f"{e['storage_kib']:.1f}", *(f"{e[k]:,}" for k in SYNTHESIS_KEYS if synth),
                  f"{e['cycles']:,}", f"{e['throughput']:.1f}", f"{e['utilization']:.1%}",
                  f"{e['energy_per_mac']:.2f}", f"{e['dram_per_mac']:.4f}", "yes" if e["pareto"] else "",
                  ("best" if e["point"] == report["best"] else "within") if e["within_budget"] else "over"]
        lines.append("| " + " | ".join(cells) + " |")
    if report["best"] is not None:
        best = report["points"][report["best"]]
        lines += ["", f"Best within the budget: point {best['point']} ("
                  + ", ".join(f"{k} = {v}" for k, v in best["values"].items())
                  + f"): {best['throughput']:.1f} MACs/cycle, {best['energy_per_mac']:.2f} energy/MAC."]
    else:
        lines += ["", "No point is feasible within the budget."]
    return "\n".join(lines) + "\n"


def plot(report, path):
    """Throughput against energy per MAC (colour: area) and against area; the Pareto front
    marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [e for e in report["points"] if "error" not in e]
    if not points:
        raise ValueError("no feasible point to plot")
    area = report["area"]
    label = f"LUTs ({report['synthesized']})" if area == "luts" else "on-chip storage (KiB)"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    x = [e["energy_per_mac"] for e in points]
    y = [e["throughput"] for e in points]
    a = [e[area] for e in points]
    shown = left.scatter(x, y, c=a, cmap="viridis", s=36)
    fig.colorbar(shown, ax=left, label=label)
    right.scatter(a, y, c="tab:blue", s=36)
    for axis, xs in ((left, x), (right, a)):
        front = [(xv, yv) for xv, yv, e in zip(xs, y, points) if e["pareto"]]
        axis.scatter(*zip(*front), facecolors="none", edgecolors="red", s=110, label="Pareto front")
        if report["best"] is not None:
            best = report["points"][report["best"]]
            axis.scatter([best["energy_per_mac"] if axis is left else best[area]], [best["throughput"]],
                         marker="*", c="orange", s=220, label="best within budget", zorder=3)
        axis.set_ylabel("throughput (MACs per cycle)")
        axis.legend(fontsize="small")
    left.set_xlabel("normalised energy per MAC")
    right.set_xlabel(label)
    fig.suptitle(f"{', '.join(report['networks'])}, batch {report['batch']}: {len(points)} feasible points")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report, output):
    """sweep.json, sweep.md, pareto.png and (when a point is within the budget) best.toml, the
    best point's configuration for ``--config``, in ``output``; returns their paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / "sweep.json", output / "sweep.md"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    if any("error" not in e for e in report["points"]):
        paths.append(output / "pareto.png")
        plot(report, paths[-1])
    if report["best"] is not None:
        best = report["points"][report["best"]]
        config = {**report["base"], **best["values"]}
        paths.append(output / "best.toml")
        paths[-1].write_text(f"# Point {best['point']} of the sweep in this folder: {best['throughput']:.1f} MACs/cycle, "
                             f"{best['energy_per_mac']:.2f} energy/MAC.\n# rowstation generate --config "
                             f"{paths[-1]} -o DIR\n" + "".join(f"{key} = {value}\n" for key, value in config.items()))
    return paths
