"""Files in chat (issue 13, docs/design/files.md): tus 1.0 uploads on the web listener into a
content-addressed blob store, attachments on messages, safe downloads.

* `uploads` — the tus rules, sans-I/O: header parsing and validation, ids, expiry dates;
* `names` — file name sanitising; `sniff` — content types from the bytes, the inline
  allowlist; `thumbnails` — Pillow, bounded;
* `blobs` — the `BlobStore` port and `FsBlobStore` (temporary file, fsync, rename);
* `http` — the aiohttp routes: a thin adapter over the above, the core's file tokens and the
  store.
"""
