"""Cut a part of a full-page screenshot of a report into a small PNG for the README:
`python docs/crop_screenshot.py report-full.png docs/report.png --rows 0 1500`."""
from __future__ import annotations

import argparse

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("screenshot")
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, nargs=2, required=True, metavar=("TOP", "BOTTOM"), help="pixel rows to keep")
    parser.add_argument("--width", type=int, default=820, help="width of the result, px")
    args = parser.parse_args()
    with Image.open(args.screenshot) as shot:
        part = shot.convert("RGB").crop((0, args.rows[0], shot.width, args.rows[1]))
    height = round(part.height * args.width / part.width)
    small = part.resize((args.width, height), Image.LANCZOS)
    small.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(args.out, optimize=True)


if __name__ == "__main__":
    main()
