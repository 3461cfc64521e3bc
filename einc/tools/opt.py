"""`einc opt`: xdsl-opt with einc's dialects and passes, for lit tests and debugging."""

from xdsl.xdsl_opt_main import xDSLOptMain

from einc.ir import DIALECTS
from einc.passes import PASSES


class EincOptMain(xDSLOptMain):
    """xDSL's optimizer driver; einc's registry is added where the entry point is not."""

    version_format = "einc opt built on xdsl version {xdsl_version}"

    def register_all_dialects(self) -> None:
        super().register_all_dialects()
        for name, loader in DIALECTS.items():
            if name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(name, loader)

    def register_all_passes(self) -> None:
        super().register_all_passes()
        for name, loader in PASSES.items():
            self.register_pass(name, loader)

    def register_all_targets(self) -> None:
        super().register_all_targets()
        from einc.backends.triton.target import print_source

        self.available_targets["triton"] = print_source
