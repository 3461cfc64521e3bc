// RUN: einc opt %s -p convert-func-to-llvm --split-input-file | filecheck %s

// einc.noalias_args puts llvm.noalias on the pointer arguments only.
// CHECK-LABEL: llvm.func @main
// CHECK-SAME: (%[[A:.+]]: !llvm.ptr {llvm.noalias}, %[[N:.+]]: i64, %[[B:.+]]: !llvm.ptr {llvm.noalias})
// CHECK-NOT:  einc.noalias_args
// CHECK:      %[[V:.+]] = llvm.load %[[A]] : !llvm.ptr -> f32
// CHECK-NEXT: %[[W:.+]] = llvm.call @twice(%[[V]]) : (f32) -> f32
// CHECK-NEXT: llvm.store %[[W]], %[[B]] : f32, !llvm.ptr
// CHECK-NEXT: llvm.return
func.func @main(%a: !llvm.ptr, %n: i64, %b: !llvm.ptr) attributes {einc.noalias_args} {
  %v = llvm.load %a : !llvm.ptr -> f32
  %w = func.call @twice(%v) : (f32) -> f32
  llvm.store %w, %b : f32, !llvm.ptr
  func.return
}

// A private function is internal (LLVM may inline it away); the result is returned.
// CHECK-LABEL: llvm.func internal @twice
// CHECK-SAME: (%[[X:.+]]: f32) -> f32
// CHECK:      %[[Y:.+]] = llvm.fadd %[[X]], %[[X]] : f32
// CHECK-NEXT: llvm.return %[[Y]] : f32
func.func private @twice(%x: f32) -> f32 {
  %y = llvm.fadd %x, %x : f32
  func.return %y : f32
}

// -----

// Without the attribute, no noalias; a declaration stays external.
// CHECK-LABEL: llvm.func @plain
// CHECK-SAME: (%{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr)
// CHECK-NOT:  llvm.noalias
// CHECK:      llvm.func @expf(f32) -> f32
func.func @plain(%a: !llvm.ptr, %b: !llvm.ptr) {
  func.return
}
func.func private @expf(f32) -> f32
