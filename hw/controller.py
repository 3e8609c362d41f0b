"""The controller: runs a layer's program (:mod:`rowstation.gen.program`) without host help.

It fetches 32-bit program words from ``program``, keeps the registers of
:class:`rowstation.gen.program.RegisterMap` (PE setting, multicast IDs, chain links, loop
nests and tables), moves data between external memory (``mem_rd``/``mem_wr``) and the global
buffer (``LOAD``, ``STORE``, ``FILL``), and runs passes (``RUN``): address generators stream
filters from external memory and ifmaps and psums from the global buffer into the networks,
tagged for multicast, while the store unit writes each psum returned by a chain top to its
place in the global buffer. Instructions run one after another; ``done`` strobes at ``END``.
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gen.program import ARGUMENTS, LOOPS, OPCODES, PE_SETTINGS, REGIONS, RegisterMap
from .arbiter import or_tree
from .glb import ReadPortSignature, WriteRequest
from .noc import GINWord, GONWord
from .pe import PEConfigSignature


__all__ = ["AddressGenerator", "Controller", "MEMORY_ADDR_WIDTH", "PROGRAM_WIDTH"]


MEMORY_ADDR_WIDTH = 32  # external memory word addresses
PROGRAM_WIDTH = 32
NETS = ("filt", "ifmap", "psum")


def _loop_advance(index, counts, steps):
    """Next indices, address change and "was last" of a loop nest (outermost first)."""
    last = [index[k] == counts[k] - 1 for k in range(len(index))]
    inner_done = [Cat(last[k + 1:]).all() if k + 1 < len(index) else C(1) for k in range(len(index))]
    advance = [inner_done[k] & ~last[k] for k in range(len(index))]
    wrap = [inner_done[k] & last[k] for k in range(len(index))]
    following = [Mux(advance[k], index[k] + 1, Mux(wrap[k], 0, index[k])) for k in range(len(index))]
    delta = or_tree(Mux(advance[k], steps[k].as_unsigned(), 0) for k in range(len(index)))
    return following, delta, Cat(last).all()


class AddressGenerator(wiring.Component):
    """Walks a loop nest: emits ``base + offset``, where offset gains ``steps[k]`` when level
    k advances; the level ``table_level`` selects the table entry (``entry``) whose ``base``
    the parent looks up. ``start`` restarts the walk; ``busy`` until the last address is taken.
    """

    def __init__(self, *, levels, table_level, count_width, addr_width, table_depth):
        self._levels, self._table_level = levels, table_level
        super().__init__({
            "counts": In(count_width).array(levels),
            "steps": In(signed(32)).array(levels),
            "start": In(1),
            "busy": Out(1),
            "entry": Out(range(table_depth)),
            "base": In(addr_width),
            "o": Out(stream.Signature(addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        index = [Signal.like(self.counts[k], name=f"index_{k}") for k in range(self._levels)]
        offset = Signal(32)
        following, delta, finished = _loop_advance(index, self.counts, self.steps)
        m.d.comb += [self.o.valid.eq(self.busy), self.o.payload.eq(self.base + offset),
                     self.entry.eq(index[self._table_level])]
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), offset.eq(0)] + [i.eq(0) for i in index]
        with m.Elif(self.o.valid & self.o.ready):
            with m.If(finished):
                m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += [offset.eq(offset + delta)] + [i.eq(f) for i, f in zip(index, following)]
        return m


class Controller(wiring.Component):
    """Program in, array settings and network streams out, global buffer and external memory
    ports; see the module documentation. ``error`` latches on an unknown opcode or register."""

    def __init__(self, config):
        self._config = c = config
        self.regmap = RegisterMap(config)
        self.count_width = max(c.dim_width, c.pe_count.bit_length(), c.filter_spad_depth.bit_length(),
                               c.ifmap_spad_depth.bit_length(), c.psum_spad_depth.bit_length())
        self.ifmap_addr_width = c.glb_addr_width(c.ifmap_width)
        self.psum_addr_width = c.glb_addr_width(c.psum_width)
        rows, cols = c.array_rows, c.array_cols
        ifmap, psum = signed(c.ifmap_width), signed(c.psum_width)
        members = {
            "program": In(stream.Signature(PROGRAM_WIDTH)),
            "done": Out(1),
            "error": Out(1),
            "runs": Out(1),  # strobes as each pass starts
            "mem_rd": Out(ReadPortSignature(MEMORY_ADDR_WIDTH, c.dram_width)),
            "mem_wr": Out(stream.Signature(WriteRequest(MEMORY_ADDR_WIDTH, c.dram_width))),
            "ifmap_rd": Out(ReadPortSignature(self.ifmap_addr_width, ifmap)),
            "psum_rd": Out(ReadPortSignature(self.psum_addr_width, psum)),
            "psum_st": Out(ReadPortSignature(self.psum_addr_width, psum)),
            "ifmap_wr": Out(stream.Signature(WriteRequest(self.ifmap_addr_width, ifmap))),
            "psum_ld": Out(stream.Signature(WriteRequest(self.psum_addr_width, psum))),
            "psum_wr": Out(stream.Signature(WriteRequest(self.psum_addr_width, psum))),
            "cfg": Out(PEConfigSignature(c)),
            "chain_bottom": Out(1).array(rows, cols),
            "chain_top": Out(1).array(rows, cols),
            "opsum": In(stream.Signature(GONWord(psum, rows, cols))),
            "array_idle": In(1),
        }
        for net, shape in zip(NETS, (signed(c.weight_width), ifmap, psum)):
            members[net] = Out(stream.Signature(GINWord(shape, c.row_id_width, c.col_id_width)))
            members[f"{net}_row_ids"] = Out(c.row_id_width).array(rows)
            members[f"{net}_col_ids"] = Out(c.col_id_width).array(rows, cols)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c, regmap = self._config, self.regmap
        rows, cols, rw, cw = c.array_rows, c.array_cols, c.row_id_width, c.col_id_width
        write = Signal()          # a register write this cycle
        reg_addr = Signal(28)
        value = Signal(PROGRAM_WIDTH)
        known = []                # "this address is a register" terms

        def decode(name, index=0):
            hit = Signal(name=f"hit_{name}_{index}")
            m.d.comb += hit.eq(reg_addr == regmap.address(name, index))
            known.append(hit)
            return write & hit

        # Registers wired straight to the array.
        for name in PE_SETTINGS:
            target = getattr(self.cfg, name)
            register = Signal.like(target, name=f"cfg_{name}")
            m.d.comb += target.eq(register)
            with m.If(decode(f"cfg_{name}")):
                m.d.sync += register.eq(value)
        for r in range(rows):
            register = Signal(3 * rw, name=f"row_ids_{r}")
            with m.If(decode("row_ids", r)):
                m.d.sync += register.eq(value)
            for i, net in enumerate(NETS):
                m.d.comb += getattr(self, f"{net}_row_ids")[r].eq(register[i * rw:(i + 1) * rw])
            for col in range(cols):
                pe = r * cols + col
                register = Signal(3 * cw + 2, name=f"pe_{r}_{col}",
                                  init=(1 << 3 * cw + 2) - 1)  # unused IDs, chains open
                with m.If(decode("pe", pe)):
                    m.d.sync += register.eq(value)
                for i, net in enumerate(NETS):
                    m.d.comb += getattr(self, f"{net}_col_ids")[r][col].eq(register[i * cw:(i + 1) * cw])
                m.d.comb += [self.chain_bottom[r][col].eq(register[3 * cw]),
                             self.chain_top[r][col].eq(register[3 * cw + 1])]

        # Loop nests and tables.
        loops = {}
        for stream_name, levels in LOOPS.items():
            counts = [Signal(self.count_width, name=f"{stream_name}_count_{k}") for k in range(len(levels))]
            steps = [Signal(signed(32), name=f"{stream_name}_step_{k}") for k in range(len(levels))]
            for k in range(len(levels)):
                with m.If(decode(f"{stream_name}_count", k)):
                    m.d.sync += counts[k].eq(value)
                with m.If(decode(f"{stream_name}_step", k)):
                    m.d.sync += steps[k].eq(value)
            loops[stream_name] = (counts, steps)

        def table(name, width):
            """A register table: written by the program, read combinationally at ``index``."""
            first, depth = regmap.blocks[name]
            memory = Memory(shape=width, depth=depth, init=[])
            m.submodules[f"{name}_table"] = memory
            port, read = memory.write_port(), memory.read_port(domain="comb")
            hit = Signal(name=f"hit_{name}")
            m.d.comb += [hit.eq((reg_addr >= first) & (reg_addr < first + depth)),
                         port.addr.eq(reg_addr - first), port.data.eq(value), port.en.eq(write & hit)]
            known.append(hit)
            return read

        generators = {}
        widths = {"filt": MEMORY_ADDR_WIDTH, "ifmap": self.ifmap_addr_width, "psum": self.psum_addr_width}
        for net in NETS:
            counts, steps = loops[net]
            levels = LOOPS[net]
            ag = AddressGenerator(levels=len(levels), table_level=levels.index("table"),
                                  count_width=self.count_width, addr_width=widths[net],
                                  table_depth=c.pe_count)
            m.submodules[f"{net}_ag"] = ag
            bases, tags = table(f"{net}_base", widths[net]), table(f"{net}_tag", rw + cw)
            m.d.comb += [bases.addr.eq(ag.entry), tags.addr.eq(ag.entry), ag.base.eq(bases.data)]
            m.d.comb += [ag.counts[k].eq(counts[k]) for k in range(len(levels))]
            m.d.comb += [ag.steps[k].eq(steps[k]) for k in range(len(levels))]
            generators[net] = (ag, tags.data)
        store_bases = table("store_base", self.psum_addr_width)
        store_total = Signal(PROGRAM_WIDTH)
        with m.If(decode("store_total")):
            m.d.sync += store_total.eq(value)

        # Streams of a pass: address -> memory (tag queued) -> tagged word into the network.
        start = Signal()
        drained = []
        sources = {"filt": self.mem_rd, "ifmap": self.ifmap_rd, "psum": self.psum_rd}
        run_reads = Signal()  # the filter stream owns mem_rd
        for net in NETS:
            ag, tag = generators[net]
            port, out = sources[net], getattr(self, net)
            queue = fifo.SyncFIFOBuffered(width=rw + cw, depth=8 if net == "filt" else 4)
            m.submodules[f"{net}_tags"] = queue
            issue = ag.o.valid & queue.w_rdy
            deliver = port.data.valid & queue.r_rdy
            element = getattr(self, net).payload.data
            with m.If(run_reads if net == "filt" else 1):  # LOAD also uses mem_rd
                m.d.comb += [port.addr.valid.eq(issue), port.addr.payload.eq(ag.o.payload),
                             port.data.ready.eq(out.ready & queue.r_rdy)]
            m.d.comb += [
                ag.o.ready.eq(queue.w_rdy & port.addr.ready),
                ag.start.eq(start),
                queue.w_data.eq(tag), queue.w_en.eq(issue & port.addr.ready),
                out.valid.eq(deliver),
                out.payload.row.eq(queue.r_data[:rw]), out.payload.col.eq(queue.r_data[rw:]),
                element.eq(port.data.payload[:len(element)]),
                queue.r_en.eq(deliver & out.ready),
            ]
            drained.append(~ag.busy & ~queue.r_rdy)

        # Store unit: each chain top's psums walk the store loop nest from its base.
        store_counts, store_steps = loops["store"]
        state = Memory(shape=data.StructLayout({
            "offset": 32, "index": data.ArrayLayout(self.count_width, len(LOOPS["store"]))}),
            depth=c.pe_count, init=[])
        m.submodules.store_state = state
        state_rd, state_wr = state.read_port(domain="comb"), state.write_port()
        started = Signal(c.pe_count)  # sources that returned a psum in this pass
        source = Signal(range(c.pe_count))
        m.d.comb += [source.eq(self.opsum.payload.row * cols + self.opsum.payload.col),
                     state_rd.addr.eq(source), store_bases.addr.eq(source), state_wr.addr.eq(source)]
        current, fresh = state_rd.data, started.bit_select(source, 1)
        index = [Mux(fresh, current.index[k], 0) for k in range(len(store_counts))]
        offset = Mux(fresh, current.offset, 0)
        following, delta, _ = _loop_advance(index, store_counts, store_steps)
        stored = Signal(PROGRAM_WIDTH)
        take = self.opsum.valid & self.psum_wr.ready
        m.d.comb += [
            self.psum_wr.valid.eq(self.opsum.valid),
            self.psum_wr.payload.addr.eq(store_bases.data + offset),
            self.psum_wr.payload.data.eq(self.opsum.payload.data),
            self.opsum.ready.eq(self.psum_wr.ready),
            state_wr.en.eq(take),
            state_wr.data.offset.eq(offset + delta),
        ]
        m.d.comb += [state_wr.data.index[k].eq(following[k]) for k in range(len(following))]
        with m.If(start):
            m.d.sync += [started.eq(0), stored.eq(0)]
        with m.Elif(take):
            m.d.sync += [started.eq(started | (1 << source)), stored.eq(stored + 1)]

        # Instruction sequencing.
        opcode = Signal(4)
        operand = Signal(28)
        args = Array(Signal(PROGRAM_WIDTH, name=f"arg_{i}") for i in range(4))
        arg_count = Signal(range(5))
        arg_index = Signal(range(5))
        issued = Signal(PROGRAM_WIDTH)   # addresses issued (LOAD, STORE) or words written (FILL)
        moved = Signal(PROGRAM_WIDTH)    # words arrived (LOAD, STORE)
        m.d.comb += [reg_addr.eq(operand), value.eq(args[0])]
        glb_addr, mem_addr, count = args[0], args[1], args[2]

        with m.FSM() as fsm:
            with m.State("RESET"):
                # A state change after reset, so simulators that start processes after the
                # initial values (Icarus) evaluate every process of the state machine.
                m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.program.ready.eq(1)
                with m.If(self.program.valid):
                    word = self.program.payload
                    m.d.sync += [opcode.eq(word[28:]), operand.eq(word[:28]), arg_index.eq(0),
                                 issued.eq(0), moved.eq(0)]
                    with m.Switch(word[28:]):
                        for name, code in OPCODES.items():
                            with m.Case(code):
                                m.d.sync += arg_count.eq(ARGUMENTS[name])
                                m.next = "ARGS" if ARGUMENTS[name] else "EXECUTE"
                        with m.Default():
                            m.d.sync += self.error.eq(1)
            with m.State("ARGS"):
                m.d.comb += self.program.ready.eq(1)
                with m.If(self.program.valid):
                    m.d.sync += [args[arg_index].eq(self.program.payload), arg_index.eq(arg_index + 1)]
                    with m.If(arg_index == arg_count - 1):
                        m.next = "EXECUTE"
            with m.State("EXECUTE"):
                with m.Switch(opcode):
                    with m.Case(OPCODES["end"]):
                        m.next = "FETCH"
                    with m.Case(OPCODES["write"]):
                        with m.If(~Cat(known).any()):
                            m.d.sync += self.error.eq(1)
                        m.next = "FETCH"
                    with m.Case(OPCODES["run"]):
                        m.next = "RUN"
                    with m.Case(OPCODES["load"]):
                        # External memory -> global buffer, ``count`` words from each base.
                        m.d.comb += [
                            self.mem_rd.addr.valid.eq(issued != count),
                            self.mem_rd.addr.payload.eq(mem_addr + issued),
                        ]
                        with m.If(self.mem_rd.addr.valid & self.mem_rd.addr.ready):
                            m.d.sync += issued.eq(issued + 1)
                        for region, port in (("ifmap", self.ifmap_wr), ("psum", self.psum_ld)):
                            with m.If(operand[0] == REGIONS[region]):
                                m.d.comb += [
                                    port.valid.eq(self.mem_rd.data.valid),
                                    port.payload.addr.eq(glb_addr + moved),
                                    port.payload.data.eq(self.mem_rd.data.payload[:len(port.payload.data)]),
                                    self.mem_rd.data.ready.eq(port.ready),
                                ]
                        with m.If(self.mem_rd.data.valid & self.mem_rd.data.ready):
                            m.d.sync += moved.eq(moved + 1)
                        with m.If(moved == count):
                            m.next = "FETCH"
                    with m.Case(OPCODES["store"]):
                        # Global buffer psums -> external memory, sign-extended.
                        m.d.comb += [
                            self.psum_st.addr.valid.eq(issued != count),
                            self.psum_st.addr.payload.eq(glb_addr + issued),
                            self.mem_wr.valid.eq(self.psum_st.data.valid),
                            self.mem_wr.payload.addr.eq(mem_addr + moved),
                            self.mem_wr.payload.data.eq(self.psum_st.data.payload),
                            self.psum_st.data.ready.eq(self.mem_wr.ready),
                        ]
                        with m.If(self.psum_st.addr.valid & self.psum_st.addr.ready):
                            m.d.sync += issued.eq(issued + 1)
                        with m.If(self.mem_wr.valid & self.mem_wr.ready):
                            m.d.sync += moved.eq(moved + 1)
                        with m.If(moved == count):
                            m.next = "FETCH"
                    with m.Case(OPCODES["fill"]):
                        fill_count, fill_value = args[1], Cat(args[2], args[3])
                        for region, port in (("ifmap", self.ifmap_wr), ("psum", self.psum_ld)):
                            with m.If(operand[0] == REGIONS[region]):
                                m.d.comb += [
                                    port.valid.eq(issued != fill_count),
                                    port.payload.addr.eq(glb_addr + issued),
                                    port.payload.data.eq(fill_value[:len(port.payload.data)]),
                                ]
                                with m.If(port.valid & port.ready):
                                    m.d.sync += issued.eq(issued + 1)
                        with m.If(issued == fill_count):
                            m.next = "FETCH"
            with m.State("RUN"):
                with m.If(Cat(drained).all() & (stored == store_total) & self.array_idle):
                    m.next = "FETCH"
        # Strobes as plain functions of the state (not assigned inside the state machine), so
        # every simulator evaluates them from the first cycle.
        executing = fsm.ongoing("EXECUTE")
        m.d.comb += [
            self.done.eq(executing & (opcode == OPCODES["end"])),
            write.eq(executing & (opcode == OPCODES["write"])),
            start.eq(executing & (opcode == OPCODES["run"])),
            self.runs.eq(start),
            run_reads.eq(fsm.ongoing("RUN")),
        ]
        return m
