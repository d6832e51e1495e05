"""How the pages show attestations (node/http/attestations.py, the lineage in pages.py): results
apart in words, evidence read as pictures only within budget. Pure; the pages in a browser are
tests/test_design_page.py."""

from __future__ import annotations

import re

from fabnode.node.http.attestations import MAX_PICTURES_CHECKED, EvidenceReader, picture_type
from fabnode.node.http.pages import claim_rows, lineage_svg
from fabnode.protocol.cid import RAW, make_cid
from fabnode.protocol.errors import MissingBlock

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def test_picture_signatures_but_never_svg():
    assert picture_type(PNG) == "image/png" and picture_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert picture_type(b"GIF89a..") == "image/gif" and picture_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert picture_type(b"<svg xmlns='http://www.w3.org/2000/svg'>") is None and picture_type(b"") is None


class Store:
    def __init__(self, blocks: dict[bytes, bytes]) -> None:
        self.blocks, self.reads = blocks, 0

    def has(self, cid: bytes) -> bool:
        return cid in self.blocks

    def get(self, cid: bytes) -> bytes:
        self.reads += 1
        if cid not in self.blocks:
            raise MissingBlock("not here")
        return self.blocks[cid]


def test_evidence_is_read_only_for_trusted_keys_and_within_the_page_budget():
    photo, text = make_cid(RAW, PNG), make_cid(RAW, b"stroke,litres\n")
    store = Store({photo: PNG, text: b"stroke,litres\n"})
    reader = EvidenceReader(store)
    assert reader.describe(1, photo, look=True) == {"cid": reader.describe(1, photo, look=False)["cid"],
                                                    "name": "evidence 1", "held": True, "picture": True, "size": "48 B",
                                                    "number": 1, "folder": False, "bytes": 48}
    assert reader.describe(2, text, look=True)["picture"] is False
    assert reader.describe(3, photo, look=False)["picture"] is False  # an untrusted key's: a link
    absent = reader.describe(4, make_cid(RAW, b"elsewhere"), look=True)
    assert absent["held"] is False and absent["picture"] is False
    for _ in range(MAX_PICTURES_CHECKED):
        reader.describe(5, photo, look=True)
    before = store.reads
    assert reader.describe(6, photo, look=True)["picture"] is False  # budget spent: no more reads of content
    assert store.reads - before == 1  # only the root, to learn its kind and size


LOG = {"design": "bafydesign", "title": "Dryer", "upstream": [], "adaptations": [], "versions": [
    {"version": "bafyv1", "title": "Dryer", "label": "1.0", "ts": 1, "parents": [], "canonical": True,
     "design": "bafydesign", "attestations_by_trust": {
         "trusted": {"tested/warned": 1, "built/passed": 2, "built/failed": 1, "reviewed/passed": 1},
         "untrusted": {"built/passed": 30}}}]}


def test_the_lineage_keeps_each_result_apart_in_words():
    svg = lineage_svg(None, b"", LOG)
    claims = re.findall(r'<text class="claim" data-claim="([^"]+)"[^>]*fill="([^"]+)">([^<]+)</text>', svg)
    assert [(key, text) for key, _, text in claims] == [
        ("built/passed", "✓ built · passed ×2 by trusted labs"), ("built/failed", "✗ built · failed ×1 by trusted labs"),
        ("tested/warned", "⚠ tested · warned ×1 by trusted labs"), ("reviewed/passed", "✓ reviewed · passed ×1 by trusted labs")]
    assert len({fill for key, fill, _ in claims if key.startswith("built")}) == 2
    assert "30 by unknown keys (not counted)" in svg and "×32" not in svg and "×33" not in svg
    rows = claim_rows(LOG["versions"][0]["attestations_by_trust"])
    assert [(r["mark"], r["predicate"], r["result"], r["trusted"], r["untrusted"]) for r in rows] == [
        ("✓", "built", "passed", 2, 30), ("✗", "built", "failed", 1, 0), ("⚠", "tested", "warned", 1, 0),
        ("✓", "reviewed", "passed", 1, 0)]
