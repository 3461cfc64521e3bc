// RUN: einc opt %s -t triton | filecheck %s

// An "attention" group with grouped-query heads: 8 query heads (h, g) share
// 2 key/value heads (h), so K and V are not indexed by g. One pass over the
// keys with a running max and sum; the 128x128 score tile never leaves registers.
// CHECK:      def [[K:k0_\w+]](in_q, in_k, in_v, out_out0, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
// CHECK:        # one pass over 128 keys (n) for 128 queries (m), head dims 64 (e) and 64 (f), batch 8 (h, g)
// CHECK:        [[H:v[0-9]+]] = pid_b // 4
// CHECK:        q = tl.load(in_q + pid_b * 8192 + offs_m[:, None] * 64 + offs_d[None, :])
// CHECK:        for start_n in range(0, 128, BLOCK_N):
// CHECK:          k = tl.load(in_k + [[H]] * 8192 + offs_d[:, None] + offs_n[None, :] * 64)
// CHECK-NEXT:     qk = tl.dot(q, k)
// CHECK-NEXT:     [[S:v[0-9]+]] = qk * 0.125
// CHECK-NEXT:     m_new = tl.maximum(m_i, tl.max([[S]], axis=1))
// CHECK-NEXT:     alpha = tl.exp(m_i - m_new)
// CHECK-NEXT:     p = tl.exp([[S]] - m_new[:, None])
// CHECK-NEXT:     l_i = l_i * alpha + tl.sum(p, axis=1)
// CHECK-NEXT:     acc = acc * alpha[:, None]
// CHECK-NEXT:     v = tl.load(in_v + [[H]] * 8192 + offs_n[:, None] * 64 + offs_dv[None, :])
// CHECK-NEXT:     acc = tl.dot(p.to(tl.float16), v, acc)
// CHECK-NEXT:     m_i = m_new
// CHECK-NEXT:   acc = acc / l_i[:, None]
// CHECK-NEXT:   tl.store(out_out0 + pid_b * 8192 + offs_m[:, None] * 64 + offs_dv[None, :], acc.to(tl.float16))
// CHECK:        [[K]][lambda meta: (triton.cdiv(128, meta["BLOCK_M"]), 8)](in_q, in_k, in_v, out_out0)
// 
func.func @main(%q: tensor<2x4x128x64xf16>, %k: tensor<2x128x64xf16>, %v: tensor<2x128x64xf16>) -> tensor<2x4x128x64xf16> {
  %0 = ein.group "attention" (%q, %k, %v) : (tensor<2x4x128x64xf16>, tensor<2x128x64xf16>, tensor<2x128x64xf16>) -> tensor<2x4x128x64xf16> {
  ^bb0(%gq: tensor<2x4x128x64xf16>, %gk: tensor<2x128x64xf16>, %gv: tensor<2x128x64xf16>):
    %s = ein.einsum (%gq[h, g, m, e], %gk[h, n, e]) -> [h, g, m, n] map "$0 * $1" reduce add : (tensor<2x4x128x64xf16>, tensor<2x128x64xf16>) -> tensor<2x4x128x128xf16>
    %ss = ein.einsum (%s[h, g, m, n]) -> [h, g, m, n] map "$0 * 0.125" : (tensor<2x4x128x128xf16>) -> tensor<2x4x128x128xf16>
    %gm = ein.einsum (%ss[h, g, m, n]) -> [h, g, m] reduce max : (tensor<2x4x128x128xf16>) -> tensor<2x4x128xf16>
    %sn = ein.einsum (%ss[h, g, m, n], %gm[h, g, m]) -> [h, g, m, n] map "exp($0 - $1)" : (tensor<2x4x128x128xf16>, tensor<2x4x128xf16>) -> tensor<2x4x128x128xf16>
    %sd = ein.einsum (%sn[h, g, m, n]) -> [h, g, m] reduce add : (tensor<2x4x128x128xf16>) -> tensor<2x4x128xf16>
    %nv = ein.einsum (%sn[h, g, m, n], %gv[h, n, f]) -> [h, g, m, f] map "$0 * $1" reduce add : (tensor<2x4x128x128xf16>, tensor<2x128x64xf16>) -> tensor<2x4x128x64xf16>
    %o = ein.einsum (%nv[h, g, m, f], %sd[h, g, m]) -> [h, g, m, f] map "$0 / $1" : (tensor<2x4x128x64xf16>, tensor<2x4x128xf16>) -> tensor<2x4x128x64xf16>
    ein.yield %o : tensor<2x4x128x64xf16>
  }
  func.return %0 : tensor<2x4x128x64xf16>
}
