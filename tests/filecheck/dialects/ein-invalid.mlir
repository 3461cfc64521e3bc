// RUN: einc opt %s --split-input-file --verify-diagnostics
// Every verifier error of the ein dialect.

func.func @rank(%a: tensor<4x8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{input 0 has rank 2 but 1 index expressions}}
  %0 = ein.einsum (%a[m]) -> [m] : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

func.func @extent(%a: tensor<4x8xf32>, %b: tensor<4x3xf32>) -> tensor<4x3xf32> {
  // expected-error @+1 {{index 'k' has extent 8 and 4 in input 1}}
  %0 = ein.einsum (%a[m, k], %b[k, n]) -> [m, n] map "$0 * $1" reduce add : (tensor<4x8xf32>, tensor<4x3xf32>) -> tensor<4x3xf32>
  func.return %0 : tensor<4x3xf32>
}

// -----

func.func @no_reduce(%a: tensor<4x8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{indices ['k'] are dropped from the output but the einsum has no reduce}}
  %0 = ein.einsum (%a[m, k]) -> [m] : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

func.func @bad_reduce(%a: tensor<4x8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{unknown reduce 'avg', expected one of add, mul, max, min}}
  %0 = ein.einsum (%a[m, k]) -> [m] reduce avg : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

func.func @map_input(%a: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{map '$0 * $1' reads $1 but the einsum has 1 inputs}}
  %0 = ein.einsum (%a[m]) -> [m] map "$0 * $1" : (tensor<4xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

func.func @map_syntax(%a: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{unknown function 'frob' in map 'frob($0)'}}
  %0 = ein.einsum (%a[m]) -> [m] map "frob($0)" : (tensor<4xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

func.func @window(%a: tensor<8xf32>, %w: tensor<3xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{index 'p * 2 + r' of input 0 reaches 8 in a dimension of size 8}}
  %0 = ein.einsum (%a[p * 2 + r], %w[r]) -> [p] map "$0 * $1" reduce add : (tensor<8xf32>, tensor<3xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

func.func @no_range(%a: tensor<8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{index 'r' of input 0 has no range: it must appear alone in some dimension}}
  %0 = ein.einsum (%a[p + r]) -> [p] reduce add : (tensor<8xf32>) -> tensor<4xf32>
  func.return %0 : tensor<4xf32>
}

// -----

func.func @out_rank(%a: tensor<4xf32>) -> tensor<4x1xf32> {
  // expected-error @+1 {{output has rank 2 but 1 indices}}
  %0 = ein.einsum (%a[m]) -> [m] : (tensor<4xf32>) -> tensor<4x1xf32>
  func.return %0 : tensor<4x1xf32>
}

// -----

func.func @reshape(%a: tensor<4x3xf32>) -> tensor<5xf32> {
  // expected-error @+1 {{reshape from [4, 3] to [5] changes the number of elements}}
  %0 = ein.reshape %a : tensor<4x3xf32> -> tensor<5xf32>
  func.return %0 : tensor<5xf32>
}

// -----

func.func @if_condition(%c: tensor<2xi1>, %x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{ein.if condition must be one i1 element, not tensor<2xi1>}}
  %0 = ein.if %c : tensor<2xi1> -> (tensor<4xf32>) {
    ein.yield %x : tensor<4xf32>
  } else {
    ein.yield %x : tensor<4xf32>
  }
  func.return %0 : tensor<4xf32>
}

// -----

func.func @if_yield_types(%c: tensor<i1>, %x: tensor<4xf32>, %y: tensor<2xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{ein.yield types of the else region must match the ein.if results}}
  %0 = ein.if %c : tensor<i1> -> (tensor<4xf32>) {
    ein.yield %x : tensor<4xf32>
  } else {
    ein.yield %y : tensor<2xf32>
  }
  func.return %0 : tensor<4xf32>
}

// -----

func.func @scatter_updates_shape(%x: tensor<5x3xf32>, %i: tensor<2xi64>, %u: tensor<3x3xf32>) -> tensor<5x3xf32> {
  // expected-error @+1 {{scatter updates must have shape [2, 3]}}
  %0 = ein.scatter %u into %x[%i] axis 0 : (tensor<5x3xf32>, tensor<2xi64>, tensor<3x3xf32>) -> tensor<5x3xf32>
  func.return %0 : tensor<5x3xf32>
}

// -----

func.func @scatter_reduction(%x: tensor<5x3xf32>, %i: tensor<2xi64>, %u: tensor<2x3xf32>) -> tensor<5x3xf32> {
  // expected-error @+1 {{unknown scatter reduction 'sum', expected one of none, add, mul, max, min}}
  %0 = ein.scatter %u into %x[%i] axis 0 reduce sum : (tensor<5x3xf32>, tensor<2xi64>, tensor<2x3xf32>) -> tensor<5x3xf32>
  func.return %0 : tensor<5x3xf32>
}

// -----

func.func @topk_too_many(%x: tensor<4x9xf32>) -> tensor<4x10xi64> {
  // expected-error @+1 {{topk result must be i64 with the input's shape and at most 9 along the axis}}
  %0 = ein.topk %x k 10 axis 1 largest : tensor<4x9xf32> -> tensor<4x10xi64>
  func.return %0 : tensor<4x10xi64>
}
