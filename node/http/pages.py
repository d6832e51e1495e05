"""The lab's web pages (docs/protocol.md §11): server-rendered with Jinja2, no JavaScript.

Every page reads the home's database through the same functions the command line uses
(:mod:`node.local.commons`), so the browser and the terminal always agree. Everything that comes
from other labs (titles, messages, file names, READMEs) is escaped by the templates; READMEs are
rendered from Markdown with raw HTML turned off and unsafe links refused (markdown-it's
defaults), and pictures are shown from ``/ipfs/`` URLs, which carry a sandbox CSP.
"""

from __future__ import annotations

import html
from pathlib import Path

from fabnode.protocol.cid import cid_str, parse_cid
from fabnode.protocol.errors import FabnodeError, MissingBlock, human_size
from fabnode.protocol.unixfs import decode as decode_unixfs, directory_entries

from fabnode.node.http.attestations import (RESULT_COLOURS, RESULT_MARKS, EvidenceReader, attestation_details,
                                             claim_order)
from fabnode.node.http.i18n import DEFAULT as DEFAULT_LANGUAGE
from fabnode.node.http.readme import known_paths, render_readme

TEMPLATES = Path(__file__).parent / "templates"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")
MAX_README = 256 * 1024
MAX_FILES_LISTED = 2000
MAX_LABS_LISTED = 200
"""Rows of the labs page's table (nearest, or by name); every lab is still a dot on the map."""
WORLD_OUTLINE = Path(__file__).parent / "static" / "world-land-110m.path"
"""Natural Earth 1:110m land (public domain) as one SVG path, equirectangular in a 360 x 180 box
(tools/world_outline.py made it from the npm package world-atlas)."""
MAX_ATTESTATIONS_LISTED = 100
"""Attestations shown on a version page (trusted keys' first); the rest are counted."""


def N_(message: str) -> str:
    """Marks a message for the catalogs (pybabel extract -k N_) where it is defined; it is
    translated where it is shown."""
    return message


WORDS = {
    # predicates and results of attestations, and reputation verdicts: data words, shown translated
    "built": N_("built"), "tested": N_("tested"), "reviewed": N_("reviewed"), "defect": N_("defect"),
    "passed": N_("passed"), "warned": N_("warned"), "failed": N_("failed"),
    "recommended": N_("recommended"), "mixed": N_("mixed"), "not recommended": N_("not recommended"),
    "unknown": N_("unknown"),
    # the marks of a chain of keys (issue 17, protocol/key_views.py)
    "revoked-later": N_("signed by a key later revoked"),
    "doubtful": N_("doubtful: signed by a revoked key, dated before its cut-off but received after the revocation"),
    "conflict": N_("conflict: this lab’s chain of keys is forked, trusted nowhere until its recovery key settles it"),
    "refused": N_("refused: signed by a key after it was rotated or revoked"),
}
"""Words that arrive as data (a record's predicate and result, a score's verdict) and are shown
in the page's language; a word a newer node sends that is not here is shown as it came."""
REQUEST_STATES = {"open": N_("open"), "fulfilled": N_("fulfilled"), "closed": N_("closed"), "expired": N_("expired")}
"""A request's state (protocol/requests.py), as the requests page shows it."""
MAX_MAKERS_LISTED = 20
"""Labs listed under "Labs that can make this" on a design page."""
MAX_REQUESTS_LISTED = 200


def bundle_files(store, root: bytes) -> dict[str, tuple[bytes, int]] | None:
    """path -> (cid, size) of every file in a bundle held here, or None if it is not held whole."""
    out: dict[str, tuple[bytes, int]] = {}
    stack = [("", root)]
    try:
        while stack and len(out) < MAX_FILES_LISTED:
            prefix, cid = stack.pop()
            node = decode_unixfs(cid, store.get(cid))
            if node.kind == "directory":
                stack.extend((f"{prefix}{link.name}/", link.cid)
                             for link in reversed(directory_entries(store.get, cid, node)))
            else:
                out[prefix.rstrip("/") or cid_str(cid)] = (cid, node.filesize)
    except MissingBlock:
        return None
    return out


def bundle_diff(store, old: bytes, new: bytes) -> dict | None:
    """Files added, removed and changed from one bundle to another (None if either is not here)."""
    before, after = bundle_files(store, old), bundle_files(store, new)
    if before is None or after is None:
        return None
    return {"added": sorted(after.keys() - before.keys()), "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(p for p in before.keys() & after.keys() if before[p][0] != after[p][0])}


def download_links(bundle: str, title: str, label: str, size: int | None, size_text=human_size) -> dict:
    """The ZIP and CAR links of a bundle: the ZIP's top folder (and file) is named after the
    design's title and label, made safe (node/http/zipstream.py); sizes as the CLI shows them."""
    import urllib.parse

    from fabnode.node.http.zipstream import safe_folder_name

    name = safe_folder_name(f"{title} {label}".strip(), bundle)
    return {"zip": f"/ipfs/{bundle}?format=zip&filename={urllib.parse.quote(name + '.zip', safe='')}",
            "car": f"/ipfs/{bundle}?format=car", "zip_name": f"{name}.zip",
            "size": size_text(size) if size is not None else None}


def read_small_file(store, cid: bytes, limit: int = MAX_README) -> str | None:
    from fabnode.protocol.unixfs import iter_file

    chunks, size = [], 0
    for piece in iter_file(store.get, cid):
        chunks.append(piece)
        size += len(piece)
        if size > limit:
            return None
    return b"".join(chunks).decode("utf-8", errors="replace")


def claim_rows(by_trust: dict) -> list[dict]:
    """One row per predicate/result with its trusted and untrusted counts, never summed."""
    keys = sorted(by_trust["trusted"].keys() | by_trust["untrusted"].keys(), key=claim_order)
    return [{"predicate": k.split("/")[0], "result": k.split("/")[-1], "trusted": by_trust["trusted"].get(k, 0),
             "untrusted": by_trust["untrusted"].get(k, 0), "mark": RESULT_MARKS.get(k.split("/")[-1], "·")}
            for k in keys]


# ------------------------------------------------------------------ lineage drawing


def lineage_svg(records, design: bytes, log: dict, gettext=lambda m: m, num=str) -> str:
    """The design's versions, where it came from and what was adapted from it, as one SVG:
    a column per design, time downwards, parent → child arrows; canonical versions filled,
    proposals hollow; under each version one line per predicate and result claimed by keys
    this node trusts ("✓ built · passed ×2", "⚠ tested · warned ×1": issue 15 keeps results
    apart, in words and not by colour alone), and, apart and grey, how many claims keys it does
    not trust made (issue 12: they never count). ``gettext`` and ``num``: the page's language
    (node/http/i18n.py)."""
    _ = gettext
    word = lambda w: _(WORDS[w]) if w in WORDS else w  # noqa: E731
    versions: dict[str, dict] = {v["version"]: v for v in log["versions"]}
    columns: list[str] = []
    nodes: dict[str, dict] = {}

    def add(vid: str, info: dict, column: str) -> None:
        if column not in columns:
            columns.append(column)
        nodes.setdefault(vid, {**info, "column": column})

    for up in log["upstream"]:
        row = records.version(parse_cid(up))
        if row is not None:
            add(up, {"title": row.title, "label": row.label, "ts": row.ts, "parents": [], "canonical": True,
                     "claims": [], "unknown": 0, "design": cid_str(row.design)}, cid_str(row.design))
    stale = {t["version"]: t["stale"] for t in log.get("translations", [])}
    for vid, v in versions.items():
        by_trust = v["attestations_by_trust"]
        claims = sorted(by_trust["trusted"].items(), key=lambda kv: claim_order(kv[0]))
        unknown = sum(by_trust["untrusted"].values())
        translated = v.get("translation_of")  # issue 19: drawn beside, linked to the version it translates
        add(vid, {"title": v["title"], "label": v["label"], "ts": v["ts"],
                  "parents": [translated] if translated else v["parents"],
                  "canonical": v.get("canonical") is not False, "claims": claims, "unknown": unknown,
                  "retracted": (v.get("retracted") or {}).get("reason"),
                  "design": v["design"], "language": v.get("language") if translated else None,
                  "stale": stale.get(vid)},
            log["design"] + "#translations" if translated else log["design"])
    for a in log["adaptations"]:
        row = records.version(parse_cid(a["design"]))
        if row is not None:
            add(a["design"], {"title": row.title, "label": row.label, "ts": row.ts, "parents": a["from"],
                              "canonical": True, "claims": [], "unknown": 0, "design": a["design"]}, a["design"])
    order = sorted(nodes, key=lambda k: (nodes[k]["ts"], k))

    def claim_text(key: str, count: int) -> str:
        predicate, _sep, result = key.partition("/")
        return (_("%(mark)s %(predicate)s · %(result)s ×%(count)s by trusted labs")
                % {"mark": RESULT_MARKS.get(result, "·"), "predicate": word(predicate), "result": word(result),
                   "count": num(count)})

    longest = max((len(claim_text(k, c)) for n in nodes.values() for k, c in n["claims"]), default=0)
    # a column is as wide as its longest claim line (about 6 px a character at 11 px): translations run longer
    col_w, row_h, line_h, pad = max(260, 40 + 6 * longest), 64, 13, 34
    pos, top = {}, pad
    for k in order:  # a row grows with its lines of claims
        pos[k] = (pad + col_w * columns.index(nodes[k]["column"]) + 16, top + 20)
        top += max(row_h, 38 + line_h * (len(nodes[k]["claims"]) + bool(nodes[k]["unknown"])
                                         + bool(nodes[k].get("retracted"))))
    width = pad * 2 + col_w * max(1, len(columns))
    height = max(top, pad + row_h) + pad
    e = html.escape
    aria_label = _("Lineage of %(title)s") % {"title": log["title"]}
    this_design = _("this design")
    parts = [f'<svg class="lineage" id="lineage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{e(aria_label)}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/></marker></defs>']
    for i, column in enumerate(columns):
        title = next((nodes[k]["title"] for k in order if nodes[k]["column"] == column), "")
        if column.endswith("#translations"):
            title = ", ".join(sorted({nodes[k]["language"] for k in order if nodes[k]["column"] == column}))
        short = title if len(title) <= 26 else title[:25] + "…"
        parts.append(f'<text x="{pad + col_w * i}" y="{pad - 12}" font-size="12" fill="#555">{e(short)}'
                     + (f'<tspan font-style="italic"> · {e(this_design)}</tspan>'
                        if column == log["design"] and len(columns) > 1
                        else "") + "</text>")
    for k in order:
        for parent in nodes[k]["parents"]:
            if parent in pos:
                (x1, y1), (x2, y2) = pos[parent], pos[k]
                cross = nodes[parent]["column"] != nodes[k]["column"]
                style = 'class="edge adaptation" stroke="#c77d12" stroke-dasharray="5 3"' if cross else \
                    'class="edge" stroke="#888"'
                if nodes[k].get("language"):
                    style = 'class="edge translation" stroke="#4a62a8" stroke-dasharray="2 3"'
                parts.append(f'<line {style} x1="{x1}" y1="{y1 + 9}" x2="{x2}" y2="{y2 - 11}" stroke-width="1.6" '
                             'marker-end="url(#arrow)"/>')
    for k in order:
        n, (x, y) = nodes[k], pos[k]
        kind = "canonical" if n["canonical"] else "proposal"
        fill = "#2a7f62" if n["canonical"] else "#fff"
        label = n["label"] or k[-8:]
        extra = ""
        if n.get("language"):  # a translation: a square in its own colour, its language before its label
            kind, label = "translation" + (" stale" if n.get("stale") else ""), f'{n["language"]} · {label}'
            extra = f' data-language="{e(n["language"])}"'
        shape = (f'<rect x="{x - 8}" y="{y - 8}" width="16" height="16" fill="{"#fff" if n.get("stale") else "#4a62a8"}" '
                 'stroke="#4a62a8" stroke-width="2"/>') if n.get("language") else \
            f'<circle cx="{x}" cy="{y}" r="9" fill="{fill}" stroke="#2a7f62" stroke-width="2"/>'
        retracted = n.get("retracted")
        if retracted:  # issue 17: struck through (drawn, not only styled), grey, and the reason under it
            kind += " retracted"
            shape = f'<circle cx="{x}" cy="{y}" r="9" fill="#ccc" stroke="#8a1f1f" stroke-width="2"/>'
            extra += ' data-retracted="true"'
        parts.append(f'<a href="/version/{e(k)}"><g class="version {kind}" data-version="{e(k)}" '
                     f'data-design="{e(n["design"])}"{extra}>' + shape +
                     f'<text x="{x + 16}" y="{y + 4}" font-size="13"'
                     + (' text-decoration="line-through" fill="#777"' if retracted else "") + f'>{e(label[:24])}</text>')
        line = y + 20
        if retracted:
            parts.append(f'<line class="strike" x1="{x + 14}" y1="{y}" x2="{x + 18 + 8 * len(label[:24])}" y2="{y}" '
                         'stroke="#8a1f1f" stroke-width="1.4"/>')
            shown = retracted if len(retracted) <= 60 else retracted[:59] + "…"
            parts.append(f'<text class="retraction" x="{x + 16}" y="{line}" font-size="11" fill="#8a1f1f">'
                         + e(_("retracted: %(reason)s") % {"reason": shown}) + "</text>")
            line += line_h
        for key, count in n["claims"]:
            result = key.partition("/")[2]
            parts.append(f'<text class="claim" data-claim="{e(key)}" x="{x + 16}" y="{line}" font-size="11" '
                         f'fill="{RESULT_COLOURS.get(result, "#555")}">{e(claim_text(key, count))}</text>')
            line += line_h
        if n["unknown"]:
            parts.append(f'<text class="badge-untrusted" x="{x + 16}" y="{line}" font-size="10" fill="#777">'
                         + e(_("%(count)s by unknown keys (not counted)") % {"count": num(n["unknown"])})
                         + '</text>')
        parts.append("</g></a>")
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------ pages


_world_outline: str | None = None


def world_outline() -> str:
    """The land's SVG path data, read from the package once."""
    global _world_outline
    if _world_outline is None:
        _world_outline = WORLD_OUTLINE.read_text(encoding="ascii").strip()
    return _world_outline


def labs_map_svg(labs: list[dict], label: str) -> str:
    """The map of the labs page: the world's land and a dot per lab with coordinates
    (equirectangular: x = lon + 180, y = 90 - lat), this lab's dot marked, each dot titled with
    the lab as shown in the table. No outside host, no tiles, no script."""
    dots = []
    for lab in labs:
        if lab["lat"] is None:
            continue
        kind = "lab own" if lab["own"] else ("lab" if lab["trusted"] else "lab untrusted")
        # a did:key is base58 (checked when its record was): nothing in it to escape
        dots.append(f'<circle class="{kind}" cx="{lab["lon"] + 180:.2f}" cy="{90 - lab["lat"]:.2f}" r="1.6" '
                    f'data-author="{lab["author"]}"><title>{html.escape(lab["shown"])}</title></circle>')
    return (f'<svg class="labs-map" id="labs-map" viewBox="0 0 360 180" role="img" aria-label="{html.escape(label)}" '
            'xmlns="http://www.w3.org/2000/svg"><rect class="sea" width="360" height="180"/>'
            f'<path class="land" d="{world_outline()}"/><g class="dots">{"".join(dots)}</g></svg>')


class Pages:
    """The lab's web pages, rendered from one open store: the daemon's (or ``fabnode run``'s).

    Every page reads through ``store`` and the :class:`RecordStore` made over the same connection
    here, once per app, never a connection per render. Nb. an SQLite connection belongs to the
    thread that opened it: the pages render synchronously inside Hypercorn's handlers, which run
    on the trio thread that owns the daemon's store, so they never need a connection of their own
    (Python's sqlite3 refuses use from another thread, so a change that broke this would fail loudly).
    """

    def __init__(self, home, store, status=None) -> None:
        from fabnode.storage import Stores

        self.home = home
        self.store = store
        self.records = Stores.of(store).records
        self.status = status or (lambda: {})
        self.identity = home.identity()
        self._names = None
        self._envs: dict = {}
        self.lang = DEFAULT_LANGUAGE
        """The language of the page being rendered (set by web.py per request; pages render
        synchronously on one thread, so one attribute is enough)."""
        self.path = "/"
        """The path and query of the page being rendered, for the language switch's links."""

    @property
    def env(self):
        """The Jinja2 environment of the current language: ``jinja2.ext.i18n`` with that
        language's catalog installed (new-style gettext: ``%`` placeholders checked, output
        escaped), one environment per language, made when first asked for."""
        env = self._envs.get(self.lang)
        if env is None:
            from jinja2 import Environment, FileSystemLoader, select_autoescape

            from fabnode.node.http.i18n import Formats, translations
            from fabnode.protocol.reputation import short_did

            env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                              extensions=["jinja2.ext.i18n"])
            env.policies["ext.i18n.trimmed"] = True
            catalog = translations(self.lang)
            env.install_gettext_translations(catalog, newstyle=True)
            fmt = Formats(self.lang)
            env.filters["short_did"] = short_did
            env.filters["human_size"] = fmt.size  # human_size's rule in the page's digits
            env.globals["num"] = fmt.number
            env.globals["score"] = lambda value: fmt.signed(value)
            env.globals["word"] = lambda w: catalog.gettext(WORDS[w]) if w in WORDS else w
            env.globals["result_mark"] = lambda result: RESULT_MARKS.get(result, "·")
            env.globals["claim_rows"] = claim_rows
            env.globals["lab_of"] = self._lab
            env.globals["member_signed"] = lambda v: v.get("signed_as") == "member"
            self._envs[self.lang] = env
        return env

    def gettext(self, message: str) -> str:
        from fabnode.node.http.i18n import translations

        return translations(self.lang).gettext(message)

    @property
    def fmt(self):
        from fabnode.node.http.i18n import Formats

        return Formats(self.lang)

    def _when(self, ms: int) -> str:
        return self.fmt.when(ms)

    def _lab(self, key) -> str:
        """``{{ lab_of(key) }}``: a did:key or peer ID as its lab (node/local/names.py), in every
        template and macro; the names are read once per page."""
        from fabnode.node.local.names import Names

        from fabnode.protocol.labs import UNVERIFIED

        if self._names is None:
            self._names = Names(self.records, self.identity.did, self.identity.name)
            self._names.my_peer_id = self.identity.peer_id
        label = self._names.label(key)
        if label.endswith(UNVERIFIED) and self.lang != DEFAULT_LANGUAGE:
            label = self.gettext("%(name)s (unverified)") % {"name": label[: -len(UNVERIFIED)]}
        return label

    def _trust(self, records):
        """This node's trust graph, computed once per page (issue 12: who says it)."""
        from fabnode.node.local.commons import trust_map_for

        return trust_map_for(self.identity.did, records)[1]

    def _render(self, name: str, **context) -> str:
        from fabnode.node.http.i18n import direction, language_links

        self._names = None  # names arrive with records: read afresh for each page
        return self.env.get_template(name).render(lab_name=self.identity.name or "fabnode", lang=self.lang,
                                                  dir=direction(self.lang),
                                                  language_links=language_links(self.path), **context)

    def labs_page(self, process: str | None = None) -> str:
        """Every lab known here on a map and in a table: nearest first from this lab when it has
        shared coordinates, else by name (node/local/labs.py, as ``fabnode labs``)."""
        from fabnode.node.local.labs import labs_over
        from fabnode.protocol.labs import UNVERIFIED

        result = labs_over(self.store.db.conn, self.records, self.identity, process=process or None,
                           nearest_from_here=True, detailed=MAX_LABS_LISTED)
        rows = result["labs"]
        if self.lang != DEFAULT_LANGUAGE:
            marked = self.gettext("%(name)s (unverified)")
            for lab in rows:
                if lab["shown"].endswith(UNVERIFIED):
                    lab["shown"] = marked % {"name": lab["shown"][: -len(UNVERIFIED)]}
        shown = rows[:MAX_LABS_LISTED]
        km = self.gettext("%(km)s km")
        number = self.fmt.number
        for lab in shown:
            if lab["distance_km"] is not None:
                lab["distance_text"] = km % {"km": number(round(lab["distance_km"]))}
        svg = labs_map_svg(rows, self.gettext("Map of the labs this node knows"))
        return self._render("labs.html", labs=shown, total=len(rows), map_svg=svg,
                            here=result["here"], process=result["process"])

    def home_page(self) -> str:
        from fabnode.node.local.commons import history, judged_withdrawals

        records = self.records
        trust_map = self._trust(records)
        versions = history(records, self.identity.did, None, limit=15, trust_map=trust_map)["versions"]
        for v in versions:
            v["when"] = self._when(v["ts"])
            if v["retracted"]:
                v["retracted"]["when"] = self._when(v["retracted"]["ts"])
        trusted, unknown = records.recent_attestations_split(trust_map.keys(), 15)
        titles: dict[bytes, str] = {}

        def title(cid: bytes) -> str:
            if cid not in titles:
                row = records.version(cid)
                titles[cid] = row.title if row else ""
            return titles[cid]

        withdrawals = judged_withdrawals(records, trusted)
        attestations = [{"result": a.result, "predicate": a.predicate, "lab": a.lab, "author": a.author,
                         "when": self._when(a.ts), "subject": cid_str(a.subject), "subject_title": title(a.subject),
                         "withdrawn": getattr(withdrawals.get(a.cid, (None, []))[0], "reason", None)}
                        for a in trusted]
        others = [{"predicate": p, "result": r, "count": n, "authors": keys, "when": self._when(ts), "subject": cid_str(s),
                   "subject_title": title(s)} for s, p, r, n, keys, ts in unknown]
        return self._render("home.html", identity=self.identity, peers=self.status().get("connected", {}),
                            versions=versions, attestations=attestations, unknown=others)

    def designs_page(self, query: str | None, limit: int = 200) -> str:
        from fabnode.node.local.commons import list_designs, search_designs

        rows = search_designs(self.records, query, limit + 1) if query else list_designs(self.records, limit + 1)
        for d in rows:
            d["when"] = self._when(d["updated_ts"])
        return self._render("designs.html", designs=rows[:limit], more=len(rows) > limit, query=query)

    def design_page(self, text: str) -> str:
        from fabnode.protocol.okh import parse_manifest

        from fabnode.node.local.commons import history as design_history

        records = self.records
        history = design_history(records, self.identity.did, text, trust_map=self._trust(records), store=self.store)
        for v in history["versions"]:
            v["when"] = self._when(v["ts"])
            if v["retracted"]:
                v["retracted"]["when"] = self._when(v["retracted"]["ts"])
        head = next((v for v in history["versions"] if v.get("head")),
                    next((v for v in history["versions"] if "translation_of" not in v and not v["retracted"]), None))
        files = pictures = readme = readme_name = manifest = downloads = None
        if head is not None:
            found = bundle_files(self.store, parse_cid(head["bundle"]))
            if found is not None:
                files = [{"path": p, "size": size} for p, (_, size) in sorted(found.items())]
                pictures = [p for p in sorted(found) if p.lower().endswith(PICTURE_SUFFIXES)][:12]
                downloads = download_links(head["bundle"], history["title"], head.get("label") or "",
                                           sum(size for _, size in found.values()) if len(found) < MAX_FILES_LISTED else None,
                                           self.fmt.size)
                known = known_paths(found) if len(found) < MAX_FILES_LISTED else None
                for name in ("README.md", "readme.md", "manufacturing-instructions.md"):
                    if name in found:
                        text_ = read_small_file(self.store, found[name][0])
                        if text_ is not None:
                            readme, readme_name = render_readme(text_, head["bundle"], name, known), name
                            break
                if "okh.toml" in found:
                    raw = read_small_file(self.store, found["okh.toml"][0])
                    try:
                        parsed = parse_manifest(raw or "")
                        manifest = [(k, v if isinstance(v, (str, int, float)) else ", ".join(map(str, v))
                                     if isinstance(v, list) else "…")
                                    for k, v in parsed.items() if not isinstance(v, dict)][:20]
                    except FabnodeError:
                        manifest = None
        return self._render("design.html", log=history, head=head, files=files, pictures=pictures, readme=readme,
                            readme_name=readme_name, manifest=manifest, downloads=downloads,
                            makers=self._makers(history["design"]),
                            lineage=lineage_svg(records, parse_cid(history["design"]), history, self.gettext,
                                                               self.fmt.number))

    def _here(self):
        """This lab's own coordinates, None when it has set none (then nothing is ordered by distance)."""
        from fabnode.storage import Stores
        from fabnode.node.local.making import my_place

        try:
            return my_place(Stores.of(self.store), self.identity.did)
        except FabnodeError:
            return None

    def _makers(self, design: str) -> dict:
        """"Labs that can make this", nearest first (node/local/making.py, as ``can-make`` shows)."""
        from fabnode.storage import Stores
        from fabnode.node.local.making import can_make_design

        makers = can_make_design(self.home, design, near=self._here(), limit=MAX_MAKERS_LISTED,
                                 stores=Stores.of(self.store))
        for lab in makers["labs"]:
            for missing in lab["missing"]:
                missing["is_process"] = missing["kind"] == "process"
        return makers

    def requests_page(self) -> str:
        from fabnode.storage import Stores
        from fabnode.node.local.making import list_requests

        rows = list_requests(self.home, near=self._here(), stores=Stores.of(self.store), limit=MAX_REQUESTS_LISTED)
        states = {state: self.gettext(label) for state, label in REQUEST_STATES.items()}
        return self._render("requests.html", requests=rows, states=states)

    def _word(self, word: str) -> str:
        return self.gettext(WORDS[word]) if word in WORDS else word

    def _details(self, details: dict) -> dict:
        """Evidence names and sizes in the page's language."""
        _ = self.gettext
        for e in details["evidence"]:
            e["name"] = (_("evidence %(number)s (a folder)") if e["folder"] else _("evidence %(number)s")) % {
                "number": self.fmt.number(e["number"])}
            if e["bytes"] is not None:
                e["size"] = self.fmt.size(e["bytes"])
        return details

    def version_page(self, text: str) -> str:
        from fabnode.node.local.commons import is_trusted, judged_withdrawals, record_signer, score, version_json
        from fabnode.protocol.key_views import COUNTS_NOTHING

        records = self.records
        row = records.version(parse_cid(text))
        if row is None:
            raise FabnodeError(f"no version {text} is known here")
        trust_map = self._trust(records)
        v = version_json(row, None, records, trust_map)
        v["when"] = self._when(v["ts"])
        if v["retracted"]:
            v["retracted"]["when"] = self._when(v["retracted"]["ts"])
        parent = records.version(row.parents[0]) if row.parents else None
        diff = bundle_diff(self.store, parent.bundle, row.bundle) if parent is not None else None
        held = bundle_files(self.store, row.bundle)
        downloads = None if held is None else download_links(
            v["bundle"], v["title"], v.get("label") or "",
            sum(size for _, size in held.values()) if len(held) < MAX_FILES_LISTED else None, self.fmt.size)
        rows = records.attestations_on([row.cid])
        signers = {a.cid: record_signer(records, a.cid, a.author, a.ts) for a in rows}  # issue 17: chains of keys
        trusted_of = {a.cid: signers[a.cid].get("mark") not in COUNTS_NOTHING
                      and is_trusted(trust_map, signers[a.cid].get("signed_for", a.author)) for a in rows}
        rows.sort(key=lambda a: not trusted_of[a.cid])  # trusted first; stable otherwise
        withdrawals = judged_withdrawals(records, rows[:MAX_ATTESTATIONS_LISTED])
        evidence = EvidenceReader(self.store)
        attestations = []
        for a in rows[:MAX_ATTESTATIONS_LISTED]:
            trusted = trusted_of[a.cid]
            withdrawn = withdrawals.get(a.cid, (None, []))[0]
            attestations.append({"result": a.result, "predicate": a.predicate, "lab": a.lab, "author": a.author,
                                 **signers[a.cid], "trusted": trusted, "when": self._when(a.ts),
                                 "withdrawn": withdrawn.reason if withdrawn is not None else None,
                                 **self._details(attestation_details(records, evidence, a.cid, trusted))})
        try:
            reputation, score_error = score(records, self.identity.did, text, trust_map, label=self._lab,
                                         declared=lambda key: (records.lab(key) or (None,))[0],
                                         gettext=self.gettext, word=self._word, trust_text=self.fmt.trust), ""
        except FabnodeError as exc:
            reputation, score_error = None, str(exc)
        return self._render("version.html", v=v, me=self.identity.did, diff=diff, attestations=attestations,
                            attestations_more=max(0, len(rows) - MAX_ATTESTATIONS_LISTED), downloads=downloads,
                            reputation=reputation,
                            reputation_error=score_error)
