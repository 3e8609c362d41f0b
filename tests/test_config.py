import json

import pytest

from rowstation.gen import AcceleratorConfig, PEConfig, PRESETS, preset, resolve_config
from rowstation.gen.config import c_header
from rowstation.gen.isa import ARGUMENTS, Opcode, RegisterMap


def test_presets_hold_their_published_parameters():
    eyeriss = preset("eyeriss-v1")
    assert (eyeriss.array_rows, eyeriss.array_cols, eyeriss.pe_count) == (12, 14, 168)
    assert (eyeriss.filter_spad_depth, eyeriss.ifmap_spad_depth, eyeriss.psum_spad_depth) == (224, 12, 24)
    assert (eyeriss.ifmap_width, eyeriss.weight_width) == (16, 16) and eyeriss.psum_width >= 46
    assert eyeriss.glb_bytes == 108 * 1024
    tiny = preset("tiny")
    assert tiny.ifmap_width == tiny.weight_width == 8 and tiny.psum_width >= 24
    assert tiny.pe_count < eyeriss.pe_count


def test_config_is_frozen_and_comparable():
    config = preset("tiny")
    with pytest.raises(AttributeError):
        config.array_rows = 5
    assert config.replace(array_rows=5) == config.replace(array_rows=5) != config


@pytest.mark.parametrize("changes,error,message", [
    (dict(array_rows="4"), TypeError, r"^array_rows must be an integer, not '4'$"),
    (dict(array_rows=True), TypeError, r"^array_rows must be an integer, not True$"),
    (dict(array_cols=0), ValueError, r"^array_cols must be between 1 and 64, not 0$"),
    (dict(array_cols=65), ValueError, r"^array_cols must be between 1 and 64, not 65$"),
    (dict(ifmap_width=1), ValueError, r"^ifmap_width must be between 2 and 32 \(a signed value needs 2 bits; .*\), not 1$"),
    (dict(weight_width=33), ValueError, r"^weight_width must be between 2 and 32 .*not 33$"),
    (dict(psum_width=15), ValueError, r"^psum_width must be between 16 and 64 \(one 8x8-bit product needs 16 bits; outputs are 64-bit integers\), not 15$"),
    (dict(psum_width=65), ValueError, r"^psum_width must be between 16 and 64 .*not 65$"),
    (dict(filter_spad_depth=0), ValueError, r"^filter_spad_depth must be between 1 and 4096, not 0$"),
    (dict(psum_fifo_depth=1), ValueError, r"^psum_fifo_depth must be between 2 and 64 \(a one-entry FIFO takes a row only after the last has left: a psum every other cycle\), not 1$"),
    (dict(glb_bank_depth=300), ValueError, r"^glb_bank_depth must be a power of 2 of at least 2 \(to simplify address calculation\), not 300$"),
    (dict(glb_bank_width=16), ValueError, r"^glb_bank_width must be between 24 and 1024 \(a global buffer word must hold one 24-bit psum\), not 16$"),
    (dict(dram_width=24), ValueError, r"^dram_width must be a power of 2 between 8 and 1024, not 24$"),
    (dict(dram_width=16), ValueError, r"^dram_width = 16 must hold one psum of psum_width = 24 bits, stored in 32$"),
    (dict(dram_burst=12), ValueError, r"^dram_burst must be a power of 2 between 1 and 256 words of at most 4096 bytes \(an AXI4 burst\), not 12$"),
    (dict(dram_burst=2048), ValueError, r"^dram_burst must be a power of 2 .*not 2048$"),
    (dict(psum_noc_lanes=5), ValueError, r"^psum_noc_lanes must be between 1 and 4 \(a lane serves the PE columns col % psum_noc_lanes of the 4\), not 5$"),
    (dict(psum_noc_lanes=0), ValueError, r"^psum_noc_lanes must be between 1 and 4 "),
    (dict(ifmap_noc_lanes=5), ValueError, r"^ifmap_noc_lanes must be between 1 and 4 \(each lane a global buffer read port and a network to every PE, at most 4 and one per PE of the 12\), not 5$"),
    (dict(ifmap_noc_lanes=3, array_rows=1, array_cols=2), ValueError, r"^ifmap_noc_lanes must be between 1 and 2 .*one per PE of the 2\), not 3$"),
    (dict(ifmap_noc_lanes=0), ValueError, r"^ifmap_noc_lanes must be between 1 and 4 "),
    (dict(mac_lanes=3), ValueError, r"^mac_lanes must be 1, 2, 4 or 8 and divide filter_noc_width = 2 and psum_spad_depth = 8 \(a PE reads a lane's weights from one filter spad row and its psums from one psum spad row\), not 3$"),
    (dict(mac_lanes=4), ValueError, r"^mac_lanes must be 1, 2, 4 or 8 and divide filter_noc_width = 2 "),
    (dict(mac_lanes=2, psum_spad_depth=9), ValueError, r"^mac_lanes must be .* psum_spad_depth = 9 "),
    (dict(filter_noc_width=3), ValueError, r"^filter_noc_width must be 1, 2, 4 or 8 weights, not 3$"),
    (dict(filter_noc_width=8, filter_spad_depth=60), ValueError, r"^filter_spad_depth = 60 must be a multiple of filter_noc_width = 8 \(the filter spad is written 8 weights at a time\)$"),
    (dict(filter_noc_width=8), ValueError, r"^filter_noc_width = 8 weights of 8 bits exceed a dram_width = 32-bit word \(a filter transfer comes from one word\)$"),
    (dict(glb_psum_width=15), ValueError, r"^glb_psum_width must be between 16 and 24 \(0 for psum_width, else from one 8x8-bit product to psum_width\), not 15$"),
    (dict(glb_psum_width=25), ValueError, r"^glb_psum_width must be between 16 and 24 .*not 25$"),
    (dict(dim_width=3), ValueError, r"^dim_width must be between 4 and 16, not 3$"),
    (dict(counter_width=8), ValueError, r"^counter_width must be between 16 and 64, not 8$"),
    (dict(dram_addr_width=11), ValueError, r"^dram_addr_width must be between 12 and 32 \(from a 4 KiB memory to the 32-bit words that descriptors and registers carry\), not 11$"),
    (dict(dram_addr_width=33), ValueError, r"^dram_addr_width must be between 12 and 32 .*not 33$"),
])
def test_config_wrong(changes, error, message):
    with pytest.raises(error, match=message):
        preset("tiny").replace(**changes)


def test_overrides_and_toml(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('preset = "tiny"\narray_rows = 6\npsum_width = 32\n')
    config = resolve_config(None, path, ["array_cols=0x8", "psum_width = 30"])
    assert config == preset("tiny").replace(array_rows=6, array_cols=8, psum_width=30)
    assert resolve_config("eyeriss-v1", path) == preset("eyeriss-v1").replace(array_rows=6, psum_width=32)
    assert resolve_config() == preset("eyeriss-v1")


@pytest.mark.parametrize("toml,overrides,error,message", [
    ("", ["color=3"], ValueError, r"^unknown configuration key 'color'; known keys: array_rows, "),
    ("", ["array_rows"], ValueError, r"^override 'array_rows' is not of the form key=value$"),
    ("", ["array_rows=many"], ValueError, r"^configuration key 'array_rows' takes an integer, not 'many'$"),
    ("", ["array_rows=99"], ValueError, r"^array_rows must be between 1 and 64, not 99$"),
    ("colour = 1\n", [], ValueError, r"^unknown configuration key 'colour' in .*my.toml; known keys: "),
    ("array_rows = 'x'\n", [], TypeError, r"^array_rows must be an integer, not 'x'$"),
    ("array_rows = \n", [], ValueError, r"^configuration .*my.toml is not valid TOML: "),
    ("preset = 'big'\n", [], ValueError, r"^unknown preset 'big'; presets: eyeriss-v1, tiny, tiny-4, tiny-16, ulx3s, icebreaker, ulx3s-25f, ulx3s-85f$"),
    ("preset = 3\n", [], TypeError, r"^preset in .*my.toml must be a string, not 3$"),
])
def test_resolve_config_wrong(tmp_path, toml, overrides, error, message):
    path = tmp_path / "my.toml"
    path.write_text(toml)
    with pytest.raises(error, match=message):
        resolve_config(None, path, overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match=r"^cannot read configuration .*none.toml: No such file"):
        resolve_config(None, tmp_path / "none.toml")


def test_artefacts_carry_the_configuration():
    config = preset("eyeriss-v1")
    data = json.loads(config.to_json())
    assert AcceleratorConfig(**data["config"]) == config
    assert data["derived"]["pe_count"] == 168
    header = c_header(config)
    assert "#define ROWSTATION_ARRAY_ROWS 12u" in header and "#define ROWSTATION_PSUM_WIDTH 48u" in header
    # The instruction set, from the module the compiler and the gateware use.
    regmap = RegisterMap(config)
    assert f"#define ROWSTATION_REG_STORE_TOTAL {regmap.address('store_total')}u" in header
    assert f"#define ROWSTATION_OP_STORE {int(Opcode.STORE)}u" in header
    assert "#define ROWSTATION_FIELD_OPCODE_SHIFT 28u" in header
    assert f"#define ROWSTATION_ARGS_STORE {ARGUMENTS[Opcode.STORE]}u" in header
    assert "#define ROWSTATION_STORE_ROW_SHIFT 8u" in header and "#define ROWSTATION_STORE_ROW_WIDTH 12u" in header


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(s=0), ValueError, r"^s must be at least 1, not 0$"),
    (dict(p="2"), TypeError, r"^p must be an integer, not '2'$"),
    (dict(u=4, s=3), ValueError, r"^stride u = 4 may not exceed the filter width s = 3 "),
    (dict(accumulate=1), TypeError, r"^accumulate must be a bool, not 1$"),
])
def test_pe_config_wrong(kwargs, error, message):
    args = dict(s=3, u=1, p=1, q=1, f=4)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        PEConfig(**args)


@pytest.mark.parametrize("kwargs,message", [
    (dict(p=4, q=4, s=4), r"^p\*q\*s = 4\*4\*4 = 64 filter words exceed filter_spad_depth = 48$"),
    (dict(q=5, s=3), r"^q\*s = 5\*3 = 15 ifmap words exceed ifmap_spad_depth = 12$"),
    (dict(p=9), r"^p = 9 psums exceed psum_spad_depth = 8$"),
    (dict(f=256), r"^f = 256 exceeds 255, the largest value of dim_width = 8 bits$"),
])
def test_pe_config_that_does_not_fit(kwargs, message):
    args = dict(s=3, u=1, p=1, q=1, f=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        PEConfig(**args).check(PRESETS["tiny"])


def test_pe_settings_are_the_pe_config_fields():
    """The register map, the PE's signature and the compiler take the settings from one list."""
    from dataclasses import fields
    from rowstation.gen.isa import PE_SETTINGS
    # lanes is the PEs' build (mac_lanes), not a setting of the pass
    assert PE_SETTINGS == tuple(field.name for field in fields(PEConfig) if field.name != "lanes")


def test_pe_setting_in_mac_lanes():
    """p filters take whole rows of MAC lanes: the filter spad holds them padded, a step of an
    output takes a cycle per lane row, and a pass must be set for the PEs' lanes."""
    lanes = preset("tiny").replace(mac_lanes=2)
    cfg = PEConfig(s=3, u=1, p=5, q=2, f=4, rows=2, lanes=2).check(lanes)
    assert (cfg.lane_rows, cfg.filter_words, cfg.drain_cycles) == (3, 6 * 2 * 3, 2)
    assert cfg.mac_cycles == 2 * 4 * 3 * 2 * 3
    # One channel and tap: a step of 3 lane rows is shorter than the 5 psums an output sends.
    assert PEConfig(s=1, u=1, p=5, q=1, f=4, rows=1, lanes=2).mac_cycles == 3 + 3 * 5
    assert lanes.peak_macs == 2 * lanes.pe_count and lanes.max_filter_width == 12
    with pytest.raises(ValueError, match=r"^a pass for PEs of 1 MAC lanes does not fit PEs of mac_lanes = 2$"):
        PEConfig(s=3, u=1, p=2, q=2, f=4).check(lanes)
    with pytest.raises(ValueError, match=r"^p\*q\*s = 8 \(p = 7 in rows of 2 lanes\)\*2\*3 = 48 filter words "
                                         r"exceed filter_spad_depth = 40$"):
        PEConfig(s=3, u=1, p=7, q=2, f=4, lanes=2).check(lanes.replace(filter_spad_depth=40))
