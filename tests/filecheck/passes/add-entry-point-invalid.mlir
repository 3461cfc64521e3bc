// RUN: not einc opt %s -p 'add-entry-point{func=missing}' 2>&1 | filecheck %s --check-prefix=MISSING
// RUN: not einc opt %s -p 'add-entry-point{func=scalar}' 2>&1 | filecheck %s --check-prefix=SCALAR
// RUN: not einc opt %s -p 'add-entry-point{func=model entry=model}' 2>&1 | filecheck %s --check-prefix=CLASH

// MISSING: add-entry-point: no llvm.func @missing in the module
// SCALAR: add-entry-point: @scalar takes (!llvm.ptr, i64); every argument must be !llvm.ptr
// CLASH: add-entry-point: @model already exists

llvm.func @model(%a: !llvm.ptr) {
  llvm.return
}

llvm.func @scalar(%a: !llvm.ptr, %n: i64) {
  llvm.return
}
