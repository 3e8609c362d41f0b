import numpy as np
import pytest

from rowstation.gen import PEConfig, preset
from rowstation.hw.pe import FilterWord
from rowstation.sim.pe_model import filter_transfers
from rowstation.sim.stimulus import random_pe_pass

from pe_harness import expected, simulate_pe


TINY = preset("tiny")
# Operand widths 4, 8 and 16 bits with different scratchpad depths.
CONFIGS = {
    "w4": TINY.replace(ifmap_width=4, weight_width=4, psum_width=16, filter_spad_depth=24,
                       ifmap_spad_depth=8, psum_spad_depth=4, filter_noc_width=1),
    "w8": TINY,
    "w16": TINY.replace(ifmap_width=16, weight_width=16, psum_width=40, filter_spad_depth=64,
                        ifmap_spad_depth=16, psum_spad_depth=6, glb_bank_width=64, dram_width=64,
                        filter_noc_width=4),
}


# MAC lanes: two on tiny, four at 16 bits (a filter spad row holds one lane row) with a
# register between the filter spad and the multipliers.
LANE_CONFIGS = {
    "w8x2": TINY.replace(mac_lanes=2),
    "w16x4": CONFIGS["w16"].replace(mac_lanes=4, psum_spad_depth=8, weight_register=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_filter_transfers_pack_as_the_filter_word(name):
    """The testbenches' packing of filter transfers is the PE port's layout."""
    config = CONFIGS[name]
    k, width = config.filter_noc_width, config.weight_width
    layout = FilterWord(config)
    assert layout.size == k * width + k.bit_length() + 1
    words = list(range(-3, 2 * k))
    for value, start in zip(filter_transfers(config, words), range(0, len(words), k)):
        view = layout.from_bits(value)
        chunk = words[start:start + k]
        assert view.count == len(chunk) and view.last == (start + k >= len(words))
        assert [view.data[i] for i in range(len(chunk))] == chunk


def check(config, cfgs, *, seed, idle, stall, zeros=0.3):
    rng = np.random.default_rng(seed)
    passes = [(cfg.check(config), *random_pe_pass(config, cfg, rng=rng, zeros=zeros)) for cfg in cfgs]
    result = simulate_pe(config, passes, seed=seed, idle=idle, stall=stall)
    want, counts = expected(passes)
    np.testing.assert_array_equal(result["words"], want)
    assert result["counts"] == counts
    assert result["idle"]
    return result


SHAPES = [(1, 1, 1, 1), (3, 1, 2, 2), (3, 2, 1, 3), (4, 4, 2, 1), (2, 1, 3, 2), (4, 3, 2, 2)]


def fits(config, s, u, p, q):
    return p * q * s <= config.filter_spad_depth and q * s <= config.ifmap_spad_depth and p <= config.psum_spad_depth


@pytest.mark.parametrize("name,s,u,p,q", [(name, *shape) for name, config in CONFIGS.items()
                                          for shape in SHAPES if fits(config, *shape)])
def test_pe_matches_golden_under_stalls(name, s, u, p, q):
    config = CONFIGS[name]
    cfg = PEConfig(s=s, u=u, p=p, q=q, f=5, rows=2, accumulate=True)
    check(config, [cfg], seed=s * 100 + u * 10 + p + q, idle=0.3, stall=0.3)


@pytest.mark.parametrize("name", CONFIGS)
def test_pe_largest_filter_and_full_spads(name):
    """S up to the maximum, and spads filled exactly (q*s == ifmap spad, p*q*s == filter spad)."""
    config = CONFIGS[name]
    s = config.max_filter_width
    q = config.ifmap_spad_depth // s
    p = min(config.psum_spad_depth, config.filter_spad_depth // (q * s))
    cfgs = [PEConfig(s=s, u=1, p=p, q=q, f=3, rows=1),
            PEConfig(s=1, u=1, p=1, q=config.ifmap_spad_depth, f=4, rows=2, accumulate=True)]
    check(config, cfgs, seed=11, idle=0.2, stall=0.4)


def test_pe_back_to_back_passes_with_new_settings():
    cfgs = [PEConfig(s=3, u=1, p=2, q=2, f=4, rows=2),
            PEConfig(s=2, u=2, p=1, q=3, f=3, rows=1, accumulate=True),
            PEConfig(s=4, u=3, p=4, q=1, f=2, rows=3)]
    check(TINY, cfgs, seed=5, idle=0.5, stall=0.6, zeros=0.5)


def test_pe_all_zero_ifmap_is_gated():
    rng = np.random.default_rng(2)
    cfg = PEConfig(s=3, u=1, p=2, q=2, f=4, rows=1)
    weights, ifmap, _ = random_pe_pass(TINY, cfg, rng=rng)
    ifmap[:] = 0
    result = simulate_pe(TINY, [(cfg, weights, ifmap, None)])
    assert not result["words"].any()
    assert result["counts"]["mac"] == 0 == result["counts"]["filter_read"]
    assert result["counts"]["gated_mac"] == cfg.f * cfg.s * cfg.p * cfg.q


def timed_pass(config, cfg, *, seed):
    """One pass without stalls or zero ifmaps, its filters loaded first: the simulation's
    result, its psums checked against the golden model."""
    weights, ifmap, _ = random_pe_pass(config, cfg, rng=np.random.default_rng(seed))
    ifmap[ifmap == 0] = 1
    result = simulate_pe(config, [(cfg, weights, ifmap, None)], ifmap_after_filters=True)
    np.testing.assert_array_equal(result["words"], expected([(cfg, weights, ifmap, None)])[0])
    return result


@pytest.mark.parametrize("s,u,p,q,rows", [(1, 1, 1, 1, 1), (3, 1, 1, 1, 2), (3, 3, 2, 4, 1), (5, 2, 3, 2, 2),
                                          (1, 1, 2, 12, 2), (12, 12, 1, 1, 1)])
def test_pe_cycle_count(s, u, p, q, rows):
    """No stalls and no zeros: F*S*p*q cycles per row plus the fixed latency, from the first
    ifmap transfer to the last opsum transfer."""
    cfg = PEConfig(s=s, u=u, p=p, q=q, f=6, rows=rows).check(TINY)
    result = timed_pass(TINY, cfg, seed=1)
    first_ifmap = result["ifmap_cycles"][0]
    assert first_ifmap > result["filt_cycles"][-1]
    assert result["opsum_cycles"][-1] - first_ifmap == rows * cfg.f * s * p * q + TINY.pe_latency


@pytest.mark.parametrize("banks", [1, 2])
def test_pe_back_to_back_passes_with_one_or_two_filter_banks(banks):
    cfgs = [PEConfig(s=3, u=1, p=2, q=2, f=4, rows=2),
            PEConfig(s=2, u=2, p=1, q=3, f=3, rows=1, accumulate=True),
            PEConfig(s=4, u=3, p=4, q=1, f=2, rows=3)]
    check(TINY.replace(filter_banks=banks), cfgs, seed=9, idle=0.3, stall=0.5, zeros=0.3)


@pytest.mark.parametrize("banks", [1, 2])
def test_second_filter_bank_loads_the_next_pass_while_computing(banks):
    """With two banks the next pass's weights are all in before the current pass's last
    output; with one they wait for it."""
    config = TINY.replace(filter_banks=banks)
    rng = np.random.default_rng(3)
    cfg = PEConfig(s=3, u=1, p=4, q=4, f=6, rows=1).check(config)
    passes = [(cfg, *random_pe_pass(config, cfg, rng=rng)) for _ in range(2)]
    result = simulate_pe(config, passes)
    np.testing.assert_array_equal(result["words"], expected(passes)[0])
    second_loaded = result["filt_cycles"][-1]
    first_done = result["opsum_cycles"][cfg.rows * cfg.f * cfg.p - 1]
    assert (second_loaded < first_done) == (banks == 2)


def lane_pass(config, s, u, p, q, f=5, rows=2, accumulate=True):
    return PEConfig(s=s, u=u, p=p, q=q, f=f, rows=rows, accumulate=accumulate, lanes=config.mac_lanes).check(config)


#: p a multiple of the lanes and not (the last lane row partly idle), one filter, a step
#: shorter than an output's psums (the PE sends one a cycle).
LANE_SHAPES = [(3, 1, 2, 2), (3, 1, 3, 2), (1, 1, 5, 1), (2, 2, 8, 3), (4, 1, 1, 3), (1, 1, 8, 1)]


@pytest.mark.parametrize("name,shape", [(name, shape) for name in LANE_CONFIGS for shape in LANE_SHAPES])
def test_pe_mac_lanes_match_golden_under_stalls(name, shape):
    """Lanes compute p filters side by side: the same psums, in the same order, and the same
    event counts (idle lanes count nothing) as one MAC would."""
    config = LANE_CONFIGS[name]
    check(config, [lane_pass(config, *shape)], seed=sum(shape), idle=0.3, stall=0.4)


@pytest.mark.parametrize("name", LANE_CONFIGS)
@pytest.mark.parametrize("shape", LANE_SHAPES + [(3, 1, 8, 1), (1, 1, 8, 2)])
def test_pe_mac_lanes_cycle_count(name, shape):
    """No stalls: the setting's MAC cycles (a cycle per lane row and step, or p per output
    when the psums leave slower) plus the last lane rows' drain and the fixed latency; with
    lanes dividing p and s*q*p/lanes >= p, lanes times fewer cycles than one MAC takes."""
    config = LANE_CONFIGS[name]
    cfg = lane_pass(config, *shape, f=6, rows=1, accumulate=False)
    result = timed_pass(config, cfg, seed=1)
    cycles = result["opsum_cycles"][-1] - result["ifmap_cycles"][0]
    assert cycles == cfg.mac_cycles + cfg.drain_cycles + config.pe_latency
    s, _, p, q = shape
    if p % config.mac_lanes == 0 and s * q >= config.mac_lanes:
        assert cfg.mac_cycles * config.mac_lanes == cfg.f * s * q * p


def test_pe_mac_lanes_back_to_back_passes_and_gating():
    config = LANE_CONFIGS["w8x2"]
    cfgs = [lane_pass(config, 3, 1, 3, 2), lane_pass(config, 2, 2, 8, 1, accumulate=False), lane_pass(config, 1, 1, 1, 4)]
    check(config, cfgs, seed=4, idle=0.5, stall=0.5, zeros=0.5)


@pytest.mark.parametrize("weight_register", [0, 1])
def test_pe_latency_with_and_without_the_weight_register(weight_register):
    """The register between the filter spad and the multipliers adds one cycle to a pass,
    the configuration's pe_latency, and changes no result or count."""
    config = TINY.replace(weight_register=weight_register)
    cfg = PEConfig(s=3, u=1, p=2, q=2, f=6, rows=2).check(config)
    result = timed_pass(config, cfg, seed=7)
    cycles = result["opsum_cycles"][-1] - result["ifmap_cycles"][0]
    assert cycles == cfg.mac_cycles + 4 + weight_register == cfg.mac_cycles + config.pe_latency
    check(config, [cfg, PEConfig(s=2, u=2, p=1, q=3, f=3, rows=1, accumulate=True)], seed=3, idle=0.4, stall=0.4)
