"""Write a JPEG-encoded CIFAR-10 .npz (the `cifar10_jpeg` format) from the official archive.

  python experiments/make_cifar10_jpeg.py /data/cifar-10-python.tar.gz --out cifar10_jpeg.npz

The `cifar10_jpeg` loader reads one .npz holding, per split in {train, test}: `{split}_jpeg`
(uint8, every image's JPEG file back to back), `{split}_offsets` (int64 [N + 1]: image i is
`{split}_jpeg[offsets[i]:offsets[i + 1]]`), `{split}_labels` (uint8 [N]) and `class_names`;
images sorted by class, then by their index in the archive. JPEG is lossy: at the default
quality 90 a pixel moves by a few levels of 255. The copy some tests read was made by others from
a public JPEG re-encoding; the file written here has the same layout, not the same bytes. Its
pixels are decoded once and cached by the loader. For experiments the official archive itself
(`--dataset cifar10 --path ...`) or TFDS (`tfds:cifar10`) are as good and lossless; the JPEG file
is one option, e.g. to carry CIFAR-10 in 56 MB.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def encode_split(images: np.ndarray, labels: np.ndarray, quality: int):
    """(jpeg bytes uint8, offsets int64 [N+1], labels uint8 [N]) sorted by (label, index)."""
    from PIL import Image

    order = np.lexsort((np.arange(len(labels)), labels))
    chunks, offsets = [], [0]
    for i in order:
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, format="JPEG", quality=quality)
        chunks.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets.append(offsets[-1] + len(chunks[-1]))
    return (np.concatenate(chunks), np.asarray(offsets, np.int64),
            np.asarray(labels[order], np.uint8))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archive", help="cifar-10-python or cifar-10-binary (.tar.gz or folder)")
    ap.add_argument("--out", default="cifar10_jpeg.npz")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality 1-95")
    args = ap.parse_args(argv)
    if not 1 <= args.quality <= 95:
        raise ValueError(f"--quality must be in 1..95, got {args.quality}")

    from ckd_jax.data import load_train_test
    from ckd_jax.files import write_atomic

    train, test = load_train_test("cifar10", path=args.archive)
    arrays = {"class_names": np.asarray(train.class_names)}
    for split in (train, test):
        jpeg, offsets, labels = encode_split(split.images, split.labels, args.quality)
        arrays.update({f"{split.split}_jpeg": jpeg, f"{split.split}_offsets": offsets,
                       f"{split.split}_labels": labels})
    write_atomic(args.out, lambda f: np.savez(f, **arrays))
    size = os.path.getsize(args.out) / 1e6
    print(f"wrote {args.out}: {len(train)} train / {len(test)} test images, {size:.1f} MB")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command

    sys.exit(run_command(main))
