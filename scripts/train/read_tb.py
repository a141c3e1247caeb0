#!/usr/bin/env python3
"""read_tb.py DIR: print the scalar summaries of the TensorBoard event files in DIR as JSON
{tag: [[step, value], ...]}, read with TensorBoard's own EventAccumulator (pip install tensorboard;
see requirements.txt). Exit code 3 when the tensorboard package is missing."""
import json
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator
except ImportError:
    print("tensorboard is not installed (pip install -r scripts/train/requirements.txt)", file=sys.stderr)
    sys.exit(3)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    acc = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    json.dump(out, sys.stdout, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
