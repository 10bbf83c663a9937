"""The sans-I/O parts: tus header parsing (hypothesis), Range, checksums, file ids, names,
sniffing, the download authorisation rule, file tokens."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parlour.core.file_tokens import FileTokenHolder, FileTokens
from parlour.files.names import MAX_NAME_BYTES, sanitise_name
from parlour.files.sniff import inline, served_type, sniff
from parlour.files.uploads import (
    ByteRange,
    TusError,
    file_id,
    is_file_id,
    parse_checksum,
    parse_length,
    parse_metadata,
    parse_offset,
    parse_range,
)

KEYS = st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True)


@given(st.dictionaries(KEYS, st.none() | st.text(max_size=40), max_size=8))
def test_metadata_round_trip(meta: dict[str, str | None]) -> None:
    header = ",".join(
        k if v is None else f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items()
    )
    got = parse_metadata(header)
    assert got == {k: (v if v else None) for k, v in meta.items()}


@given(st.text(max_size=300))
def test_metadata_never_crashes(header: str) -> None:
    try:
        got = parse_metadata(header)
    except TusError as exc:
        assert exc.status == 400
    else:
        assert all(isinstance(k, str) for k in got)


def test_metadata_refusals() -> None:
    for bad in ("a b c", "a !!!", "a YQ==,a YQ==", "ü YQ==", "a " + "YQ==" * 2000, "a /w=="):
        with pytest.raises(TusError):
            parse_metadata(bad)
    assert parse_metadata(None) == {} and parse_metadata("") == {}
    assert parse_metadata("filename ZC50eHQ=, flag") == {"filename": "d.txt", "flag": None}


@given(st.integers(0, 2**53))
def test_offsets_and_lengths(n: int) -> None:
    assert parse_offset(str(n)) == n and parse_length(f" {n} ") == n


@pytest.mark.parametrize("bad", [None, "", "-1", "1.5", "0x10", "１２", "9" * 17, "1 2"])
def test_bad_offsets(bad: str | None) -> None:
    with pytest.raises(TusError) as info:
        parse_offset(bad)
    assert info.value.status == 400


@given(st.binary(max_size=100), st.sampled_from(["sha1", "sha256"]))
def test_checksums_parse(data: bytes, algorithm: str) -> None:
    digest = hashlib.new(algorithm, data).digest()
    got = parse_checksum(f"{algorithm} {base64.b64encode(digest).decode()}")
    assert got is not None and got.algorithm == algorithm and got.digest == digest


@given(st.text(max_size=120))
def test_any_checksum_header_is_safe(header: str) -> None:
    try:
        got = parse_checksum(header)
    except TusError as exc:
        assert exc.status == 400
    else:
        assert got is not None and got.algorithm in ("sha1", "sha256")
        assert len(got.digest) == (20 if got.algorithm == "sha1" else 32)


@pytest.mark.parametrize("bad", ["sha256", "md5 AAAA", "sha256 !!!", "sha1 AAAA", "sha256 a b"])
def test_bad_checksums(bad: str) -> None:
    with pytest.raises(TusError) as info:
        parse_checksum(bad)
    assert info.value.status == 400


@given(st.integers(1, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_ranges_are_within_the_file(size: int, a: int, b: int) -> None:
    try:
        got = parse_range(f"bytes={a}-{b}", size)
    except TusError as exc:
        assert exc.status == 416 and a >= size
        return
    if b < a:
        assert got is None
    else:
        assert got == ByteRange(a, min(b, size - 1)) and got.length >= 1


@given(st.text(max_size=40), st.integers(0, 1000))
def test_any_range_header_is_safe(header: str, size: int) -> None:
    try:
        got = parse_range(header, size)
    except TusError as exc:
        assert exc.status == 416
    else:
        assert got is None or 0 <= got.start <= got.end < size


def test_range_forms() -> None:
    assert parse_range("bytes=-5", 10) == ByteRange(5, 9)
    assert parse_range("bytes=-50", 10) == ByteRange(0, 9)
    assert parse_range("bytes=3-", 10) == ByteRange(3, 9)
    assert parse_range("bytes=0-0,2-3", 10) is None  # several ranges: the whole file
    assert parse_range("items=0-1", 10) is None
    assert parse_range(None, 10) is None
    for unsatisfiable in ("bytes=10-", "bytes=-0", "bytes=99-100"):
        with pytest.raises(TusError):
            parse_range(unsatisfiable, 10)


@given(st.binary(min_size=16, max_size=16))
def test_file_ids(raw: bytes) -> None:
    fid = file_id(raw)
    assert len(fid) == 22 and is_file_id(fid)


@given(st.text(max_size=600))
def test_names_are_safe(given_name: str) -> None:
    name = sanitise_name(given_name)
    assert name and len(name.encode()) <= MAX_NAME_BYTES
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..") and not name.startswith(" ") and not name.endswith(".")
    assert all(ord(ch) >= 32 and ch not in "\u202e\u2066\u200f" for ch in name)
    assert sanitise_name(name) == name  # idempotent


def test_names_keep_what_they_can() -> None:
    assert sanitise_name("Résumé 2024.pdf") == "Résumé 2024.pdf"
    assert sanitise_name("C:\\Users\\me\\x.txt") == "x.txt"
    assert sanitise_name("CON.txt") == "_CON.txt"
    assert sanitise_name("a" * 300 + ".tar.gz").endswith(".gz")


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"hello\n", "text/plain"),
        ("héllo wörld\n".encode(), "text/plain"),
        (b"<html><script>x</script>", "text/html"),
        (b"  <SVG onload=alert(1)>", "image/svg+xml"),
        (b"<?xml version='1.0'?><svg/>", "image/svg+xml"),
        (b"\x00\x00\x00", "application/octet-stream"),
        (b"", "application/octet-stream"),
        (b'{"a": [1, 2]}', "application/json"),
        (b"{" + bytes(range(256)), "application/octet-stream"),  # `{` alone is no JSON
    ],
)
def test_sniffing(head: bytes, kind: str) -> None:
    assert sniff(head) == kind


@given(st.binary(min_size=1, max_size=64).filter(lambda b: b"\x00" in b))
def test_bytes_that_are_not_text_never_sniff_as_text(head: bytes) -> None:
    kind = sniff(head)
    assert not kind.startswith("text/") and kind != "application/json", kind


def test_inline_allowlist_and_served_types() -> None:
    assert inline("image/png") and inline("text/plain") and inline("application/pdf")
    assert not inline("text/html") and not inline("image/svg+xml")
    assert not inline("application/octet-stream")
    assert served_type("text/html") == "application/octet-stream"
    assert served_type("image/svg+xml") == "application/octet-stream"
    assert served_type("text/plain") == "text/plain; charset=utf-8"


def test_file_tokens() -> None:
    tokens = FileTokens(ttl=900, key=b"k" * 32)
    first, expires = tokens.issue("alice", now=100.0)
    assert expires == 1000.0
    holder = tokens.check(first, 500.0)
    assert holder == FileTokenHolder("alice", 1000.0)
    assert tokens.check(first, 1000.0) is None  # expired
    assert tokens.check("x" * 43, 500.0) is None and tokens.check("", 500.0) is None
    # another node with the same key accepts it; one with another key does not
    assert FileTokens(ttl=900, key=b"k" * 32).check(first, 500.0) == holder
    assert FileTokens(ttl=900, key=b"j" * 32).check(first, 500.0) is None
    # a password change at 200 refuses what was issued up to then, not what comes after
    second, _ = tokens.issue("alice", now=150.0)
    bob, _ = tokens.issue("bob", now=150.0)
    tokens.revoke("alice", 200.0)
    assert tokens.check(first, 300.0) is None and tokens.check(second, 300.0) is None
    assert tokens.check(bob, 300.0) is not None
    later, _ = tokens.issue("alice", now=200.5)
    assert tokens.check(later, 300.0) is not None
    # a revocation is forgotten once everything it refused has expired
    tokens.revoke("carol", 1200.0)
    assert len(tokens) == 1


@given(st.text(max_size=700))
def test_any_string_is_no_token(text: str) -> None:
    assert FileTokens(ttl=900, key=b"k" * 32).check(text, 0.0) is None


@given(st.text(min_size=1, max_size=60), st.data())
def test_a_tampered_token_is_refused(user: str, data: st.DataObject) -> None:
    tokens = FileTokens(ttl=900, key=b"k" * 32)
    token, _ = tokens.issue(user, now=10.0)
    assert tokens.check(token, 20.0) == FileTokenHolder(user, 910.0)
    i = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("ABCabc0129-_.").filter(lambda ch: ch != token[i]))
    tampered = token[:i] + replacement + token[i + 1 :]
    # refused — unless the change only touched a base64 character's unused low bits
    assert tokens.check(tampered, 20.0) in (None, tokens.check(token, 20.0))
