"""Gateware: Amaranth components of the row-stationary accelerator (never imports NumPy or cocotb)."""
