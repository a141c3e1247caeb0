"""op_ref.py: the PyTorch side of the single-op parity (tests/nn/test_pytorch_parity.cpp): evaluates
the PyTorch expression of every case of the op table (tests/ops/op_table.cpp) in float64.

  python3 op_ref.py DIR   # DIR/cases.txt: one line per case, "ID<TAB>GRADS<TAB>EXPRESSION", GRADS one
                          # 0/1 per input (1: needs a gradient); DIR/ID/x<i>.npy the inputs, DIR/ID/r.npy
                          # the upstream gradient. Writes DIR/ID/y.npy and DIR/ID/dx<i>.npy for each input
                          # that needs a gradient.
The expression sees the inputs as x[0], x[1], ..., with torch and F = torch.nn.functional.
Runs on Debian's python3-torch (CPU PyTorch 1.13).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def run_case(d, case_id, grads, expr):
    cd = os.path.join(d, case_id)
    x = []
    for i, g in enumerate(grads):
        t = torch.from_numpy(np.load(os.path.join(cd, "x%d.npy" % i)))
        x.append(t.requires_grad_(g == "1"))
    try:
        y = eval(expr, {"torch": torch, "F": F, "x": x})
        y.backward(torch.from_numpy(np.load(os.path.join(cd, "r.npy"))))
    except Exception as e:  # name the case: the table holds many expressions
        raise SystemExit("op_ref.py: case %s (%s): %s: %s" % (case_id, expr, type(e).__name__, e))
    np.save(os.path.join(cd, "y.npy"), y.detach().numpy())
    for i, t in enumerate(x):
        if grads[i] == "1":
            if t.grad is None:
                raise SystemExit("op_ref.py: case %s: input %d got no gradient from %s" % (case_id, i, expr))
            np.save(os.path.join(cd, "dx%d.npy" % i), t.grad.numpy())


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: op_ref.py DIR")
    d = sys.argv[1]
    with open(os.path.join(d, "cases.txt")) as f:
        for line in f:
            case_id, grads, expr = line.rstrip("\n").split("\t")
            run_case(d, case_id, grads, expr)


if __name__ == "__main__":
    main()
