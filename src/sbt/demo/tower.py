"""Build the tiny random CLIP vision tower of the multimodal demo (rule build_tiny_tower).

Its shape comes from a backbone's `multimodal.tiny_tower` block; the image size must be the
shapes demo's (56 px by default) for the features to cover the whole image.
"""

from __future__ import annotations

import argparse

from sbt.common import cli
from sbt.demo.shapes import IMAGE_SIZE, build_tiny_vision_tower


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory to create")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--patch-size", type=int, default=14)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_tiny_vision_tower(
        args.output,
        image_size=args.image_size,
        patch_size=args.patch_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        seed=args.seed,
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
