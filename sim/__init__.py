"""Golden model, stimulus and simulation drivers (the golden model never imports Amaranth)."""
