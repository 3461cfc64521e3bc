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

// A reduction reading the product ends the chain: the group is the product alone,
// and the reduction starts a rows group of its own.
// CHECK-LABEL: func.func @then_reduce
// CHECK:       %[[G:.+]] = ein.group "contraction"
// CHECK-SAME:  the chain ends: read by a reduction (a reduce or the next contraction)
// CHECK:       ein.yield
// CHECK-NEXT:  }
// CHECK-NEXT:  ein.group "rows" (%[[G]])
// CHECK-NEXT:  ^{{.+}}(%[[GA:.+]]: tensor<4x3xf32>):
// CHECK-NEXT:    ein.einsum (%[[GA]][i, j]) -> [i] reduce max
func.func @then_reduce(%x: tensor<4x8xf32>, %w: tensor<8x3xf32>) -> tensor<4xf32> {
  %0 = ein.einsum (%x[m, k], %w[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<8x3xf32>) -> tensor<4x3xf32>
  %1 = ein.einsum (%0[i, j]) -> [i] map "$0" reduce max : (tensor<4x3xf32>) -> tensor<4xf32>
  func.return %1 : tensor<4xf32>
}

// -----

// Sums that are not products (a row sum) are not contractions: a rows group.
// CHECK-LABEL: func.func @row_sum
// CHECK-NOT:   ein.group "contraction"
// CHECK:       ein.group "rows"
// CHECK-SAME:  rows: 1 einsum over 4 rows of 8, 1 pass over each row
func.func @row_sum(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  %0 = ein.einsum (%x[i, j]) -> [i] map "$0" reduce add : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

// Softmax: max, exp, sum, divide share the rows of x: one rows group of 3 passes.
// CHECK-LABEL: func.func @softmax
// CHECK-SAME:  (%[[X:.+]]: tensor<4x8xf32>)
// CHECK-NEXT:  %[[G:.+]] = ein.group "rows" (%[[X]]) {einc.why = "rows: 4 einsums over 4 rows of 8, 3 passes over each row
// CHECK-NEXT:  ^{{.+}}(%[[XA:.+]]: tensor<4x8xf32>):
// CHECK-NEXT:    %[[M:.+]] = ein.einsum (%[[XA]][i, j]) -> [i] reduce max
// CHECK-NEXT:    %[[E:.+]] = ein.einsum (%[[XA]][i, j], %[[M]][i]) -> [i, j] map "exp($0 - $1)"
// CHECK-NEXT:    %[[S:.+]] = ein.einsum (%[[E]][i, j]) -> [i] reduce add
// CHECK-NEXT:    %[[Y:.+]] = ein.einsum (%[[E]][i, j], %[[S]][i]) -> [i, j] map "$0 / $1"
// CHECK-NEXT:    ein.yield %[[Y]]
// CHECK:       func.return %[[G]]
func.func @softmax(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = ein.einsum (%x[i, j]) -> [i] reduce max : (tensor<4x8xf32>) -> tensor<4xf32>
  %1 = ein.einsum (%x[i, j], %0[i]) -> [i, j] map "exp($0 - $1)" : (tensor<4x8xf32>, tensor<4xf32>) -> tensor<4x8xf32>
  %2 = ein.einsum (%1[i, j]) -> [i] reduce add : (tensor<4x8xf32>) -> tensor<4xf32>
  %3 = ein.einsum (%1[i, j], %2[i]) -> [i, j] map "$0 / $1" : (tensor<4x8xf32>, tensor<4xf32>) -> tensor<4x8xf32>
  func.return %3 : tensor<4x8xf32>
}
