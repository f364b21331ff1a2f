"""Compare the output frames two runs saved with `benchmarks/deflicker.py --save`: per case, how many
values differ and by how much at most. Exit status 1 when any differ.

    python benchmarks/same_frames.py before.npz after.npz
"""

import sys

import numpy as np


def main(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    if sorted(a.files) != sorted(b.files):
        print(f"different cases: {sorted(a.files)} against {sorted(b.files)}")
        return 1
    differ = False
    for k in sorted(a.files):
        x, y = a[k], b[k]
        if x.shape != y.shape:
            print(f"{k}: shapes {x.shape} against {y.shape}")
            differ = True
            continue
        n = int((x != y).sum())
        worst = int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()) if n else 0
        print(f"{k}: {n} of {x.size} values differ, by at most {worst}")
        differ |= n > 0
    return int(differ)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
