"""Two corpora built from files a Debian-like machine has, for a study nobody tuned to: the
check of issue 20 that `l2l study --corpus NAME=SOURCE` predicts as well on a researcher's own
corpora as on the offline presets' standard-library ones.

- ``headers``: C code, every ``.h`` file under ``/usr/include`` (one document per file);
- ``manpages``: English prose in troff, every English manual page under ``/usr/share/man``
  (``man1`` to ``man8``, gzipped sources), comment lines dropped and font escapes removed.

Each is written as ``OUT/<name>.jsonl.gz``, one ``{"text": ...}`` object per document, files in
sorted order, at most ``--max-mb`` MB of text each::

    python benchmarks/make_local_corpora.py --out corpora/
    l2l study --preset tiny --corpus headers=corpora/headers.jsonl.gz \\
        --corpus manpages=corpora/manpages.jsonl.gz --out studies/local
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

FONT = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\f\[[^]]*\]")


def headers() -> Iterator[str]:
    for path in sorted(Path("/usr/include").rglob("*.h")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield text


def manpages() -> Iterator[str]:
    root = Path("/usr/share/man")
    for section in (f"man{i}" for i in range(1, 9)):
        for path in sorted((root / section).glob("*.gz")):
            try:
                raw = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
            except (OSError, EOFError):
                continue
            lines = [FONT.sub("", line) for line in raw.splitlines()
                     if not line.startswith(('.\\"', "'\\\""))]
            text = "\n".join(lines)
            if len(text) > 200 and not text.startswith(".so "):  # not a link to another page
                yield text


def write(documents: Iterator[str], path: Path, max_chars: int) -> tuple[int, int]:
    count = total = 0
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for text in documents:
            out.write(json.dumps({"text": text}) + "\n")
            count += 1
            total += len(text)
            if total >= max_chars:
                break
    return count, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the corpora to")
    parser.add_argument("--max-mb", type=float, default=40.0, help="text per corpus, MB")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, documents in (("headers", headers()), ("manpages", manpages())):
        count, total = write(documents, args.out / f"{name}.jsonl.gz", int(args.max_mb * 1e6))
        if count == 0:
            print(f"error: no {name} on this machine", file=sys.stderr)
            return 1
        print(f"{args.out / f'{name}.jsonl.gz'}: {count} documents, {total / 1e6:.1f} MB of text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
