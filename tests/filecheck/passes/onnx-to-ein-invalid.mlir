// RUN: not einc opt %s -p onnx-to-ein 2>&1 | filecheck %s
// Nodes without a lowering are all reported in one error, before anything changes.

// CHECK: einc: error: 2 unsupported nodes (ops Bernoulli, RandomUniformLike not supported by einc): 'bern' (Bernoulli); 'rand' (RandomUniformLike)
func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {
  %a = onnx.Bernoulli(%x) {onnx_node = "bern"} : (tensor<4xf32>) -> tensor<4xf32>
  %b = onnx.Relu(%a) {onnx_node = "relu"} : (tensor<4xf32>) -> tensor<4xf32>
  %c = onnx.RandomUniformLike(%b) {onnx_node = "rand"} : (tensor<4xf32>) -> tensor<4xf32>
  func.return %c : tensor<4xf32>
}
