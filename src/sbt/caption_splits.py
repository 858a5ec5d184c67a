#!/usr/bin/env python
"""A split of Karpathy's caption datasets in the study's caption format.

    python -m sbt.caption_splits --karpathy dataset_coco.json --split test --output FILE

The study's caption benchmarks (llava/eval/mmoverall/evaluate.py, `COCOFlickrDataset`) read
its own files, `mscoco/mscoco_test.json` with the COCO val2014 images and
`mscoco_train.json` for the demonstrations (Flickr30k alike): a list of
`{"image_name", "captions"}`, which it did not publish. Its code came from OpenFlamingo,
whose COCO and Flickr30k evaluation reads Karpathy's splits (`dataset_coco.json`,
`dataset_flickr30k.json` of caption_datasets.zip: `images[].filename`, `.split`,
`.sentences[].raw`), and the Karpathy COCO test images are val2014 images, as the study's
image folder; so this writes that split in the study's format. That the study's files hold
exactly these images is an assumption (docs/multimodal.md).

`--split train` also takes Karpathy's `restval` images (the rest of val2014, which the
Karpathy train split is usually trained with); only their captions are read, as the
demonstrations'. Bad input is one error line naming the file and record.
"""

from __future__ import annotations

import argparse
import sys

from sbt.common import cli, input_error, read_json_file, write_json

SPLITS = {"test": ("test",), "val": ("val",), "train": ("train", "restval")}


def karpathy_split(path, split: str) -> list[dict]:
    document = read_json_file(path)
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise input_error(path, "expected Karpathy's {'images': [...]}", field="images")
    records = []
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            raise input_error(path, "expected an object", index=index)
        for key in ("filename", "split", "sentences"):
            if key not in image:
                raise input_error(path, "missing", index=index, field=key)
        if image["split"] not in SPLITS[split]:
            continue
        try:
            captions = [sentence["raw"].strip() for sentence in image["sentences"]]
        except (TypeError, KeyError, AttributeError):
            raise input_error(
                path, "each sentence needs a string 'raw'", index=index, field="sentences"
            ) from None
        records.append({"image_name": image["filename"], "captions": captions})
    if not records:
        raise input_error(path, f"no image in split {split!r}", field="split")
    return records


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--karpathy", required=True, help="dataset_coco.json or similar")
    parser.add_argument("--split", required=True, choices=sorted(SPLITS))
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    records = karpathy_split(args.karpathy, args.split)
    write_json(args.output, records)  # atomic: no half-written output
    print(f"{args.output}: {len(records)} images of split {args.split}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
