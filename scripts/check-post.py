#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Check the mails `make post` wrote: python3 scripts/check-post.py DIR "Name <mail>".

Every mail is from the poster and signed by the poster, the placeholder signer appears
nowhere, the cover letter names the real base-commit, and linux-mm, nvdimm and linux-cxl
are among the recipients of every mail. Exit 1 listing what is wrong."""

from __future__ import annotations

import email
import email.policy
import sys
from pathlib import Path

LISTS = ("linux-mm@kvack.org", "nvdimm@lists.linux.dev", "linux-cxl@vger.kernel.org")
PLACEHOLDER = "memmap-kmem@lists.example.org"


def problems(directory: Path, identity: str) -> list[str]:
    mails = sorted(directory.glob("*.patch"))
    if len(mails) < 2:
        return [f"{directory}: {len(mails)} mails"]
    found = []
    for path in mails:
        text = path.read_text()
        msg = email.message_from_string(text, policy=email.policy.default)
        recipients = f"{msg.get('To', '')}, {msg.get('Cc', '')}"
        found += [f"{path.name}: {a} not a recipient" for a in LISTS if a not in recipients]
        if msg.get("From") != identity:
            found.append(f"{path.name}: From {msg.get('From')!r}, not {identity!r}")
        if PLACEHOLDER in text:
            found.append(f"{path.name}: the placeholder signer is in the mail")
        cover = "-0000-" in path.name
        if not cover and f"Signed-off-by: {identity}" not in text:
            found.append(f"{path.name}: not signed off by {identity}")
        if cover and "\nbase-commit: " not in text:
            found.append(f"{path.name}: no base-commit")
    return found


def main() -> int:
    directory, identity = Path(sys.argv[1]), sys.argv[2]
    found = problems(directory, identity)
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print(f"{directory}: every mail from and signed by {identity}, to {', '.join(LISTS)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
