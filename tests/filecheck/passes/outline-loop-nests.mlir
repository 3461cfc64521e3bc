// RUN: einc opt %s -p outline-loop-nests --split-input-file | filecheck %s

// %t and %u share arena bytes (memplan), so @main lists only %x and %y as
// noalias; each top-level nest moves into a private function whose buffers
// are all noalias (those a nest touches are live together, so never overlap),
// with the index constants it uses cloned in.
// CHECK-LABEL: func.func @main
// CHECK-SAME:  (%[[X:.+]]: memref<4xf32>, %[[Y:.+]]: memref<4xf32>, %[[T:.+]]: memref<4xf32>, %[[U:.+]]: memref<4xf32>)
// CHECK-SAME:  einc.noalias_args = array<i64: 0, 1>
// CHECK-NEXT:  func.call @main_nest0(%[[X]], %[[T]]) : (memref<4xf32>, memref<4xf32>) -> ()
// CHECK-NEXT:  func.call @main_nest1(%[[T]], %[[U]]) : (memref<4xf32>, memref<4xf32>) -> ()
// CHECK-NEXT:  func.return
// CHECK:       func.func private @main_nest0(%{{.*}}: memref<4xf32>, %{{.*}}: memref<4xf32>) attributes {einc.noalias_args}
// CHECK-NEXT:  %[[C0:.+]] = arith.constant 0 : index
// CHECK:       scf.for
// CHECK:       func.func private @main_nest1
func.func @main(%x: memref<4xf32>, %y: memref<4xf32>, %t: memref<4xf32>, %u: memref<4xf32>) attributes {einc.noalias_args = array<i64: 0, 1>} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  scf.for %i = %c0 to %c4 step %c1 {
    %v = memref.load %x[%i] : memref<4xf32>
    memref.store %v, %t[%i] : memref<4xf32>
  }
  scf.for %i = %c0 to %c4 step %c1 {
    %v = memref.load %t[%i] : memref<4xf32>
    %w = arith.addf %v, %v : f32
    memref.store %w, %u[%i] : memref<4xf32>
  }
  func.return
}

// -----

// All arguments noalias already (no shared bytes): nothing moves.
// CHECK-LABEL: func.func @main
// CHECK-NOT:   func.call
// CHECK:       scf.for
func.func @main(%x: memref<4xf32>, %t: memref<4xf32>) attributes {einc.noalias_args} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  scf.for %i = %c0 to %c4 step %c1 {
    %v = memref.load %x[%i] : memref<4xf32>
    memref.store %v, %t[%i] : memref<4xf32>
  }
  func.return
}
