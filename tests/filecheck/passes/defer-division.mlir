// RUN: einc opt %s -p defer-division --split-input-file | filecheck %s

// Attention's A = SN / SD read by AV = sum_m A * V: divide after the sum.
// CHECK-LABEL: func.func @attention_tail
// CHECK-SAME:  (%[[SN:.+]]: tensor<8x16xf32>, %[[SD:.+]]: tensor<8xf32>, %[[V:.+]]: tensor<16x4xf32>)
// CHECK-NEXT:  %[[NV:.+]] = ein.einsum (%[[SN]][p, m], %[[V]][m, f]) -> [p, f] map "$0 * $1" reduce add
// CHECK-NEXT:  %[[AV:.+]] = ein.einsum (%[[NV]][p, f], %[[SD]][p]) -> [p, f] map "$0 / $1"
// CHECK-NEXT:  func.return %[[AV]]
func.func @attention_tail(%sn: tensor<8x16xf32>, %sd: tensor<8xf32>, %v: tensor<16x4xf32>) -> tensor<8x4xf32> {
  %a = ein.einsum (%sn[i, j], %sd[i]) -> [i, j] map "$0 / $1" : (tensor<8x16xf32>, tensor<8xf32>) -> tensor<8x16xf32>
  %av = ein.einsum (%a[p, m], %v[m, f]) -> [p, f] map "$0 * $1" reduce add : (tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
  func.return %av : tensor<8x4xf32>
}

// -----

// A divisor that varies along the summed index stays where it is.
// CHECK-LABEL: func.func @divisor_depends_on_sum
// CHECK:       map "$0 / $1"
// CHECK-NEXT:  map "$0 * $1" reduce add
func.func @divisor_depends_on_sum(%sn: tensor<8x16xf32>, %sd: tensor<16xf32>, %v: tensor<16x4xf32>) -> tensor<8x4xf32> {
  %a = ein.einsum (%sn[i, j], %sd[j]) -> [i, j] map "$0 / $1" : (tensor<8x16xf32>, tensor<16xf32>) -> tensor<8x16xf32>
  %av = ein.einsum (%a[p, m], %v[m, f]) -> [p, f] map "$0 * $1" reduce add : (tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
  func.return %av : tensor<8x4xf32>
}

// -----

// A quotient read twice must stay: only its sum would be rewritten.
// CHECK-LABEL: func.func @quotient_used_twice
// CHECK:       map "$0 / $1"
// CHECK-NEXT:  map "$0 * $1" reduce add
func.func @quotient_used_twice(%sn: tensor<8x16xf32>, %sd: tensor<8xf32>, %v: tensor<16x4xf32>) -> (tensor<8x4xf32>, tensor<8x16xf32>) {
  %a = ein.einsum (%sn[i, j], %sd[i]) -> [i, j] map "$0 / $1" : (tensor<8x16xf32>, tensor<8xf32>) -> tensor<8x16xf32>
  %av = ein.einsum (%a[p, m], %v[m, f]) -> [p, f] map "$0 * $1" reduce add : (tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
  func.return %av, %a : tensor<8x4xf32>, tensor<8x16xf32>
}
