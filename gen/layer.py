"""Shape of a convolution layer in the survey's notation (N, C, H, W, M, R, S, U, P, G)."""

from dataclasses import dataclass, fields


__all__ = ["ConvLayer"]


@dataclass(frozen=True, kw_only=True)
class ConvLayer:
    """A (grouped) 2-D convolution; H and W are before padding P. A fully connected layer has
    H = R and W = S."""

    N: int  # batch
    C: int  # input channels
    H: int  # ifmap height
    W: int  # ifmap width
    M: int  # filters (output channels)
    R: int  # filter height
    S: int  # filter width
    U: int = 1  # stride
    P: int = 0  # zero padding on each side
    G: int = 1  # groups

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"layer dimension {field.name} must be an integer, not {value!r}")
            lo = 0 if field.name == "P" else 1
            if value < lo:
                raise ValueError(f"layer dimension {field.name} must be at least {lo}, not {value}")
        if self.C % self.G or self.M % self.G:
            raise ValueError(f"groups G = {self.G} must divide both C = {self.C} and M = {self.M}")
        if self.R > self.H + 2 * self.P or self.S > self.W + 2 * self.P:
            raise ValueError(f"filter {self.R}x{self.S} is larger than the padded ifmap "
                             f"{self.H + 2 * self.P}x{self.W + 2 * self.P}")

    @classmethod
    def parse(cls, text):
        """From ``"N=1,C=3,H=227,W=227,M=96,R=11,S=11,U=4,P=0"`` (U, P, G optional)."""
        if not isinstance(text, str):
            raise TypeError(f"layer must be a string, not {text!r}")
        values = {}
        names = [field.name for field in fields(cls)]
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise ValueError(f"layer item {item!r} is not NAME=VALUE with NAME one of "
                                 f"{', '.join(names)}")
            if key in values:
                raise ValueError(f"layer dimension {key} is given twice")
            try:
                values[key] = int(value)
            except ValueError:
                raise ValueError(f"layer dimension {key} must be an integer, not {value.strip()!r}")
        missing = [name for name in names[:7] if name not in values]
        if missing:
            raise ValueError(f"layer {text!r} lacks {', '.join(missing)}")
        return cls(**values)

    def __str__(self):
        return ",".join(f"{field.name}={getattr(self, field.name)}" for field in fields(self))

    def to_dict(self):
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def E(self):
        """Ofmap height."""
        return (self.H + 2 * self.P - self.R) // self.U + 1

    @property
    def F(self):
        """Ofmap width."""
        return (self.W + 2 * self.P - self.S) // self.U + 1

    @property
    def macs(self):
        return self.N * self.M * self.E * self.F * (self.C // self.G) * self.R * self.S

    @property
    def ifmap_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def weight_shape(self):
        return (self.M, self.C // self.G, self.R, self.S)

    @property
    def weight_count(self):
        return self.M * (self.C // self.G) * self.R * self.S

    def compulsory(self, weight_bytes=1, ifmap_bytes=1, output_bytes=1):
        """External memory traffic if every weight, ifmap and ofmap value moves once (in
        elements, or in bytes given each tensor's element size)."""
        return (self.weight_count * weight_bytes + self.N * self.C * self.H * self.W * ifmap_bytes
                + self.N * self.M * self.E * self.F * output_bytes)

    @property
    def ofmap_shape(self):
        return (self.N, self.M, self.E, self.F)
