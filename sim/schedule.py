"""The words each network carries in every pass of a mapping, from the pass plans of
:func:`rowstation.gen.program.pass_plans` (NumPy only).

Row 0 of the array is the top; a chain's first term sits at its bottom. Filters: row ID = array
row, column ID = the filter block's index in that row (PEs of a row with the same block share
it). Ifmaps: one row ID, column ID = the ifmap row's index in the pass (PEs reading the same
row share it, the diagonal reuse of row stationary). Psums: unicast to chain bottoms. A PE with
no work gets the unused column ID.
"""

from dataclasses import dataclass, field

import numpy as np

from ..gen.program import pass_plans
from .dataflow import ifmap_rows, pe_streams
from .pe_model import filter_words, pe_events


__all__ = ["ArrayPass", "array_passes"]


@dataclass
class ArrayPass:
    """One pass: settings to apply, then words to send; psums in and out go through ``glb``."""

    mapping: object
    assign: dict                 # (row, col) -> (output, term)
    bottoms: list                # [((row, col), output index)] in feed order
    tops: dict                   # (row, col) of a chain top -> output index
    ids: dict = field(default_factory=dict)   # net -> (row_ids, col_ids)
    chain_bottom: list = None
    chain_top: list = None
    filter_words: list = None    # [(row tag, col tag, value)]
    ifmap_words: list = None
    events: dict = None          # exact event counts of all PEs in this pass

    @property
    def psum_count(self):
        L = self.mapping.layer
        return len(self.bottoms) * L.N * L.F * self.mapping.p

    def ipsum_words(self, glb):
        """Psums held for the chain bottoms, interleaved by (image, column) across chains."""
        L, p = self.mapping.layer, self.mapping.p
        words = []
        for n in range(L.N):
            for x in range(L.F):
                for (r, c), o in self.bottoms:
                    output = self.mapping.outputs[o]
                    m0, e = self.mapping.first_filter(output), output[2]
                    words += [(r, c, int(glb[n, m0 + pf, e, x])) for pf in range(p)]
        return words

    def store(self, glb, source, index, value):
        """Store the ``index``-th psum that chain top ``source`` returned."""
        L, p = self.mapping.layer, self.mapping.p
        output = self.mapping.outputs[self.tops[source]]
        n, rest = divmod(index, L.F * p)
        x, pf = divmod(rest, p)
        glb[n, self.mapping.first_filter(output) + pf, output[2], x] = value


def array_passes(mapping, x, w):
    """The passes of ``mapping`` for ifmap ``x`` and weights ``w``."""
    L = mapping.layer
    xp = np.pad(x, ((0, 0), (0, 0), (L.P, L.P), (L.P, L.P)))
    passes = []
    for plan in pass_plans(mapping):
        step = ArrayPass(mapping, plan.assign, plan.bottoms, plan.tops, plan.ids,
                         plan.chain_bottom, plan.chain_top)
        step.events = {}
        for output, term in plan.assign.values():
            _, data = pe_streams(mapping, xp, None, output, term)
            for name, value in pe_events(mapping.pe_config, data).items():
                step.events[name] = step.events.get(name, 0) + value
        step.filter_words = []
        for r, kid, (g, mb, cb, rr, sb) in plan.filters:
            block, _ = pe_streams(mapping, xp, w, (g, mb, 0), (cb, rr, sb))
            step.filter_words += [(r, kid, int(v)) for v in filter_words(block)]
        # Column by column across ifmap rows, so the PEs of a chain advance together.
        streams = [ifmap_rows(mapping, xp, g, cb, row, sb) for g, cb, row, sb in plan.ifmap_rows]
        step.ifmap_words = [(0, kid, int(data[n, qc, col]))
                            for n in range(L.N) for col in range(mapping.pe_config.row_length)
                            for kid, data in enumerate(streams) for qc in range(mapping.q)]
        passes.append(step)
    return passes
