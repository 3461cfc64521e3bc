// RUN: einc opt %s -p fold-weights --split-input-file | filecheck %s

// IR text carries no weight table: ops on ein.constant fold (into a constant of at
// most 64 elements), ops on an ein.weight stay; a reshape stays a view.
// CHECK-LABEL: func.func @constants_only
// CHECK-NEXT:  %[[C:.+]] = ein.constant dense<{{\[}}[1.000000e+00, 3.000000e+00], [2.000000e+00, 4.000000e+00]]> : tensor<2x2xf32>
// CHECK-NEXT:  %{{.+}} = ein.einsum (%{{.+}}[m, k], %[[C]][k, n]) -> [m, n] map "$0 * $1" reduce add
func.func @constants_only(%x: tensor<3x2xf32>) -> tensor<3x2xf32> {
  %c = ein.constant dense<[[1.0, 2.0], [3.0, 4.0]]> : tensor<2x2xf32>
  %t = ein.einsum (%c[i, j]) -> [j, i] : (tensor<2x2xf32>) -> tensor<2x2xf32>
  %y = ein.einsum (%x[m, k], %t[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<3x2xf32>, tensor<2x2xf32>) -> tensor<3x2xf32>
  func.return %y : tensor<3x2xf32>
}

// -----

// CHECK-LABEL: func.func @weight_without_table
// CHECK:       %[[W:.+]] = ein.weight @w
// CHECK-NEXT:  ein.einsum (%[[W]][i, j]) -> [j, i]
func.func @weight_without_table(%x: tensor<3x80xf32>) -> tensor<3x2xf32> {
  %w = ein.weight @w : tensor<2x80xf32>
  %t = ein.einsum (%w[i, j]) -> [j, i] : (tensor<2x80xf32>) -> tensor<80x2xf32>
  %y = ein.einsum (%x[m, k], %t[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<3x80xf32>, tensor<80x2xf32>) -> tensor<3x2xf32>
  func.return %y : tensor<3x2xf32>
}
