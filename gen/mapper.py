"""The mapper: places a convolution layer on the PE array with the row-stationary dataflow.

The layer's work splits into **reduction terms** and **outputs**. A reduction term is one
(channel block ``cb`` of q channels, filter row ``r``, filter column segment ``sb``); an output
is one (group ``g``, filter block ``mb`` of p filters, ofmap row ``e``) over all N images. A
PE holds one term for one output: it convolves filter row ``r`` (columns of segment ``sb``) of
p filters x q channels with ifmap row ``e*U + r`` of each image. A **chain** of vertically
adjacent PEs sums consecutive terms of one output (psums flow up the column); the array holds
``array_cols`` columns of ``array_rows // chain`` chains each. A layer whose terms outnumber a
chain is **folded**: its terms split into chunks whose psums meet in the global buffer. Chains
beyond what a layer needs **replicate** the set over more outputs.

Among legal (p, q, segment width, chain length), the mapper picks the fewest predicted
cycles, then the least energy by the brief's access-cost model; with a ``tolerance``, the
least energy among the mappings within that fraction of the fewest cycles.
"""

from collections import Counter, namedtuple
from dataclasses import dataclass, replace
from functools import cached_property
from math import ceil

from .config import PEConfig
from .layer import ConvLayer
from .allocation import allocate, ifmap_elements, pass_words
from .dataflows import COSTS


__all__ = ["Mapping", "map_layer", "check_tolerance"]


#: A pass's span (:meth:`Mapping.pass_timing`).
PassTiming = namedtuple("PassTiming", "last_mac last_psum words_i words_o")

#: :attr:`Mapping._shared` of the mappings costed lately, by their order of outputs.
_SHARED = {}


def _divisors(n, limit):
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


@dataclass(frozen=True)
class Mapping:
    """One legal placement of ``layer`` on the array of ``config``."""

    config: object
    layer: ConvLayer
    p: int      # filters per PE
    q: int      # channels per PE
    seg: int    # filter columns per PE (S split into S // seg segments)
    chain: int  # PEs per chain (reduction terms summed in the array per pass)
    images: int = None  # images per pass (divides N; default all): the passes repeat per block
    e_block: int = None  # output rows taken for every filter block before the next rows (default E)
    aligned: bool = False  # a pass never splits a filter block's run of output rows
    # Passes of the same filter blocks at the same chain slots, over e_block rows each, the
    # row blocks of one set of filter blocks in turn: the PEs keep their filters across them.
    stationary: bool = False
    # Psum buffers (:func:`~rowstation.gen.allocation.allocate`): 2, the next tile computing
    # while the last one's psums are stored; 1, tiles twice as large (fewer ifmap and filter
    # reloads), each waiting for the store before it; None, 2 where they fit.
    psum_buffers: int = None

    @property
    def n(self):
        """Images a pass computes (each PE's row loop)."""
        return self.images or self.layer.N

    @property
    def blocks(self):
        """Image blocks: the passes run once per block of :attr:`n` images."""
        return self.layer.N // self.n

    # Work decomposition.

    @cached_property
    def terms(self):
        """Reduction terms (cb, r, sb) of one output."""
        L = self.layer
        return [(cb, r, sb) for cb in range((L.C // L.G) // self.q) for r in range(L.R)
                for sb in range(L.S // self.seg)]

    @property
    def set_blocks(self):
        """Filter blocks a stationary pass holds (one set)."""
        return min(self.chains_per_pass // (self.e_block or self.layer.E), (self.layer.M // self.layer.G) // self.p)

    def _runs(self):
        """(g, mb, first row, rows) of each run of a filter block's consecutive output rows, in
        :attr:`outputs` order: per group, blocks of ``e_block`` rows, each for every filter
        block; or, stationary, per set of filter blocks, the blocks of rows, each for every
        filter block of the set."""
        L = self.layer
        t, blocks = self.e_block or L.E, (L.M // L.G) // self.p
        if self.stationary:
            b = self.set_blocks
            return [(g, mb, e0, min(t, L.E - e0)) for g in range(L.G) for s in range(0, blocks, b)
                    for e0 in range(0, L.E, t) for mb in range(s, min(s + b, blocks))]
        return [(g, mb, e0, min(t, L.E - e0)) for g in range(L.G) for e0 in range(0, L.E, t)
                for mb in range(blocks)]

    @cached_property
    def _shared(self):
        """What depends only on the order of outputs and their grouping into passes (not on
        q, seg or the images), shared by the candidates of a search that have the same."""
        L = self.layer
        key = (L.G, L.M, L.E, self.p, self.e_block, self.aligned, self.stationary, self.chains_per_pass,
               self.config.array_rows // self.chain)
        if len(_SHARED) > 4096:
            _SHARED.clear()
        return _SHARED.setdefault(key, {})

    @property
    def outputs(self):
        """Outputs (g, mb, e), each p filters x F columns x N images, in the order passes take
        them (:meth:`_runs`). A pass of outputs of several filter blocks but fewer rows reads
        fewer ifmap rows and more filters."""
        shared = self._shared
        if "outputs" not in shared:
            shared["outputs"] = [(g, mb, e) for g, mb, e0, rows in self._runs() for e in range(e0, e0 + rows)]
        return shared["outputs"]

    @property
    def output_count(self):
        """``len(self.outputs)``, without listing them."""
        L = self.layer
        return L.G * ((L.M // L.G) // self.p) * L.E

    @property
    def term_count(self):
        """``len(self.terms)``, without listing them."""
        L = self.layer
        return ((L.C // L.G) // self.q) * L.R * (L.S // self.seg)

    @property
    def chunks(self):
        """Term chunks: the folds of one output's reduction."""
        return ceil(self.term_count / self.chain)

    @property
    def chains_per_pass(self):
        return self.config.array_cols * (self.config.array_rows // self.chain)

    @property
    def groups(self):
        """Pass groups: the consecutive outputs one pass computes, one per chain slot."""
        shared = self._shared
        if "groups" not in shared:
            shared["groups"] = self._pass_groups()
        return shared["groups"]

    def _pass_groups(self):
        n, outputs = self.chains_per_pass, self.output_count
        if self.stationary:     # a pass per set of filter blocks and block of rows
            groups, start, b, key = [], 0, self.set_blocks, None
            for g, mb, e0, rows in self._runs():
                if (g, mb // b, e0) != key:
                    groups.append(range(start, start))
                    key = (g, mb // b, e0)
                groups[-1] = range(groups[-1].start, start + rows)
                start += rows
            return groups
        if not self.aligned:
            return [range(start, min(start + n, outputs)) for start in range(0, outputs, n)]
        # A pass takes whole runs (:meth:`_runs`; a run longer than a pass takes several), so
        # the passes of one filter block read the same filters.
        groups, start = [], 0
        for _, _, _, rows in self._runs():
            for lo in range(start, start + rows, n):
                hi = min(lo + n, start + rows)
                if groups and hi - groups[-1].start <= n:
                    groups[-1] = range(groups[-1].start, hi)
                else:
                    groups.append(range(lo, hi))
            start += rows
        return groups

    @cached_property
    def most_rows(self):
        """The most distinct ifmap rows (per image, q channels each) a pass reads."""
        return max(self._distinct_rows(shape, k) for shape, _, _ in self._group_kinds
                   for k in range(self.chunks))

    @property
    def _group_shapes(self):
        """Per pass group: (its output rows e, as intervals per group g shifted to start at 0
        (the ifmap rows it reads depend only on these), and its filter blocks)."""
        shared = self._shared
        if "shapes" not in shared:
            shared["shapes"] = self._shapes()
        return shared["shapes"]

    def _shapes(self):
        shapes, every = [], self.outputs
        for outputs in self.groups:
            # (g, mb) -> e interval: a filter block's rows rise in output order.
            spans = {}
            for g, mb, e in every[outputs.start:outputs.stop]:
                span = spans.get((g, mb))
                if span is None:
                    spans[g, mb] = [e, e]
                else:
                    span[1] = e
            per_g = {}
            for (g, _), span in spans.items():
                per_g.setdefault(g, []).append(span)
            key = []
            for intervals in per_g.values():
                base = min(lo for lo, _ in intervals)
                key.append(tuple(sorted((lo - base, hi - base) for lo, hi in intervals)))
            shapes.append((tuple(key), len(spans)))
        return shapes

    @cached_property
    def _group_kinds(self):
        """(shape, filter blocks, outputs) of the pass groups, with how many groups have it."""
        return Counter((shape, blocks, len(outputs))
                       for (shape, blocks), outputs in zip(self._group_shapes, self.groups))

    @cached_property
    def allocation(self):
        """The global buffer :class:`~rowstation.gen.allocation.Allocation`, or None if no
        pass fits."""
        return allocate(self)

    @property
    def glb_words(self):
        """Global buffer words the largest pass needs on its own (ifmap rows and psums)."""
        return sum(pass_words(self))

    @property
    def _tile_groups(self):
        return self.allocation.tile_groups if self.allocation else 1

    def pass_order(self):
        """(group, chunk) of each pass: tile by tile (psums stay on chip through every fold),
        chunk by chunk, group by group; every other tile takes its chunks in reverse, so the
        ifmap rows (and filters) of the chunk that ends a tile serve the start of the next."""
        tile = self._tile_groups
        for first in range(0, len(self.groups), tile):
            for k in self._chunk_order(first // tile):
                for g in range(first, min(first + tile, len(self.groups))):
                    yield g, k

    def _chunk_order(self, tile):
        return range(self.chunks) if tile % 2 == 0 else range(self.chunks - 1, -1, -1)

    def first_chunk(self, g):
        """The chunk group ``g``'s passes start with: its chain bottoms take zeros."""
        return self._chunk_order(g // self._tile_groups)[0]

    @cached_property
    def plans(self):
        """The :class:`~rowstation.gen.program.PassPlan` of each pass."""
        from .program import pass_plans

        return pass_plans(self)

    def slots(self, g):
        """The chain slot of each output of pass group ``g``: in turn, or, stationary, the
        filter block's place in its set times ``e_block`` plus the row's in its block."""
        if not self.stationary:
            return range(len(self.groups[g]))
        t, b = self.e_block or self.layer.E, self.set_blocks
        return [(mb % b) * t + e % t for _, mb, e in (self.outputs[o] for o in self.groups[g])]

    @cached_property
    def passes(self):
        """Each pass: a list of (chain slot, output index, chunk index)."""
        return [[(slot, o, k) for slot, o in zip(self.slots(g), self.groups[g])] for g, k in self.pass_order()]

    def first_filter(self, output):
        """Index in M of the first of the p filters of ``output`` (g, mb, e)."""
        g, mb, _ = output
        return g * (self.layer.M // self.layer.G) + mb * self.p

    def chunk_terms(self, k):
        return self.terms[k * self.chain:(k + 1) * self.chain]

    def pass_timing(self, rows, lane_chains):
        """:class:`PassTiming` of a pass over ``rows`` distinct ifmap rows whose busiest psum
        lane serves ``lane_chains`` chains: its last MAC slot and last psum returned, in cycles
        from its first MAC slot, fill and drain constants aside, and the words of its ifmap
        and psum networks' busiest lanes. Beyond its MAC slots or its busiest network: each
        ifmap lane sends column by column across its rows, so the last row's PEs wait for
        their first window's last tap (its first channel comes after the seg - 1 columns before
        it of every row of the lane and q - 1 more words) while their first output's earlier
        taps take (seg - 1) * q slots of each MAC lane row; and the tops finish each
        column's p psums together (each top's leave one a cycle after its last lane row), so
        after the last MAC the busiest lane returns the other tops' last column."""
        L, pe = self.layer, self.pe_config
        column = self.config.ifmap_lane_rows(rows) * self.q
        words_i = column * self.n * pe.row_length
        words_o = lane_chains * self.n * L.F * self.p
        startup = max(0, self.seg * column - (self.seg - 1) * self.q * pe.lane_rows - self.q)
        last_mac = max(pe.mac_cycles + startup, words_i, words_o)
        return PassTiming(last_mac, last_mac + pe.drain_cycles + (lane_chains - 1) * self.p, words_i, words_o)

    def lane_chains(self, slots):
        """Most of the chains at chain slots ``slots`` that one lane of the psum and output
        networks serves (a lane serves the PE columns ``col % psum_noc_lanes``)."""
        c = self.config
        if c.psum_noc_lanes == 1:
            return len(slots)
        per_column = c.array_rows // self.chain
        return c.psum_lane_chains(slot // per_column for slot in slots)

    def slot_position(self, slot):
        """(column, lowest array row) of chain slot ``slot``."""
        per_column = self.config.array_rows // self.chain
        return slot // per_column, (slot % per_column) * self.chain

    # PE setting, identical for every PE of every pass.

    @property
    def pe_stride(self):
        """Stride seen by a PE: for U > seg the ifmap feeder sends only the columns read."""
        return min(self.layer.U, self.seg)

    @cached_property
    def filter_transfers(self):
        """Filter network transfers of one filter block (``filter_noc_width`` weights each)."""
        return -(-self.pe_config.filter_words // self.config.filter_noc_width)

    @cached_property
    def pe_config(self):
        return PEConfig(s=self.seg, u=self.pe_stride, p=self.p, q=self.q, f=self.layer.F,
                        rows=self.n, accumulate=True, lanes=self.config.mac_lanes)

    def ifmap_columns(self, sb):
        """Padded-ifmap columns a PE of segment ``sb`` reads, in stream order."""
        L, s0 = self.layer, sb * self.seg
        if L.U <= self.seg:
            return list(range(s0, s0 + (L.F - 1) * L.U + self.seg))
        return [f * L.U + s0 + s for f in range(L.F) for s in range(self.seg)]

    # Predictions (a model: the RTL counters are the measurement).

    @cached_property
    def stats(self):
        c, L, pe = self.config, self.layer, self.pe_config
        mac_slots = pe.mac_cycles
        cycles = active = ifmap_words = psum_words = opsum_words = 0
        lanes = {}    # chains a pass's busiest lane serves, by the pass's chain count (slots in turn)

        def lane_chains(g, count):
            if self.stationary:
                return self.lane_chains(self.slots(g))
            if count not in lanes:
                lanes[count] = self.lane_chains(range(count))
            return lanes[count]

        kinds = [(shape, len(group), lane_chains(g, len(group)))
                 for g, ((shape, _), group) in enumerate(zip(self._group_shapes, self.groups))]
        # Passes of one shape, fold and filter stream cost the same: tiles of the same groups'
        # kinds and filter streams run alike in every fold and block of images, but for the
        # first pass of a later block (it may keep the last pass's filters).
        (tiles, wrapped, boundaries), terms = self._filter_counts, self._fold_terms
        runs = Counter()
        for signature, count in Counter(tuple((kinds[g], f) for g, f in zip(groups, streams))
                                        for groups, streams in tiles).items():
            for k, t in enumerate(terms):
                for kind, f in signature:
                    runs[kind, k, t * f] += count * self.blocks
        runs[kinds[0], 0, terms[0] * tiles[0][1][0]] -= self.blocks - 1
        runs[kinds[0], 0, terms[0] * wrapped] += self.blocks - 1
        for g, k, streamed, after in boundaries:
            runs[kinds[g], k, terms[k] * streamed] -= self.blocks
            runs[kinds[g], k, terms[k] * after] += self.blocks
        timings = {}
        for ((shape, outputs, lane_chains), k, entries), count in runs.items():
            key = (self._distinct_rows(shape, k), lane_chains)
            if key not in timings:
                timings[key] = self.pass_timing(*key)
            timing = timings[key]
            words_o = outputs * self.n * L.F * self.p   # the output network returns every psum
            # Each lane of the ifmap, psum and output networks carries one element per
            # transfer, the filter network filter_noc_width; with two filter banks
            # the next pass's weights load meanwhile. A first fold's chain bottoms take zeros,
            # not psum network words.
            busy, transfers_f = timing.last_psum, entries * self.filter_transfers
            cycles += count * (c.pe_latency + 2 * self.chain + (max(busy, transfers_f) if c.filter_banks > 1
                                                              else busy + transfers_f))
            active += count * outputs * terms[k]
            ifmap_words += count * key[0] * self.q * self.n * pe.row_length    # every lane's
            # Fold 0 stands for each group's first fold (the chunk it starts with): the same
            # groups' kinds run in every fold, so the totals are the same.
            psum_words += count * words_o if k else 0
            opsum_words += count * words_o
        passes = len(self.groups) * self.chunks * self.blocks
        filter_words = (sum(terms) * sum(sum(streams) for _, streams in tiles) * self.blocks
                        + terms[0] * (wrapped - tiles[0][1][0]) * (self.blocks - 1)
                        + sum(terms[k] * (after - streamed) for _, k, streamed, after in boundaries) * self.blocks
                        ) * pe.filter_words
        if self.psum_buffers == 1 or self.allocation is not None and self.allocation.psum_buffers == 1:
            cycles += self.store_wait
        active_pe_cycles = active * mac_slots
        spad = L.macs + L.macs // self.p + 2 * L.macs   # filter read, ifmap read, psum read+write
        glb = filter_words + ifmap_words + psum_words + opsum_words
        # Weights read again, and a stationary mapping's ifmap once per set of filter blocks
        # where the row cache cannot hold a group's rows.
        dram = L.compulsory() + filter_words - L.weight_count + (self._ifmap_sweeps - 1) * L.N * L.C * L.H * L.W
        energy = (COSTS["alu"] * L.macs + COSTS["rf"] * spad + COSTS["noc"] * glb + COSTS["glb"] * glb
                  + COSTS["dram"] * dram)
        return {
            "passes": passes, "cycles": cycles, "macs": L.macs,
            "pe_utilization": L.macs / (c.peak_macs * cycles),
            "active_pe_fraction": active_pe_cycles / (c.pe_count * passes * mac_slots),
            "filter_noc_words": filter_words, "ifmap_noc_words": ifmap_words,
            "psum_noc_words": psum_words, "opsum_noc_words": opsum_words,
            "dram_words_compulsory": dram, "energy": energy,
        }

    @property
    def keeps_filters(self):
        """Whether consecutive passes can share filters: a single fold, or tiles of several
        groups (a stationary mapping is worth it only then)."""
        return self.chunks == 1 or (self.allocation is not None and self.allocation.tile_groups > 1)

    @property
    def _ifmap_sweeps(self):
        """How often the passes read the ifmap through (a stationary mapping: once per set of
        filter blocks, unless the row cache holds a group's whole ifmap)."""
        L, a = self.layer, self.allocation
        if not self.stationary or a is None:
            return 1
        cached = a.ifmap_buffers * a.ifmap_words * self.config.glb_lanes(self.config.ifmap_width)
        if cached >= ifmap_elements(self, (L.C // L.G // self.q) * (L.H + 2 * L.P)):
            return 1
        return ceil((L.M // L.G) // self.p / self.set_blocks)

    @cached_property
    def _fold_terms(self):
        """Terms of each fold (chunk)."""
        return [len(self.chunk_terms(k)) for k in range(self.chunks)]

    @cached_property
    def _filter_counts(self):
        """Per tile: its pass groups and, per group, the filter blocks per term that its pass
        streams in every fold; the first group's when a block of images follows another; and
        per later tile (first group, fold, blocks, blocks in the fold the tile before ended with).
        Each array row gets each block its PEs need once, but none for the PEs that hold it
        from the pass before (:func:`~rowstation.gen.program.kept_filters`: the same chain
        slot, output filter block and fold)."""
        per_column = self.config.array_rows // self.chain
        layouts = self._shared.setdefault("layouts", {})

        def layout(g):
            if g not in layouts:
                layouts[g] = {slot: (slot % per_column, self.outputs[o][:2])
                              for slot, o in zip(self.slots(g), self.groups[g])}
            return layouts[g]

        freshes = self._shared.setdefault("fresh", {})

        def fresh(before, g):      # row blocks to stream after group ``before`` in the same fold
            if (before, g) not in freshes:
                held = layout(before) if before is not None else {}
                freshes[before, g] = len({at for slot, at in layout(g).items() if held.get(slot) != at})
            return freshes[before, g]

        # A pass follows the one before in its fold within a tile; across tiles and blocks of
        # images in every fold when there is a single one, else in the fold that ends one tile
        # and starts the next (:meth:`pass_order`).
        tile = self._tile_groups
        single, count, tiles, boundaries = self.chunks == 1, len(self.groups), [], []
        for first in range(0, count, tile):
            groups = range(first, min(first + tile, count))
            streamed = fresh(first - 1 if single and first else None, first)
            tiles.append((groups, [streamed] + [fresh(g - 1, g) for g in groups[1:]]))
            if first and not single:
                boundaries.append((first, self.first_chunk(first), streamed, fresh(first - 1, first)))
        wraps = single or self._chunk_order((count - 1) // tile)[-1] == 0
        return tiles, fresh(count - 1 if wraps else None, 0), boundaries

    @cached_property
    def _chunk_kinds(self):
        """Per chunk: its filter-row spans (r0, r1) with how many (cb, sb) of its terms have
        each; chunks of one kind read the same rows of a group."""
        kinds = []
        for k in range(self.chunks):
            rows = {}  # (cb, sb) -> (r0, r1), contiguous within a chunk
            for cb, r, sb in self.chunk_terms(k):
                r0, r1 = rows.get((cb, sb), (r, r))
                rows[(cb, sb)] = (min(r0, r), max(r1, r))
            kinds.append(tuple(sorted(Counter(rows.values()).items())))
        return kinds

    @cached_property
    def _rows_cache(self):
        return {}

    def _distinct_rows(self, shape, k):
        """Distinct ifmap rows (g, cb, e*U + r, sb) of a group of output rows ``shape`` (see
        :attr:`_group_shapes`) in chunk ``k``."""
        L = self.layer
        kind = self._chunk_kinds[k]
        key = (shape, kind)
        if key in self._rows_cache:
            return self._rows_cache[key]
        total = 0
        for spans in shape:
            for (r0, r1), count in kind:
                if L.U > r1 - r0 + 1:  # rows of different e never coincide
                    total += count * sum(hi - lo + 1 for lo, hi in spans) * (r1 - r0 + 1)
                    continue
                end, rows = -1, 0
                for lo, hi in sorted((lo * L.U + r0, hi * L.U + r1) for lo, hi in spans):
                    rows += max(0, hi - max(lo, end + 1) + 1)
                    end = max(end, hi)
                total += count * rows
        self._rows_cache[key] = total
        return total

    @cached_property
    def lower_bound(self):
        """Cycles the estimate cannot beat: per pass its MAC slots and the busiest lane's last
        column, or the psums that lane returns, whichever is more (the busiest lane serving at
        least an even share of the pass's chains), filter load and the first windows excluded;
        with one psum buffer, a cycle per output for the stores that no pass overlaps."""
        L, lanes, pe = self.layer, self.config.psum_noc_lanes, self.pe_config
        slots, bounds = pe.mac_cycles + pe.drain_cycles, {}

        def bound(chains):
            if chains not in bounds:
                share = -(-chains // lanes)
                bounds[chains] = max(slots + (share - 1) * self.p, share * self.n * L.F * self.p)
            return bounds[chains]

        def sizes(total, size):    # (size, count) of the blocks of ``size`` that cover ``total``
            return [(size, total // size)] + ([(total % size, 1)] if total % size else [])

        if self.stationary:     # a pass per set of filter blocks and block of rows
            blocks = (L.M // L.G) // self.p
            passes = [(bound(b * t), L.G * nb * nt) for b, nb in sizes(blocks, self.set_blocks)
                      for t, nt in sizes(L.E, self.e_block or L.E)]
        elif self.aligned:
            passes = [(bound(len(group)), 1) for group in self.groups]
        else:
            passes = [(bound(chains), count) for chains, count in sizes(self.output_count, self.chains_per_pass)]
        per_pass = self.config.pe_latency + 2 * self.chain
        return (self.blocks * self.chunks * sum(count * (cycles + per_pass) for cycles, count in passes)
                + (self.store_wait if self.psum_buffers == 1 else 0))

    @property
    def store_wait(self):
        """Cycles the tiles wait for the stores before them with one psum buffer (no pass
        overlaps a store): one per output."""
        L = self.layer
        return L.N * L.M * L.E * L.F

    @cached_property
    def modelled(self):
        """The performance model's cycles and external memory words: one block of images
        compiled and replayed, times the blocks."""
        from .performance import predict_cycles
        from .program import compile_layer

        block = _block(self)
        program = compile_layer(block, check_storage=False)
        return (predict_cycles(block, program) * self.blocks,
                (program.dram_reads + program.dram_writes) * self.blocks)

    def describe(self):
        L, st = self.layer, self.stats
        used = max(len(jobs) for jobs in self.passes) * self.chain
        lines = [
            f"layer      {L}  (E={L.E}, F={L.F}, {L.macs} MACs)",
            f"per PE     p={self.p} filters x q={self.q} channels x {self.seg} of S={L.S} taps, "
            f"stride {self.pe_stride}; spads {self.pe_config.filter_words}/{self.q * self.seg}/{self.p} words",
            f"sets       {self.term_count} reduction terms per output in chains of {self.chain} "
            f"({self.chunks} fold{'s' if self.chunks > 1 else ''} through the GLB); "
            f"{self.chains_per_pass} chains per pass; {len(self.outputs)} outputs",
            f"order      {self.e_block or L.E} output rows for every filter block in turn, passes "
            + ("of whole runs of a filter block's rows" if self.aligned else "packed with outputs")
            if not self.stationary else
            f"order      {self.set_blocks} filter blocks x {self.e_block or L.E} output rows per pass at fixed "
            f"chain slots, the row blocks of each set of filter blocks in turn (PEs keep their filters)",
            f"passes     {st['passes']}, up to {used} of {self.config.pe_count} PEs active",
            f"estimate   {st['cycles']} cycles for the search, PE utilization {st['pe_utilization']:.1%} "
            f"(active PEs {st['active_pe_fraction']:.1%} of the array during MACs)",
            f"traffic    filter {st['filter_noc_words']}, ifmap {st['ifmap_noc_words']}, "
            f"psum {st['psum_noc_words']} NoC words; DRAM compulsory {st['dram_words_compulsory']} words",
            f"GLB        largest pass {self.glb_words} of {self.config.glb_words} "
            f"words (ifmap rows and psums)" + (
                f"; {a.ifmap_buffers} ifmap and {a.psum_buffers} psum buffer{'s' if a.psum_buffers > 1 else ''}, "
                f"tiles of {a.tile_groups} pass group{'s' if a.tile_groups > 1 else ''}" if (a := self.allocation) else ""),
        ]
        return "\n".join(lines)


def candidates(config, layer, images=None):
    """Every legal mapping of ``layer`` on ``config`` with ``images`` images per pass."""
    Cg, Mg = layer.C // layer.G, layer.M // layer.G
    found, lanes = [], config.mac_lanes
    for seg in _divisors(layer.S, config.max_filter_width):
        for q in _divisors(Cg, config.ifmap_spad_depth // seg):
            # p filters take whole rows of MAC lanes in the filter spad.
            for p in _divisors(Mg, min(config.psum_spad_depth, config.filter_spad_depth // (q * seg) // lanes * lanes)):
                # The fewest folds, balanced: a shorter chain only adds passes and GLB traffic.
                terms = (Cg // q) * layer.R * (layer.S // seg)
                chain = ceil(terms / ceil(terms / config.array_rows))
                # Passes over fewer output rows of several filter blocks.
                per_pass = config.array_cols * (config.array_rows // chain)
                blocks = [None] + [e_block for e_block in sorted({ceil(per_pass / j) for j in range(2, 5)}, reverse=True)
                                   if e_block < layer.E and (Mg // p) > 1]
                # Passes packed with outputs, or with whole runs of a filter block's rows
                # (fewer filters per pass, some chains idle).
                found += [Mapping(config, layer, p, q, seg, chain, images, e_block, aligned)
                          for e_block in blocks for aligned in (False, True)]
                # Stationary passes: b filter blocks x t rows, t balanced over E.
                rows = {ceil(layer.E / ceil(layer.E / min(per_pass // b, layer.E)))
                        for b in range(1, min(per_pass, Mg // p) + 1)}
                found += [Mapping(config, layer, p, q, seg, chain, images, t if t < layer.E else None,
                                  stationary=True) for t in sorted(rows, reverse=True)]
    # Each also with one psum buffer: tiles twice as large for a store that no pass overlaps.
    return found + [replace(m, psum_buffers=1) for m in found]


def map_layer(config, layer, *, tolerance=0.0):
    """The best legal mapping, or ValueError naming the limit the layer exceeds.

    Mappings within ``tolerance`` (a fraction) of the fewest cycles count as equally fast:
    among them the search takes the least energy (external memory traffic weighs most), and
    among the image block sizes the fewest external memory words. The images of a batch may
    share each pass (their filters are reused) or run in blocks of fewer images, the passes
    repeating per block: the best mapping of each block size that fits the global buffer is
    modelled, in the order of the search's estimates, until an estimate exceeds the fewest
    modelled cycles (within the tolerance); then the fewest modelled cycles win (within the
    tolerance, the fewest external memory words), then the larger block. With one block size
    (batch 1) the replays go to its candidates within LONG_MARGIN instead."""
    check_tolerance(tolerance)
    if not isinstance(layer, ConvLayer):
        raise TypeError(f"layer must be a ConvLayer, not {layer!r}")
    for name, value in (("F", layer.F), ("padded H", layer.H + 2 * layer.P),
                        ("padded W", layer.W + 2 * layer.P)):
        if value > config.max_dim:
            raise ValueError(f"layer {name} = {value} exceeds {config.max_dim}, the largest value of "
                             f"dim_width = {config.dim_width} bits")
    found, smallest = [], None
    blocks = sorted((n for n in range(1, layer.N + 1) if layer.N % n == 0 and n <= config.max_dim), reverse=True)
    for images in blocks:
        mapping, words = _best(config, layer, images, tolerance, long_margin=LONG_MARGIN if len(blocks) == 1 else 0.0)
        if mapping is None:
            smallest = words
        else:
            found.append(mapping)
    if not found:
        raise ValueError(f"no mapping of {layer} fits the global buffer: a pass needs at least "
                         f"{smallest} words, glb_banks x glb_bank_depth = {config.glb_banks} x "
                         f"{config.glb_bank_depth} = {config.glb_words}")
    if len(found) == 1:
        return found[0]
    # The search's estimate leaves out the loads, stores and instruction costs the model adds,
    # so it sits just below the model's cycles (1-4 % on AlexNet), as does the row cache's
    # bound (:func:`~rowstation.gen.program.load_bound`, which the estimate misses where the
    # cache holds few rows): block sizes are modelled in the order of the larger, until it
    # exceeds what the tolerance allows.
    bounds = [(_bound(m), -m.n, m) for m in found]
    modelled = []
    for bound, _, mapping in sorted(bounds, key=lambda entry: entry[:2]):
        if modelled and bound > _within(min(c for c, _, _ in modelled), tolerance):
            break
        modelled.append((*mapping.modelled, mapping))
    fewest = min(cycles for cycles, _, _ in modelled)
    return min((entry for entry in modelled if entry[0] <= _within(fewest, tolerance)),
               key=lambda entry: (entry[1], entry[0], -entry[2].n))[2]


def check_tolerance(tolerance):
    """A ValueError unless ``tolerance`` is a fraction in [0, 1)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a fraction in [0, 1), not {tolerance!r}")


def _within(cycles, tolerance):
    """The most cycles that count as equally fast as ``cycles``."""
    return cycles * (1 + tolerance)


def _block(mapping):
    """``mapping`` for one block of its images."""
    return replace(mapping, layer=replace(mapping.layer, N=mapping.n), images=None)


def _bound(mapping):
    """Cycles below the model's for ``mapping``: the larger of the search's estimate and the
    row cache's :func:`~rowstation.gen.program.load_bound`."""
    from .program import load_bound

    return max(mapping.stats["cycles"], load_bound(_block(mapping)) * mapping.blocks)


#: Estimated cycles of the candidates the search may compile and replay in the model to choose
#: among (the replay takes time in proportion): short layers, where the estimate's fixed costs
#: weigh most, get the model's fastest among those within MODEL_MARGIN; long ones (AlexNet's)
#: among those within LONG_MARGIN at batch 1, the estimate's otherwise.
MODEL_BUDGET = 200_000
#: How far over the fewest estimated cycles a candidate is still modelled.
MODEL_MARGIN = 0.15
#: Beyond MODEL_BUDGET, when a layer has one block size of images to map (its replays are all
#: the search makes), the candidates within LONG_MARGIN of the fewest estimated cycles, at most
#: LONG_CANDIDATES of them, are modelled: the estimate's own error on AlexNet is about this.
LONG_MARGIN = 0.01
LONG_CANDIDATES = 3


def _modelled_cycles(mapping):
    """The model's cycles for ``mapping``, or None when its program cannot be built (its
    arrangement of the weights takes the tensors beyond the external memory's addresses)."""
    try:
        return mapping.modelled[0]
    except ValueError:
        return None


def _best(config, layer, images, tolerance=0.0, *, long_margin=0.0):
    """The best mapping with ``images`` per pass, or (None, the fewest words a pass needs):
    the least energy among the mappings within the tolerance of the fewest estimated cycles;
    without a tolerance, the fewest modelled cycles among the candidates within MODEL_MARGIN
    of the fewest estimated, as many as MODEL_BUDGET allows in the order of their estimates,
    or, beyond it, within ``long_margin``, at most LONG_CANDIDATES."""
    def reach():        # how far over the fewest estimated cycles candidates stay in the running
        if tolerance:
            return tolerance
        return MODEL_MARGIN if fewest <= MODEL_BUDGET else long_margin

    # Branch and bound: a pass takes at least its MAC slots, so most candidates are never costed.
    fitting, fewest, smallest = [], None, None
    for mapping in sorted(candidates(config, layer, images), key=lambda m: m.lower_bound):
        if fewest is not None and mapping.lower_bound > _within(fewest, reach()):
            break
        if mapping.allocation is None:
            smallest = mapping.glb_words if smallest is None else min(smallest, mapping.glb_words)
            continue
        if mapping.stationary and not mapping.keeps_filters:
            continue
        fitting.append(mapping)
        fewest = min(fewest or mapping.stats["cycles"], mapping.stats["cycles"])
    if not fitting:
        return None, smallest
    leanest = sorted((m for m in fitting if m.stats["cycles"] <= _within(fewest, tolerance)),
                     key=lambda m: (m.stats["energy"], m.stats["cycles"]))
    if not tolerance:
        # The estimate leaves out costs the model counts (register writes, loads, stores),
        # which can reorder close candidates: most of a short layer's, a long layer's within
        # the estimate's own error.
        short = fewest <= MODEL_BUDGET
        if not (short or long_margin):
            return leanest[0], smallest
        close, budget = [leanest[0]], MODEL_BUDGET - fewest
        for m in sorted(fitting, key=lambda m: (m.stats["cycles"], m.stats["energy"])):
            if m.stats["cycles"] > _within(fewest, reach()) or (
                    m.stats["cycles"] > budget if short else len(close) == LONG_CANDIDATES):
                break
            if m is not leanest[0]:
                close.append(m)
                if short:
                    budget -= m.stats["cycles"]
        if len(close) == 1:
            return close[0], smallest
        timed = [(cycles, m) for m in close if (cycles := _modelled_cycles(m)) is not None]
        if not timed:
            return close[0], smallest
        return min(timed, key=lambda entry: (entry[0], entry[1].stats["energy"]))[1], smallest
    # Trading cycles for energy: the estimate leaves out the row cache's loads (more for some
    # mappings than others), so the leanest candidate whose bound is within the tolerance of
    # the fastest's wins.
    fastest = min(fitting, key=lambda m: (m.stats["cycles"], m.stats["energy"]))
    limit = _within(_bound(fastest), tolerance)
    return next((m for m in leanest if _bound(m) <= limit), fastest), smallest
