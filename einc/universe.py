"""The one place that registers einc's dialects and passes with xDSL.

`einc opt`, the Python `Pipeline` and (through the `xdsl.universe` entry point in
pyproject.toml) plain `xdsl-opt` all read from here.
"""

from xdsl.universe import Universe

from einc.ir import DIALECTS
from einc.passes import PASSES

EINC_UNIVERSE = Universe(all_dialects=DIALECTS, all_passes=PASSES)
