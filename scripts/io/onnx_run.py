#!/usr/bin/env python3
"""onnx_run.py: runs an ONNX file with onnxruntime on a .npy input and writes the output as .npy.

    python3 scripts/io/onnx_run.py MODEL.onnx INPUT.npy OUTPUT.npy [--info INFO.json]

The input is cast to the model's input type (float32 or float16); the output is written as float32.
--info writes the model's metadata_props, opset, IR version and the input/output shapes as JSON
(symbolic dimensions as their names). Where the `onnx` package is importable too, the file first goes
through onnx.checker.check_model(full_check=True) (the IR and operator specification, with strict shape
inference); --info says whether it did ("checked"). Exit 3 when onnxruntime cannot be imported. Used by
tests/nn/io/test_onnx_export.cpp (`pip install --target build/pyort onnxruntime onnx`).
"""
import json
import sys


def main():
    args = sys.argv[1:]
    info_path = None
    if "--info" in args:
        k = args.index("--info")
        info_path = args[k + 1]
        del args[k:k + 2]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"onnxruntime is not importable: {e}", file=sys.stderr)
        return 3
    model, inp, out = args
    checked = False
    try:
        import onnx
        import onnx.checker
    except ImportError:
        onnx = None
    if onnx is not None:
        proto = onnx.load(model)
        onnx.checker.check_model(proto, full_check=True)
        checked = {"ir_version": proto.ir_version,
                   "opset": [[o.domain, o.version] for o in proto.opset_import]}
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    x = np.load(inp).astype(np.float16 if i.type == "tensor(float16)" else np.float32)
    y = sess.run(None, {i.name: x})[0]
    np.save(out, np.ascontiguousarray(y.astype(np.float32)))
    if info_path:
        meta = sess.get_modelmeta()
        o = sess.get_outputs()[0]
        info = {"metadata": dict(meta.custom_metadata_map), "producer": meta.producer_name,
                "graph": meta.graph_name, "input": {"name": i.name, "type": i.type, "shape": i.shape},
                "output": {"name": o.name, "type": o.type, "shape": o.shape}, "checked": checked}
        with open(info_path, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
