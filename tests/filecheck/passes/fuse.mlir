// RUN: einc opt %s -p fuse --split-input-file | filecheck %s

// Gemm, bias and ReLU: one contraction group, the bias and ReLU its epilogue.
// CHECK-LABEL: func.func @dense
// CHECK-SAME:  (%[[X:.+]]: tensor<4x8xf32>, %[[W:.+]]: tensor<3x8xf32>, %[[B:.+]]: tensor<3xf32>)
// CHECK-NEXT:  %[[G:.+]] = ein.group "contraction" (%[[X]], %[[W]], %[[B]]) {einc.why = "contraction with 2 elementwise ops fused
// CHECK-NEXT:  ^{{.+}}(%[[XA:.+]]: tensor<4x8xf32>, %[[WA:.+]]: tensor<3x8xf32>, %[[BA:.+]]: tensor<3xf32>):
// CHECK-NEXT:    %[[P:.+]] = ein.einsum (%[[XA]][m, k], %[[WA]][n, k]) -> [m, n] map "$0 * $1" reduce add
// CHECK-NEXT:    %[[S:.+]] = ein.einsum (%[[P]][i, j], %[[BA]][j]) -> [i, j] map "$0 + $1"
// CHECK-NEXT:    %[[R:.+]] = ein.einsum (%[[S]][i, j]) -> [i, j] map "max($0, 0.0)"
// CHECK-NEXT:    ein.yield %[[R]]
// CHECK:       func.return %[[G]]
func.func @dense(%x: tensor<4x8xf32>, %w: tensor<3x8xf32>, %b: tensor<3xf32>) -> tensor<4x3xf32> {
  %0 = ein.einsum (%x[m, k], %w[n, k]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<3x8xf32>) -> tensor<4x3xf32>
  %1 = ein.einsum (%0[i, j], %b[j]) -> [i, j] map "$0 + $1" : (tensor<4x3xf32>, tensor<3xf32>) -> tensor<4x3xf32>
  %2 = ein.einsum (%1[i, j]) -> [i, j] map "max($0, 0.0)" : (tensor<4x3xf32>) -> tensor<4x3xf32>
  func.return %2 : tensor<4x3xf32>
}

// -----

// A reduction reading the product ends the chain: the group is the product alone.
// CHECK-LABEL: func.func @then_reduce
// CHECK:       %[[G:.+]] = ein.group "contraction"
// CHECK-SAME:  the chain ends: read by a reduction (a reduce or the next contraction)
// CHECK:       ein.yield
// CHECK-NEXT:  }
// CHECK-NEXT:  ein.einsum (%[[G]][i, j]) -> [i] reduce max
func.func @then_reduce(%x: tensor<4x8xf32>, %w: tensor<8x3xf32>) -> tensor<4xf32> {
  %0 = ein.einsum (%x[m, k], %w[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32>
  %1 = ein.einsum (%0[i, j]) -> [i] map "$0" reduce max : (tensor<4x3xf32>) -> tensor<4xf32>
  func.return %1 : tensor<4xf32>
}

// -----

// Sums that are not products (a row sum) are not contractions.
// CHECK-LABEL: func.func @row_sum
// CHECK-NOT:   ein.group
func.func @row_sum(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  %0 = ein.einsum (%x[i, j]) -> [i] map "$0" reduce add : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}
