"""The PE array: ``array_rows`` x ``array_cols`` PEs, their networks and local psum links.

Row 0 is the top. Each PE takes its incoming psum from the PE below or, at the bottom of a
chain, from the psum GIN; it sends its outgoing psum to the PE above or, at the top of a
chain, to the GON (Eyeriss's "psum from the GIN or from the PE below", set per pass).
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..gen.isa import ARRAY_EVENTS, NETWORKS, PE_EVENTS
from .counters import EventCounters
from .noc import GINWord, GONWord, GlobalInputNetwork, GlobalOutputNetwork
from .pe import PE, FilterWord, PEConfigSignature, event_lanes, pe_members


__all__ = ["PEArray", "ArrayControlSignature", "network_shape"]


def network_shape(config, net):
    """Payload shape carried by input network ``net``."""
    if net == "filt":
        return FilterWord(config)
    return signed({"ifmap": config.ifmap_width, "psum": config.psum_width}[net])


class ArrayControlSignature(wiring.Signature):
    """The array's per-pass control, driven by the controller: the PE setting (``cfg``), per
    network the row ID of each X-bus (``<net>_row_ids[row]``) and the column ID of each PE
    (``<net>_col_ids[row][col]``), per PE the chain links (``chain_bottom``: take the
    incoming psum from the psum network; ``chain_top``: send the outgoing psum to the GON;
    ``keep_filters``: the PE's filters serve the next pass too), and ``psum_zero``: chain
    bottoms take zeros instead (a first fold; the network is idle)."""

    def __init__(self, config):
        rows, cols = config.array_rows, config.array_cols
        members = {"cfg": Out(PEConfigSignature(config))}
        for net in NETWORKS:
            members[f"{net}_row_ids"] = Out(config.row_id_width).array(rows)
            members[f"{net}_col_ids"] = Out(config.col_id_width).array(rows, cols)
        members["chain_bottom"] = Out(1).array(rows, cols)
        members["chain_top"] = Out(1).array(rows, cols)
        members["keep_filters"] = Out(1).array(rows, cols)
        members["psum_zero"] = Out(1)
        super().__init__(members)


class PEArray(wiring.Component):
    """The PE array with its input networks (filt, ifmap, psum) and output network.

    ``ctrl`` (:class:`ArrayControlSignature`) sets the IDs, chain links and the PE setting
    shared by all PEs; a PE that should receive nothing gets a column ID no tag uses. The psum
    network and the output network have ``psum_noc_lanes`` lanes (``psum[lane]``,
    ``opsum[lane]``), lane ``l`` serving the PE columns ``col % psum_noc_lanes == l``: a chain
    lies in one column, so its bottom and top share a lane, and the lanes run independently.
    The ifmap network has ``ifmap_noc_lanes`` lanes (``ifmap[lane]``), each reaching every PE
    and carrying its own rows: the tags of one lane's words match no PE of another's.
    ``counts`` adds the events of all PEs (:data:`~rowstation.gen.isa.PE_EVENTS`) and counts
    :data:`~rowstation.gen.isa.ARRAY_EVENTS`.
    """

    def __init__(self, config, *, pe_module=None):
        """``pe_module``: instantiate a separately generated PE Verilog module of that name
        instead of elaborating every PE (see :func:`rowstation.hw.export.array_verilog`)."""
        self._config = config
        self._pe_module = pe_module
        rows, cols = config.array_rows, config.array_cols
        self.row_id_width, self.col_id_width = config.row_id_width, config.col_id_width
        members = {"ctrl": In(ArrayControlSignature(config))}
        for net in NETWORKS:
            word = In(stream.Signature(GINWord(network_shape(config, net), self.row_id_width,
                                               self.col_id_width)))
            members[net] = word.array(config.network_lanes(net)) if net != "filt" else word
        members.update({
            "opsum": Out(stream.Signature(GONWord(signed(config.psum_width), rows, cols))).array(
                config.psum_noc_lanes),
            "idle": Out(1),
            "unmatched": Out(1),
            "clear": In(1),
            "counts": Out(EventCounters.counts_signature(PE_EVENTS + ARRAY_EVENTS,
                                                         config.counter_width)),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c = self._config
        rows, cols = c.array_rows, c.array_cols

        ctrl = self.ctrl
        # The psum network and the GON have a lane per psum_noc_lanes, each serving the PE
        # columns col % lanes: gins[net][col] and gons[col] are the lanes of column col (one
        # network for the filter network), the PE at j of its lane's columns. Each lane of the
        # ifmap network reaches every PE; a PE's rows come on one lane (the lanes carry
        # different rows), so it takes whichever offers it a word.
        lane_columns = [[col for col in range(cols) if c.psum_lane(col) == lane]
                        for lane in range(c.psum_noc_lanes)]
        gins, unmatched = {}, []
        for net in NETWORKS:
            groups = lane_columns if net == "psum" else [list(range(cols))] * c.network_lanes(net)
            gins[net] = {col: [] for col in range(cols)}
            for lane, columns in enumerate(groups):
                gin = GlobalInputNetwork(rows=rows, cols=len(columns), payload_shape=network_shape(c, net),
                                         row_id_width=self.row_id_width, col_id_width=self.col_id_width)
                m.submodules[f"{net}_gin_{lane}" if net != "filt" else f"{net}_gin"] = gin
                stream_in = getattr(self, net)
                wiring.connect(m, wiring.flipped(stream_in[lane] if net != "filt" else stream_in), gin.i)
                for r in range(rows):
                    m.d.comb += gin.row_ids[r].eq(getattr(ctrl, f"{net}_row_ids")[r])
                    for j, col in enumerate(columns):
                        m.d.comb += gin.col_ids[r][j].eq(getattr(ctrl, f"{net}_col_ids")[r][col])
                for j, col in enumerate(columns):
                    gins[net][col].append((gin, j))
                unmatched.append(gin.unmatched)
        m.d.comb += self.unmatched.eq(Cat(unmatched).any())

        gons = {}
        for lane, columns in enumerate(lane_columns):
            gon = GlobalOutputNetwork(rows=rows, cols=cols, payload_shape=signed(c.psum_width),
                                      columns=columns)
            m.submodules[f"gon_{lane}"] = gon
            wiring.connect(m, gon.o, wiring.flipped(self.opsum[lane]))
            gons.update({col: (gon, j) for j, col in enumerate(columns)})

        lanes = event_lanes(c)
        events = {name: c.pe_count * lanes.get(name, 1) for name in PE_EVENTS + ("active_pe",)}
        events.update({name: 1 for name in ARRAY_EVENTS if name != "active_pe"})
        events["psum_transfers"] = events["opsum_transfers"] = c.psum_noc_lanes
        events["ifmap_transfers"] = c.ifmap_noc_lanes
        m.submodules.counters = counters = EventCounters(events, width=c.counter_width)
        m.d.comb += counters.clear.eq(self.clear)
        for name in events:
            m.d.comb += getattr(self.counts, name).eq(getattr(counters.counts, name))
        fired = lambda s: s.valid & s.ready
        m.d.comb += [
            counters.events.cycles.eq(1),
            counters.events.opsum_transfers.eq(Cat(fired(lane) for lane in self.opsum)),
        ]
        for net in NETWORKS:
            stream_in = getattr(self, net)
            m.d.comb += getattr(counters.events, f"{net}_transfers").eq(
                Cat(fired(lane) for lane in stream_in) if net != "filt" else fired(stream_in))

        pes = [[self._pe(m, c, f"pe_{r}_{col}") for col in range(cols)] for r in range(rows)]
        idles = []
        for r in range(rows):
            for col in range(cols):
                pe = pes[r][col]
                for name in PEConfigSignature(c).members:
                    m.d.comb += getattr(pe.cfg, name).eq(getattr(ctrl.cfg, name))
                m.d.comb += pe.keep.eq(ctrl.keep_filters[r][col])
                [(gin, j)] = gins["filt"][col]
                wiring.connect(m, gin.o[r][j], pe.filt)
                _merge(m, [gin.o[r][j] for gin, j in gins["ifmap"][col]], pe.ifmap)
                lane = r * cols + col
                for name in PE_EVENTS:
                    n = lanes[name]
                    m.d.comb += getattr(counters.events, name)[lane * n:(lane + 1) * n].eq(
                        getattr(pe.events, name))
                m.d.comb += counters.events.active_pe[lane].eq(~pe.idle)
                idles.append(pe.idle)

                # Incoming psum: the psum GIN at a chain's bottom, else the PE below.
                [(gin, j)] = gins["psum"][col]
                bottom, from_gin = ctrl.chain_bottom[r][col], gin.o[r][j]
                below = pes[r + 1][col] if r + 1 < rows else None
                below_valid = below.opsum.valid & ~ctrl.chain_top[r + 1][col] if below else 0
                zero = ctrl.psum_zero
                m.d.comb += [
                    pe.ipsum.valid.eq(Mux(bottom, from_gin.valid | zero, below_valid)),
                    pe.ipsum.payload.eq(Mux(bottom, Mux(zero, 0, from_gin.payload),
                                            below.opsum.payload if below else 0)),
                    from_gin.ready.eq(bottom & pe.ipsum.ready & ~zero),
                ]
                # Outgoing psum: the GON at a chain's top, else the PE above.
                gon, j = gons[col]
                top, to_gon = ctrl.chain_top[r][col], gon.i[r][j]
                above = pes[r - 1][col] if r > 0 else None
                above_ready = above.ipsum.ready & ~ctrl.chain_bottom[r - 1][col] if above else 0
                m.d.comb += [
                    to_gon.valid.eq(top & pe.opsum.valid),
                    to_gon.payload.eq(pe.opsum.payload),
                    pe.opsum.ready.eq(Mux(top, to_gon.ready, above_ready)),
                ]
        m.d.comb += self.idle.eq(Cat(*idles).all())
        return m

    def _pe(self, m, c, name):
        """A PE, or its interface wired to an instance of the external PE module."""
        if self._pe_module is None:
            m.submodules[name] = pe = PE(c)
            return pe
        signature = wiring.Signature(pe_members(c))
        ports = signature.create(path=(name,))
        connections = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for path, member, value in signature.flatten(ports):
            direction = "i" if member.flow == In else "o"
            connections[f"{direction}_{'__'.join(str(part) for part in path)}"] = value
        m.submodules[name] = Instance(self._pe_module, **connections)
        return ports


def _merge(m, lanes, sink):
    """Connect the streams ``lanes`` to ``sink``, which one lane at a time offers words
    (the first lane with a word goes first)."""
    if len(lanes) == 1:
        wiring.connect(m, lanes[0], sink)
        return
    earlier, payload = C(0), lanes[-1].payload
    for lane in lanes:
        m.d.comb += lane.ready.eq(sink.ready & ~earlier)
        earlier = earlier | lane.valid
    for lane in reversed(lanes[:-1]):
        payload = Mux(lane.valid, lane.payload, payload)
    m.d.comb += [sink.valid.eq(earlier), sink.payload.eq(payload)]
