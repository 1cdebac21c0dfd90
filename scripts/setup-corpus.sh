#!/usr/bin/env bash
# Fetches the bundled English corpus for byte-level language modelling: the King James Version of the
# Bible (public domain), from Debian's packages bible-kjv (the reader) and bible-kjv-text (the text),
# unpacked locally (nothing is installed system-wide), printed whole and written to data/kjv.txt
# (about 4.2 MB of plain English text; verse numbers removed).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=data/kjv.txt
[ -s "$OUT" ] && exit 0
WORK=.deps/kjv
mkdir -p "$WORK" data
if ! ls "$WORK"/bible-kjv_*.deb >/dev/null 2>&1 || ! ls "$WORK"/bible-kjv-text_*.deb >/dev/null 2>&1; then
  echo "setup-corpus: downloading bible-kjv and bible-kjv-text (Debian)" >&2
  ( cd "$WORK" && { apt-get download bible-kjv bible-kjv-text 2>/dev/null || { apt-get update -qq && apt-get download bible-kjv bible-kjv-text; }; } )
fi
for deb in "$WORK"/bible-kjv_*.deb "$WORK"/bible-kjv-text_*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
# Every verse from Genesis 1:1 to Revelation 22:21; drop the verse numbers, keep book/chapter headings.
"$WORK/root/usr/bin/bible" -p "$WORK/root/usr/lib" gen1:1-rev22:21 \
  | sed -E 's/^ +[0-9]+ //' > "$OUT.tmp"
size=$(stat -c %s "$OUT.tmp")
[ "$size" -gt 4000000 ] || { echo "setup-corpus: expected about 4 MB of text, got $size bytes" >&2; exit 1; }
mv "$OUT.tmp" "$OUT"
echo "setup-corpus: wrote $OUT ($size bytes)" >&2
