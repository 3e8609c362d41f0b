"""FPGA board targets (iCE40, ECP5) built with the YoWASP toolchain."""
