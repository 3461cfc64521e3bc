"""The Triton backend: fused einsum groups -> readable Triton kernels and a launcher.

emitter.py  indented source buffer, CSE, map functions as `tl` code, strided views
kernels.py  kernel templates: rows (maps and reductions), dot (contraction with
            epilogue), attention (one pass, FlashAttention-2), data movement
target.py   the program over @main, the generated module, the artifact
"""
