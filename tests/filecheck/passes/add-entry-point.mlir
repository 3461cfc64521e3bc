// RUN: einc opt %s -p add-entry-point | filecheck %s
// RUN: einc opt %s -p 'add-entry-point{func=model entry=run}' | filecheck %s --check-prefix=NAMED

// einc_entry loads argument i of @main from table[i] and calls @main.
// CHECK-LABEL: llvm.func @einc_entry
// CHECK-SAME: (%[[T:.+]]: !llvm.ptr)
// CHECK-NEXT: %[[P0:.+]] = llvm.getelementptr inbounds %[[T]][0] : (!llvm.ptr) -> !llvm.ptr, !llvm.ptr
// CHECK-NEXT: %[[A0:.+]] = llvm.load %[[P0]] : !llvm.ptr -> !llvm.ptr
// CHECK-NEXT: %[[P1:.+]] = llvm.getelementptr inbounds %[[T]][1] : (!llvm.ptr) -> !llvm.ptr, !llvm.ptr
// CHECK-NEXT: %[[A1:.+]] = llvm.load %[[P1]] : !llvm.ptr -> !llvm.ptr
// CHECK-NEXT: llvm.call @main(%[[A0]], %[[A1]]) : (!llvm.ptr, !llvm.ptr) -> ()
// CHECK-NEXT: llvm.return
llvm.func @main(%a: !llvm.ptr, %b: !llvm.ptr) {
  llvm.return
}

// The options name another model function and entry.
// NAMED-LABEL: llvm.func @run
// NAMED-SAME: (%[[T:.+]]: !llvm.ptr)
// NAMED-NEXT: %[[P0:.+]] = llvm.getelementptr inbounds %[[T]][0] : (!llvm.ptr) -> !llvm.ptr, !llvm.ptr
// NAMED-NEXT: %[[A0:.+]] = llvm.load %[[P0]] : !llvm.ptr -> !llvm.ptr
// NAMED-NEXT: llvm.call @model(%[[A0]]) : (!llvm.ptr) -> ()
// NAMED-NEXT: llvm.return
llvm.func @model(%a: !llvm.ptr) {
  llvm.return
}
