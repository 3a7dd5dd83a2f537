"""Reading the status page (HTML and JSON), using its actions, and parsing
the Prometheus metrics, for the suites that look at them: test_status.py,
test_shared_state.py and test_agentic.py."""

import html.parser
import re

import requests

from harness import SLOW

STATUS = "/aibridge-status"


class Page(html.parser.HTMLParser):
    """The key rows of the status page: cells by class, forms with their fields."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.row, self.cell, self.form = [], None, None, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-provider" in a:
            self.row = {"provider": a["data-provider"], "key": int(a["data-key"]),
                        "state": a["data-state"], "cells": {}, "forms": []}
            self.rows.append(self.row)
        elif tag == "td" and self.row is not None:
            self.cell = a.get("class", "").split()[-1]
            self.row["cells"][self.cell] = ""
        elif tag == "form" and self.row is not None:
            self.form = {"method": a.get("method"), "action": a.get("action"), "fields": {}}
            self.row["forms"].append(self.form)
        elif tag in ("input", "button") and self.form is not None:
            self.form["fields"][a["name"]] = a["value"]

    def handle_endtag(self, tag):
        if tag == "td":
            self.cell = None
        elif tag == "tr":
            self.row = None
        elif tag == "form":
            self.form = None

    def handle_data(self, data):
        if self.row is not None and self.cell:
            self.row["cells"][self.cell] += data

    def key(self, provider, index):
        [row] = [r for r in self.rows if r["provider"] == provider and r["key"] == index]
        return row

    def nonce(self):
        nonces = {f["fields"]["nonce"] for r in self.rows for f in r["forms"]}
        assert len(nonces) == 1, nonces
        return nonces.pop()


def status_json(httpd, **kw):
    r = httpd.get(STATUS + "?format=json", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    return r.json()


def json_key(doc, provider, index, server=0):
    [pv] = [p for p in doc["servers"][server]["providers"] if p["name"] == provider]
    return pv["keys"][index]


def status_page(httpd, **kw):
    r = httpd.get(STATUS, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    return Page(r.text)


def act(httpd, nonce, action, provider="openai", key=0, headers=None, host=None):
    fields = {"action": action, "provider": provider, "key": str(key)}
    if nonce is not None:
        fields["nonce"] = nonce
    headers = dict(headers or {})
    if host:
        headers["Host"] = host
    return requests.post(httpd.url + STATUS, data=fields, headers=headers,
                         allow_redirects=False, timeout=30 * SLOW)


# --------------------------------------------------------------------------
# The metrics (Prometheus text exposition format)

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def parse_labels(text):
    labels, i = {}, 0
    while i < len(text):
        m = LABEL.match(text, i)
        assert m, f"bad label set: {text!r}"
        name, i, value = m.group(1), m.end(), []
        while text[i] != '"':
            if text[i] == "\\":
                value.append(UNESCAPE[text[i + 1]])
                i += 2
            else:
                assert text[i] != "\n"
                value.append(text[i])
                i += 1
        i += 1
        assert name not in labels, f"label {name} twice: {text!r}"
        labels[name] = "".join(value)
        if i < len(text):
            assert text[i] == ",", f"bad label set: {text!r}"
            i += 1
    return labels


class Metrics:
    def __init__(self, text):
        assert text.endswith("\n")
        self.types, self.help, self.samples = {}, {}, {}
        family = None
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, help_ = line[7:].split(" ", 1)
                assert name not in self.help and help_, line
                self.help[name] = help_
            elif line.startswith("# TYPE "):
                name, type_ = line[7:].split(" ")
                assert type_ in ("counter", "gauge", "histogram"), line
                assert name not in self.types, f"TYPE twice: {line}"
                self.types[name] = type_
                family = name
            else:
                assert line and not line.startswith("#"), repr(line)
                m = SAMPLE.match(line)
                assert m, f"bad sample line: {line!r}"
                name, labels, value = m.group(1), parse_labels(m.group(2) or ""), m.group(3)
                # Samples follow their family's TYPE line, grouped.
                suffixes = ("_bucket", "_sum", "_count") if self.types[family] == "histogram" \
                    else ("",)
                assert any(name == family + s for s in suffixes), f"{name} outside {family}"
                if self.types[family] == "counter":
                    assert family.endswith("_total")
                series = (name, frozenset(labels.items()))
                assert series not in self.samples, f"series twice: {line}"
                self.samples[series] = float(value)
        assert set(self.help) == set(self.types)
        self.check_histograms()

    def check_histograms(self):
        for family, type_ in self.types.items():
            if type_ != "histogram":
                continue
            groups = {}
            for (name, labels), value in self.samples.items():
                if name == family + "_bucket":
                    rest = frozenset((k, v) for k, v in labels if k != "le")
                    groups.setdefault(rest, []).append((float(dict(labels)["le"]), value))
            for rest, buckets in groups.items():
                buckets.sort()
                assert buckets[-1][0] == float("inf")
                values = [v for _, v in buckets]
                assert values == sorted(values), f"{family} buckets not cumulative"
                assert self.samples[(family + "_count", rest)] == values[-1]

    def find(self, name, **labels):
        """The values of every series of `name` with these labels (and others)."""
        return [v for (n, ls), v in self.samples.items()
                if n == name and labels.items() <= dict(ls).items()]

    def value(self, name, **labels):
        hits = [v for (n, ls), v in self.samples.items()
                if n == name and labels.items() <= dict(ls).items()]
        assert len(hits) == 1, f"{name}{labels}: {len(hits)} series"
        return hits[0]

    def buckets(self, name, **labels):
        """{le: cumulative count} of a histogram."""
        return {dict(ls)["le"]: v for (n, ls), v in self.samples.items()
                if n == name + "_bucket" and labels.items() <= dict(ls).items()}

    def labels(self, name):
        return [dict(ls) for (n, ls) in self.samples if n == name]
