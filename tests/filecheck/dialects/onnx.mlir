// RUN: einc opt %s | einc opt | filecheck %s
// Round trip of the onnx dialect: node ops with ONNX attributes, onnx.none for an
// absent optional input, and an If whose subgraphs are regions ending in onnx.yield.

// CHECK-LABEL: func.func @mlp
func.func @mlp(%x: tensor<64x784xf32>, %w: tensor<10x784xf32>, %b: tensor<10xf32>) -> tensor<64x10xf32> {
  // CHECK: %[[H:.+]] = onnx.Gemm(%{{.*}}, %{{.*}}, %{{.*}}) {transB = 1 : i64, alpha = 1.000000e+00 : f32, onnx_node = "fc1"} : (tensor<64x784xf32>, tensor<10x784xf32>, tensor<10xf32>) -> tensor<64x10xf32>
  %h = onnx.Gemm(%x, %w, %b) {transB = 1 : i64, alpha = 1.0 : f32, onnx_node = "fc1"} : (tensor<64x784xf32>, tensor<10x784xf32>, tensor<10xf32>) -> tensor<64x10xf32>
  // CHECK-NEXT: onnx.Relu(%[[H]]) : (tensor<64x10xf32>) -> tensor<64x10xf32>
  %y = onnx.Relu(%h) : (tensor<64x10xf32>) -> tensor<64x10xf32>
  func.return %y : tensor<64x10xf32>
}

// CHECK-LABEL: func.func @attributes
func.func @attributes(%x: tensor<1x3x8x8xf32>) -> tensor<1x8x8x3xf32> {
  // CHECK: onnx.Transpose(%{{.*}}) {perm = array<i64: 0, 2, 3, 1>} : (tensor<1x3x8x8xf32>) -> tensor<1x8x8x3xf32>
  %t = onnx.Transpose(%x) {perm = array<i64: 0, 2, 3, 1>} : (tensor<1x3x8x8xf32>) -> tensor<1x8x8x3xf32>
  // CHECK-NEXT: onnx.LSTM() {activations = ["Sigmoid", "Tanh"], activation_alpha = array<f32: 5.000000e-01>, direction = "forward"} : () -> ()
  onnx.LSTM() {activations = ["Sigmoid", "Tanh"], activation_alpha = array<f32: 0.5>, direction = "forward"} : () -> ()
  // CHECK-NEXT: onnx.ConstantOfShape() {value = dense<1.000000e+00> : tensor<1xf32>} : () -> ()
  onnx.ConstantOfShape() {value = dense<1.0> : tensor<1xf32>} : () -> ()
  func.return %t : tensor<1x8x8x3xf32>
}

// CHECK-LABEL: func.func @optional_inputs_and_outputs
func.func @optional_inputs_and_outputs(%x: tensor<3xf32>, %hi: tensor<f32>) -> tensor<3xf32> {
  // CHECK: %[[NONE:.+]] = onnx.none
  %none = onnx.none
  // CHECK-NEXT: onnx.Clip(%{{.*}}, %[[NONE]], %{{.*}}) : (tensor<3xf32>, none, tensor<f32>) -> tensor<3xf32>
  %y = onnx.Clip(%x, %none, %hi) : (tensor<3xf32>, none, tensor<f32>) -> tensor<3xf32>
  // CHECK-NEXT: %{{.*}}, %{{.*}} = onnx.Dropout(%{{.*}}) : (tensor<3xf32>) -> (tensor<3xf32>, none)
  %d, %mask = onnx.Dropout(%y) : (tensor<3xf32>) -> (tensor<3xf32>, none)
  func.return %d : tensor<3xf32>
}

// CHECK-LABEL: func.func @if
func.func @if(%c: tensor<i1>, %x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  // CHECK: onnx.If(%{{.*}}) {else_branch = 0 : i64, then_branch = 1 : i64, onnx_node = "if"} : (tensor<i1>) -> tensor<2x3xf32> {
  // CHECK-NEXT: onnx.yield %{{.*}} : tensor<2x3xf32>
  // CHECK-NEXT: } {
  // CHECK-NEXT: %[[R:.+]] = onnx.Relu(%{{.*}})
  // CHECK-NEXT: onnx.yield %[[R]] : tensor<2x3xf32>
  // CHECK-NEXT: }
  %y = onnx.If(%c) {else_branch = 0 : i64, then_branch = 1 : i64, onnx_node = "if"} : (tensor<i1>) -> tensor<2x3xf32> {
    onnx.yield %x : tensor<2x3xf32>
  } {
    %r = onnx.Relu(%x) : (tensor<2x3xf32>) -> tensor<2x3xf32>
    onnx.yield %r : tensor<2x3xf32>
  }
  func.return %y : tensor<2x3xf32>
}

// CHECK-LABEL: func.func @loop
func.func @loop(%n: tensor<i64>, %x: tensor<2xf32>) -> tensor<2xf32> {
  // CHECK: onnx.Loop(%{{.*}}, %{{.*}}, %{{.*}}) {body = 0 : i64} : (tensor<i64>, none, tensor<2xf32>) -> tensor<2xf32> {
  // CHECK-NEXT: ^{{.*}}(%{{.*}}: tensor<i64>, %[[COND:.+]]: tensor<i1>, %[[ACC:.+]]: tensor<2xf32>):
  // CHECK-NEXT: %[[NEXT:.+]] = onnx.Add(%[[ACC]], %{{.*}})
  // CHECK-NEXT: onnx.yield %[[COND]], %[[NEXT]] : tensor<i1>, tensor<2xf32>
  %none = onnx.none
  %y = onnx.Loop(%n, %none, %x) {body = 0 : i64} : (tensor<i64>, none, tensor<2xf32>) -> tensor<2xf32> {
  ^bb0(%i: tensor<i64>, %cond: tensor<i1>, %acc: tensor<2xf32>):
    %next = onnx.Add(%acc, %x) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    onnx.yield %cond, %next : tensor<i1>, tensor<2xf32>
  }
  func.return %y : tensor<2xf32>
}
