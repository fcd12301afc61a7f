#!/usr/bin/env python3
"""Memory under a flood of large uploads: the figures in the stop note of 2026-12-06.

Sends 24 validation uploads of about 17 MB at once, twice each: a document with 1.5 million
attributes on one element (refused by the pre-scan, 422) and a valid discharge letter made large
by a comment (200). After each round it prints the answers and the server's resident memory
(VmRSS) and peak (VmHWM), read from /proc, in MiB.

    cargo run -- --data /tmp/probe --listen 127.0.0.1:18081 &
    TOKEN=$(cargo run -q -- token --data /tmp/probe --as system:demo-hospital)
    python3 tools/probe_uploads.py http://127.0.0.1:18081 "$TOKEN" $(pgrep -f 'listen 127.0.0.1:18081')

Loopback only; Python's standard library only.
"""
import pathlib
import sys
import threading
import time
import urllib.error
import urllib.request

BASE, TOKEN, PID = sys.argv[1], sys.argv[2], sys.argv[3]
LDO = pathlib.Path(__file__).resolve().parent.parent / "crates/cda/tests/data/LDO.xml"


def memory():
    out = {}
    for line in open(f"/proc/{PID}/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split(":")[0]] = int(line.split()[1]) // 1024
    return out


def send(body, answers):
    req = urllib.request.Request(f"{BASE}/ingest/v1/documents/validation", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/xml"})
    started = time.time()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            answers.append((r.status, time.time() - started))
    except urllib.error.HTTPError as e:
        answers.append((e.code, time.time() - started))


attributes = "".join(f" a{i}=''" for i in range(1_500_000))
bomb = ('<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"><x' + attributes + "/></ClinicalDocument>").encode()
ldo = LDO.read_text()
at = ldo.find("<ClinicalDocument")
big = (ldo[:at] + "<!--" + "x" * 18_000_000 + "-->" + ldo[at:]).encode()

print("before, MiB:", memory())
for name, body in (("1.5 million attributes", bomb), ("large valid letter", big)):
    for round_ in (1, 2):
        answers = []
        threads = [threading.Thread(target=send, args=(body, answers)) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = {}
        for code, _ in answers:
            codes[code] = codes.get(code, 0) + 1
        slowest = max(s for _, s in answers)
        print(f"{name}, round {round_}: {len(body) / 1e6:.1f} MB each, answers {codes}, slowest {slowest:.1f} s, MiB: {memory()}")
