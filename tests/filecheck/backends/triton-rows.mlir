// RUN: einc opt %s -t triton | filecheck %s

// A "rows" group: softmax over the last rank, the whole row in registers; the
// max, exp, sum and divide of the cascade never leave the kernel.
// CHECK:      def [[K:k0_\w+]](in_x, out_out0):
// CHECK:        p = tl.program_id(0) * 4 + tl.arange(0, 4)[:, None]
// CHECK-NEXT:   r = tl.arange(0, 1024)[None, :]
// CHECK-NEXT:   mask_r = r < 1000
// CHECK-NEXT:   [[X:v[0-9]+]] = tl.load(in_x + p * 1000 + r, mask=mask_r, other=0.0)
// CHECK-NEXT:   [[XM:v[0-9]+]] = tl.where(mask_r, [[X]], -float("inf"))
// CHECK-NEXT:   [[GM:v[0-9]+]] = tl.max([[XM]], axis=1)[:, None]
// CHECK-NEXT:   [[D:v[0-9]+]] = [[X]] - [[GM]]
// CHECK-NEXT:   [[SN:v[0-9]+]] = tl.exp([[D]])
// CHECK-NEXT:   [[SNM:v[0-9]+]] = tl.where(mask_r, [[SN]], 0.0)
// CHECK-NEXT:   [[SD:v[0-9]+]] = tl.sum([[SNM]], axis=1)[:, None]
// CHECK-NEXT:   [[A:v[0-9]+]] = [[SN]] / [[SD]]
// CHECK-NEXT:   tl.store(out_out0 + p * 1000 + r, [[A]], mask=mask_r)
// CHECK-NOT:  tl.load
// CHECK:        [[K]][(8,)](in_x, out_out0, num_warps=8)
// 
func.func @main(%x: tensor<32x1000xf32>) -> tensor<32x1000xf32> {
  %0 = ein.group "rows" (%x) : (tensor<32x1000xf32>) -> tensor<32x1000xf32> {
  ^bb0(%gx: tensor<32x1000xf32>):
    %gm = ein.einsum (%gx[p, m]) -> [p] reduce max : (tensor<32x1000xf32>) -> tensor<32xf32>
    %sn = ein.einsum (%gx[p, m], %gm[p]) -> [p, m] map "exp($0 - $1)" : (tensor<32x1000xf32>, tensor<32xf32>) -> tensor<32x1000xf32>
    %sd = ein.einsum (%sn[p, m]) -> [p] reduce add : (tensor<32x1000xf32>) -> tensor<32xf32>
    %a = ein.einsum (%sn[p, m], %sd[p]) -> [p, m] map "$0 / $1" : (tensor<32x1000xf32>, tensor<32xf32>) -> tensor<32x1000xf32>
    ein.yield %a : tensor<32x1000xf32>
  }
  func.return %0 : tensor<32x1000xf32>
}
