"""Reading the status page (HTML and JSON) and using its actions, for the
suites that look at key state: test_status.py and test_shared_state.py."""

import html.parser

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
