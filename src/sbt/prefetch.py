"""Download one input file once, on a machine with network, so GPU jobs need none.

Addresses: `hf://datasets/OWNER/REPO/PATH/IN/REPO` (a dataset repo) or
`hf://OWNER/REPO/PATH/IN/REPO` (a model repo, e.g. a released projector), both through
huggingface_hub, which resumes and verifies downloads, plain `https://...`, or `file://...`
(a local mirror). With `--unzip` the download is a zip archive whose content becomes the
directory `--output` (image folders: CC3M-595K's images.zip, COCO train2017); with
`--member NAME` a zip archive of which the one file NAME becomes the file `--output`
(VQAv2's question and annotation files). The output appears only when complete (written
to a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from sbt.common import atomic_path, cli, input_error


def download(url: str, target: Path) -> None:
    """`url` into the file `target`."""
    if url.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        rest = url.removeprefix("hf://")
        repo_type = "dataset" if rest.startswith("datasets/") else "model"
        owner, repo, filename = rest.removeprefix("datasets/").split("/", 2)
        cached = hf_hub_download(f"{owner}/{repo}", filename, repo_type=repo_type)
        shutil.copyfile(cached, target)
    elif url.startswith(("https://", "http://", "file://")):
        with urllib.request.urlopen(url) as response, open(target, "wb") as fh:
            shutil.copyfileobj(response, fh, length=1 << 20)
    else:
        raise input_error(url, "unsupported address (use hf://..., https://..., file://...)")


def unpack(archive: Path, folder: Path) -> None:
    """A zip archive's files into `folder`; a single top folder (train2017/) is dropped, so
    the image names of the records are directly inside `folder`."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(folder)
    except zipfile.BadZipFile as exc:
        raise input_error(archive, f"not a zip archive: {exc}") from None
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        top = entries[0]
        for item in top.iterdir():
            item.rename(folder / item.name)
        top.rmdir()


def extract_member(archive: Path, member: str, target: Path) -> None:
    """The file `member` of a zip archive into `target`."""
    try:
        with zipfile.ZipFile(archive) as zipped, open(target, "wb") as out:
            try:
                source = zipped.open(member)
            except KeyError:
                names = ", ".join(zipped.namelist()[:5])
                raise input_error(archive, f"no member {member!r} (it holds {names})") from None
            with source:
                shutil.copyfileobj(source, out, length=1 << 20)
    except zipfile.BadZipFile as exc:
        raise input_error(archive, f"not a zip archive: {exc}") from None


def fetch(url: str, output: str, *, unzip: bool = False, member: str | None = None) -> None:
    if member:
        with atomic_path(output) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as folder:
            archive = Path(folder) / "download.zip"
            download(url, archive)
            extract_member(archive, member, tmp)
    elif not unzip:
        with atomic_path(output) as tmp:
            download(url, tmp)
    else:
        with atomic_path(output, directory=True) as tmp:
            archive = tmp / ".download.zip"
            download(url, archive)
            unpack_dir = tmp / ".unpacked"
            unpack(archive, unpack_dir)
            archive.unlink()
            for item in unpack_dir.iterdir():
                item.rename(tmp / item.name)
            unpack_dir.rmdir()
    print(f"fetched {url} -> {output}", file=sys.stderr)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--unzip", action="store_true", help="a zip archive -> directory")
    parser.add_argument("--member", help="a zip archive's one file NAME -> the output file")
    args = parser.parse_args(argv)
    fetch(args.url, args.output, unzip=args.unzip, member=args.member)
    return 0


if __name__ == "__main__":
    sys.exit(main())
