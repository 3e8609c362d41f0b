"""The processing element: a MAC with filter, ifmap and psum scratchpads running the
row-stationary 1-D primitive (Eyeriss, JSSC 2017; Chen et al., ISCA 2016).

A pass loads ``p*q*s`` weights, then convolves ``rows`` ifmap rows. For each of the ``f``
outputs of a row, the PE walks filter taps ``s`` (outer), channels ``q`` and filters ``p``
(inner): one ifmap scratchpad read feeds ``p`` MACs, the filter scratchpad is read in address
order, and ``p`` psums accumulate in the psum scratchpad. The last MAC of an output sends its
sum, plus the incoming psum when accumulating, to ``opsum``. With ``mac_lanes`` lanes the
filters go in rows of that many, a row of MACs a cycle (Eyeriss v2's SIMD PE).
"""

from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..gen.isa import PE_EVENTS, PE_SETTINGS
from .counters import EventCounters


__all__ = ["PEConfigSignature", "PEEventSignature", "event_lanes", "FilterWord", "pe_members", "PE"]


class PEConfigSignature(wiring.Signature):
    """Per-pass setting of a PE, driven by the controller (see :class:`rowstation.gen.PEConfig`).

    Members
    -------
    s, u : filter width and stride (1 <= u <= s).
    p, q : filters and channels interleaved in the PE.
    f : outputs per ifmap row.
    rows : ifmap rows convolved before the next filter load.
    accumulate : add one ``ipsum`` word to each output.
    """

    def __init__(self, config):
        shapes = {"s": range(config.max_filter_width + 1), "u": range(config.max_filter_width + 1),
                  "p": range(config.psum_spad_depth + 1), "q": range(config.ifmap_spad_depth + 1),
                  "f": config.dim_width, "rows": config.dim_width, "accumulate": 1}
        super().__init__({name: Out(shapes[name]) for name in PE_SETTINGS})


class PEEventSignature(wiring.Signature):
    """One strobe per event (:data:`~rowstation.gen.isa.PE_EVENTS`) and cycle, for counters at
    the PE or summed over the array; ``filter_write`` one per weight of a filter transfer, the
    MAC and its scratchpad accesses one per MAC lane."""

    def __init__(self, config):
        lanes = {"filter_write": config.filter_noc_width, "ifmap_read": 1, "ifmap_write": 1}
        super().__init__({name: Out(lanes.get(name, config.mac_lanes)) for name in PE_EVENTS})


def event_lanes(config):
    """Strobes per cycle of each PE event."""
    return {name: Shape.cast(member.shape).width for name, member in PEEventSignature(config).members.items()}


class FilterWord(data.StructLayout):
    """A filter network transfer: ``count`` weights (1 to ``filter_noc_width``) in ``data``,
    the first in element 0; ``last`` ends a PE's weights of a pass. Only the last transfer of
    a pass may hold fewer than ``filter_noc_width`` weights."""

    def __init__(self, config):
        k = config.filter_noc_width
        super().__init__({"data": data.ArrayLayout(signed(config.weight_width), k),
                          "count": range(1, k + 1), "last": 1})


def pe_members(config, *, counters=False):
    """The ports of a PE (see :class:`PE`), as signature members."""
    members = {
        "cfg": In(PEConfigSignature(config)),
        "keep": In(1),
        "filt": In(stream.Signature(FilterWord(config))),
        "ifmap": In(stream.Signature(signed(config.ifmap_width))),
        "ipsum": In(stream.Signature(signed(config.psum_width))),
        "opsum": Out(stream.Signature(signed(config.psum_width))),
        "events": Out(PEEventSignature(config)),
        "idle": Out(1),
    }
    if counters:
        members["clear"] = In(1)
        members["counts"] = Out(EventCounters.counts_signature(PE_EVENTS, config.counter_width))
    return members


class PE(wiring.Component):
    """Row-stationary processing element.

    Parameters
    ----------
    config : :class:`rowstation.gen.AcceleratorConfig`
    counters : bool
        Also count the events in ``counts`` (``config.counter_width`` bits, cleared by
        ``clear``). In an array the events are summed there instead.

    Ports
    -----
    cfg : In(PEConfigSignature)
        Sampled when the last filter word of a pass is accepted; hold it stable while filters load.
    keep : In(1)
        Sampled as the pass issues its last MAC: the filters stay (their bank is not freed)
        and run the next pass too, which must then send this PE no filter words.
    filt : In(stream of :class:`FilterWord`)
        Weights of a pass, ``p*q*s`` in order (s, q, p), p innermost, ``filter_noc_width`` to
        a transfer; the last transfer is marked.
    ifmap : In(stream)
        Ifmap rows, ``(f-1)*u + s`` columns of ``q`` channel values each, channel innermost. Words
        may arrive at any time, also while filters load.
    ipsum : In(stream)
        With ``accumulate``, one psum per output, in ``opsum`` order.
    opsum : Out(stream)
        Per row, per output column, ``p`` psums (filter innermost).
    events : Out(PEEventSignature)
    idle : Out(1)
        No pass in progress and nothing in flight.
    """

    def __init__(self, config, *, counters=False):
        self._config = config
        self._counters = counters
        super().__init__(pe_members(config, counters=counters))

    def elaborate(self, platform):
        m = Module()
        c = self._config
        depth_i = c.ifmap_spad_depth

        # The filter spad: per bank filter_spad_depth / k rows of k weights, written a
        # transfer at a time, read a row of `lanes` weights (one per MAC lane) at a time.
        banks, k, lanes = c.filter_banks, c.filter_noc_width, c.mac_lanes
        bank_rows = c.filter_spad_depth // k
        # Registered reads: a block RAM on FPGAs (yosys would pick LUT RAM for small ones).
        m.submodules.filter_spad = filter_spad = memory.Memory(
            shape=data.ArrayLayout(signed(c.weight_width), k), depth=banks * bank_rows, init=[],
            attrs={"ram_style": "block"})
        m.submodules.ifmap_spad = ifmap_spad = memory.Memory(
            shape=signed(c.ifmap_width), depth=depth_i, init=[])
        m.submodules.psum_spad = psum_spad = memory.Memory(
            shape=data.ArrayLayout(signed(c.psum_width), lanes), depth=c.psum_spad_depth // lanes, init=[])
        filter_wr, filter_rd = filter_spad.write_port(granularity=1), filter_spad.read_port()
        ifmap_wr, ifmap_rd = ifmap_spad.write_port(), ifmap_spad.read_port(domain="comb")
        psum_wr, psum_rd = psum_spad.write_port(), psum_spad.read_port(domain="comb")

        # Ifmap window: a circular buffer over the whole scratchpad. Words are written in
        # arrival order; the column of tap s is freed after its last read (s < u, or in the
        # last output of a row), so new columns stream in while the current output computes.
        wr_ptr = Signal(range(depth_i))
        rd_ptr = Signal(range(depth_i))
        free_ptr = Signal(range(depth_i))
        occupancy = Signal(range(depth_i + 1))  # words written and not freed
        offset = Signal(range(depth_i + 1))     # read position past the oldest live word

        # Issue: loop counters, pf (a row of MAC lanes) innermost.
        pf = Signal(range(c.psum_spad_depth // lanes))
        qc = Signal(range(c.ifmap_spad_depth))
        tap = Signal(range(c.max_filter_width))
        col = Signal(c.dim_width)
        row = Signal(c.dim_width)
        filter_addr = Signal(range(c.filter_spad_depth))    # in weights, a lane row at a time
        x_hold = Signal(signed(c.ifmap_width))

        # Filter load into a free bank, a row per transfer; the pass setting is latched per
        # bank with the last transfer, each loop bound as its last index (so the loops compare
        # without subtracting; p as the last lane row, and the lanes of that row as the last
        # lane). With two banks the next pass's weights load while the current pass computes.
        cfg = self.cfg
        shift = (lanes - 1).bit_length()
        setting = {"q": cfg.q, "u": cfg.u, "accumulate": cfg.accumulate,
                   **{f"{name}_last": getattr(cfg, name) - 1 for name in ("q", "s", "f", "rows")},
                   "p_last": ((cfg.p + lanes - 1) >> shift) - 1}
        if lanes > 1:
            setting["lane_last"] = (cfg.p - 1)[:shift]
        bank_cfg = [{name: Signal(shift, name=f"bank{b}_{name}") if name == "lane_last" else
                     Signal.like(getattr(cfg, name.removesuffix("_last")), name=f"bank{b}_{name}")
                     for name in setting} for b in range(banks)]
        full = Signal(banks)            # per bank: weights loaded, pass not finished
        load_bank = Signal(range(banks))
        run_bank = Signal(range(banks))
        load_row = Signal(range(bank_rows))
        loading = ~full.bit_select(load_bank, 1)
        running = full.bit_select(run_bank, 1)
        run = {name: Signal.like(bank_cfg[0][name], name=f"run_{name}") for name in setting}
        for name in run:
            m.d.comb += run[name].eq(Array(bank[name] for bank in bank_cfg)[run_bank])
        load = self.filt.valid & loading
        word = self.filt.payload
        written = Signal(k)    # the weights a transfer writes
        m.d.comb += [
            self.filt.ready.eq(loading),
            written.eq(Mux(load, (C(1, k + 1) << word.count) - 1, 0)),
            filter_wr.addr.eq(load_row + (load_bank * bank_rows if banks > 1 else 0)),
            filter_wr.data.eq(word.data),
            filter_wr.en.eq(written),
        ]
        with m.If(load):
            m.d.sync += load_row.eq(load_row + 1)
            with m.If(word.last):
                m.d.sync += load_row.eq(0)
                if banks > 1:
                    m.d.sync += load_bank.eq(load_bank + 1)
                for b, bank in enumerate(bank_cfg):
                    with m.If(load_bank == b):
                        m.d.sync += [bank[name].eq(setting[name]) for name in bank]
        finish = Signal()   # the running pass issues its last MAC
        release = finish & ~self.keep   # kept filters serve the next pass from the same bank
        m.d.sync += full.eq((full | Mux(load & word.last, 1 << load_bank, 0))
                            & ~Mux(release, 1 << run_bank, 0))

        advance = Signal()
        issue = Signal()
        x = Signal(signed(c.ifmap_width))
        gated = Signal()
        last_pf = pf == run["p_last"]
        step_done = last_pf & (qc == run["q_last"])
        last_tap = tap == run["s_last"]
        last_col = col == run["f_last"]
        output_done = step_done & last_tap
        first_step = (tap == 0) & (qc == 0)
        last_step = last_tap & (qc == run["q_last"])
        free = Signal()
        needs_word = pf == 0
        # The lanes of this row that hold filters (all but in the last row of a p that the
        # lanes do not divide): only they count MACs and scratchpad accesses.
        active = Signal(lanes)
        if lanes > 1:
            m.d.comb += active.eq(Mux(last_pf, (C(2, lanes + 1) << run["lane_last"]) - 1, (1 << lanes) - 1))
        else:
            m.d.comb += active.eq(1)
        m.d.comb += [
            issue.eq(running & advance & (~needs_word | (offset < occupancy))),
            ifmap_rd.addr.eq(rd_ptr),
            x.eq(Mux(needs_word, ifmap_rd.data, x_hold)),
            gated.eq(x == 0),
            free.eq(issue & step_done & ((tap < run["u"]) | last_col)),
            filter_rd.addr.eq(filter_addr[k.bit_length() - 1:] + (run_bank * bank_rows if banks > 1 else 0)),
            filter_rd.en.eq(issue & ~gated),
        ]

        def wrap_add(ptr, amount):
            total = ptr + amount
            return Mux(total >= depth_i, total - depth_i, total)

        free_ptr_next = Signal.like(free_ptr)
        m.d.comb += free_ptr_next.eq(Mux(free, wrap_add(free_ptr, run["q"]), free_ptr))
        m.d.sync += free_ptr.eq(free_ptr_next)

        with m.If(issue):
            m.d.sync += [pf.eq(pf + 1), filter_addr.eq(filter_addr + lanes)]
            with m.If(needs_word):
                m.d.sync += x_hold.eq(ifmap_rd.data)
            with m.If(last_pf):
                m.d.sync += [pf.eq(0), qc.eq(qc + 1), rd_ptr.eq(wrap_add(rd_ptr, 1)),
                             offset.eq(offset + 1)]
                with m.If(step_done):
                    m.d.sync += [qc.eq(0), tap.eq(tap + 1)]
                    with m.If(free):
                        m.d.sync += offset.eq(offset + 1 - run["q"])
            with m.If(output_done):
                m.d.sync += [tap.eq(0), filter_addr.eq(0), offset.eq(0), rd_ptr.eq(free_ptr_next),
                             col.eq(col + 1)]
                with m.If(last_col):
                    m.d.sync += [col.eq(0), row.eq(row + 1)]
                    with m.If(row == run["rows_last"]):
                        m.d.comb += finish.eq(1)
                        m.d.sync += row.eq(0)
                        if banks > 1:
                            with m.If(~self.keep):
                                m.d.sync += run_bank.eq(run_bank + 1)

        m.d.comb += [
            self.ifmap.ready.eq((occupancy < depth_i) | free),
            ifmap_wr.addr.eq(wr_ptr),
            ifmap_wr.data.eq(self.ifmap.payload),
            ifmap_wr.en.eq(self.ifmap.valid & self.ifmap.ready),
        ]
        with m.If(ifmap_wr.en):
            m.d.sync += wr_ptr.eq(wrap_add(wr_ptr, 1))
        m.d.sync += occupancy.eq(occupancy + ifmap_wr.en - Mux(free, run["q"], 0))

        # Pipeline: issue (scratchpad reads) -> [weight register] -> multiply -> accumulate,
        # `lanes` MACs side by side. A zero ifmap gates the filter read and the MACs; the slot
        # still passes so the timing does not depend on data.
        groups = k // lanes     # lane rows per filter spad row
        tags = [("pf", len(pf)), ("gated", 1), ("first", 1), ("last", 1), ("acc", 1), ("active", lanes)]
        if groups > 1:
            tags.append(("group", (groups - 1).bit_length()))
        if lanes > 1:
            tags.append(("lane_last", shift))
        st1 = {name: Signal(width, name=f"st1_{name}") for name, width in tags}
        st2 = {name: Signal(width, name=f"st2_{name}") for name, width in tags}
        st1_valid, st2_valid = Signal(), Signal()
        st1_x = Signal(signed(c.ifmap_width))
        products = Signal(data.ArrayLayout(signed(c.ifmap_width + c.weight_width), lanes))

        weights = filter_rd.data.as_value().word_select(st1["group"], lanes * c.weight_width) \
            if groups > 1 else filter_rd.data.as_value()
        # The multipliers' operands: the read weights and their step, or with weight_register
        # both a stage later (a block RAM without output register is slow to its data).
        mul = {"valid": st1_valid, "x": st1_x, "weights": weights, **st1}
        if c.weight_register:
            mul = {"valid": Signal(name="wr_valid"), "x": Signal.like(st1_x, name="wr_x"),
                   "weights": Signal(len(weights), name="wr_weights"),
                   **{name: Signal(width, name=f"wr_{name}") for name, width in tags}}
        # The output FIFO: psum_fifo_depth rows of lanes, each with the last lane that holds a
        # filter. A column's rows come one a cycle and leave a psum a cycle.
        m.submodules.local = local = fifo.SyncFIFO(width=lanes * c.psum_width + 1 + shift,
                                                   depth=c.psum_fifo_depth)
        m.d.comb += advance.eq(~(st2_valid & st2["last"] & ~local.w_rdy))
        with m.If(advance):
            m.d.sync += [
                st1_valid.eq(issue), st1_x.eq(x),
                st1["pf"].eq(pf), st1["gated"].eq(gated), st1["first"].eq(first_step),
                st1["last"].eq(last_step), st1["acc"].eq(run["accumulate"]),
                st1["active"].eq(active),
                st2_valid.eq(mul["valid"]),
            ]
            if groups > 1:
                m.d.sync += st1["group"].eq(filter_addr[shift:k.bit_length() - 1])
            if lanes > 1:
                m.d.sync += st1["lane_last"].eq(Mux(last_pf, run["lane_last"], lanes - 1))
            if c.weight_register:
                m.d.sync += [mul["valid"].eq(st1_valid), mul["x"].eq(st1_x), mul["weights"].eq(weights)]
                m.d.sync += [mul[name].eq(st1[name]) for name, _ in tags]
            # Gated: zero, not x * w (the idle filter read may hold X in a 4-state simulation).
            m.d.sync += [products[j].eq(Mux(mul["gated"], 0,
                                            mul["x"] * mul["weights"].word_select(j, c.weight_width).as_signed()))
                         for j in range(lanes)]
            m.d.sync += [st2[name].eq(mul[name]) for name, _ in tags]

        commit = st2_valid & advance
        totals = Signal(data.ArrayLayout(signed(c.psum_width), lanes))
        m.d.comb += [totals[j].eq(Mux(st2["first"], 0, psum_rd.data[j]) + products[j]) for j in range(lanes)]
        m.d.comb += [
            psum_rd.addr.eq(st2["pf"]),
            psum_wr.addr.eq(st2["pf"]),
            psum_wr.data.eq(totals),
            psum_wr.en.eq(commit & ~st2["last"] & ~(st2["gated"] & ~st2["first"])),
            local.w_data.eq(Cat(totals, st2["acc"], st2["lane_last"] if lanes > 1 else C(0, 0))),
            local.w_en.eq(commit & st2["last"]),
        ]

        # Output: the psums of a row of lanes one at a time, each plus the incoming psum, then
        # a registered FIFO so neither valid nor ready passes combinationally along a column.
        m.submodules.out = out = fifo.SyncFIFO(width=c.psum_width, depth=2)
        local_acc = local.r_data[lanes * c.psum_width]
        send = local.r_rdy & out.w_rdy & (~local_acc | self.ipsum.valid)
        if lanes > 1:
            lane = Signal(shift)     # the lane of the FIFO head sent next
            local_sum = local.r_data[:lanes * c.psum_width].word_select(lane, c.psum_width).as_signed()
            head_done = lane == local.r_data[lanes * c.psum_width + 1:]
            with m.If(send):
                m.d.sync += lane.eq(Mux(head_done, 0, lane + 1))
        else:
            local_sum, head_done = local.r_data[:c.psum_width].as_signed(), C(1)
        m.d.comb += [
            self.ipsum.ready.eq(local.r_rdy & out.w_rdy & local_acc),
            out.w_data.eq(local_sum + Mux(local_acc, self.ipsum.payload, 0)),
            out.w_en.eq(send),
            local.r_en.eq(send & head_done),
            self.opsum.valid.eq(out.r_rdy),
            self.opsum.payload.eq(out.r_data),
            out.r_en.eq(self.opsum.ready),
            self.idle.eq(~full.any() & (load_row == 0) & ~(st1_valid | mul["valid"] | st2_valid)
                         & ~local.r_rdy & ~out.r_rdy),
        ]

        events = self.events
        m.d.comb += [
            events.mac.eq(Mux(issue & ~gated, active, 0)),
            events.gated_mac.eq(Mux(issue & gated, active, 0)),
            events.filter_read.eq(Mux(issue & ~gated, active, 0)),
            events.filter_write.eq(written),
            events.ifmap_read.eq(issue & needs_word),
            events.ifmap_write.eq(ifmap_wr.en),
            events.psum_read.eq(Mux(commit & ~st2["first"] & ~(st2["gated"] & ~st2["last"]), st2["active"], 0)),
            events.psum_write.eq(Mux(psum_wr.en, st2["active"], 0)),
        ]

        if self._counters:
            m.submodules.counters = counters = EventCounters(event_lanes(c), width=c.counter_width)
            m.d.comb += counters.clear.eq(self.clear)
            for name in PE_EVENTS:
                m.d.comb += [getattr(counters.events, name).eq(getattr(events, name)),
                             getattr(self.counts, name).eq(getattr(counters.counts, name))]
        return m
