"""Download one input file once, on a machine with network, so GPU jobs need none.

Addresses: `hf://datasets/OWNER/REPO/PATH/IN/REPO` (through huggingface_hub, which
resumes and verifies downloads) or plain `https://...`. The file appears only when
complete (downloaded to a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request

from sbt.common import atomic_path, cli, input_error


def fetch(url: str, output: str) -> None:
    with atomic_path(output) as tmp:
        if url.startswith("hf://datasets/"):
            from huggingface_hub import hf_hub_download

            owner, repo, filename = url.removeprefix("hf://datasets/").split("/", 2)
            cached = hf_hub_download(f"{owner}/{repo}", filename, repo_type="dataset")
            shutil.copyfile(cached, tmp)
        elif url.startswith(("https://", "http://")):
            with urllib.request.urlopen(url) as response, open(tmp, "wb") as fh:
                shutil.copyfileobj(response, fh, length=1 << 20)
        else:
            raise input_error(url, "unsupported address (use hf://datasets/... or https://...)")
    print(f"fetched {url} -> {output}", file=sys.stderr)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    fetch(args.url, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
