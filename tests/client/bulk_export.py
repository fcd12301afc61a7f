"""Drive a running Fascicolo server's FHIR Bulk Data $export as an independent client would
(the Bulk Data IG's kick-off, status polling and file download, with `requests` only) and check
every line of every file with fhir.resources 6.4.0 (strict R4 models).

Usage: FHIR_TOKEN=... python3 bulk_export.py http://127.0.0.1:8080/fhir/r4
Exits non-zero on the first failure.
"""
import json
import os
import sys
import time

import requests
from fhir.resources import construct_fhir_element

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/fhir/r4"
AUTH = {"Authorization": f"Bearer {os.environ['FHIR_TOKEN']}"}
KICK = {**AUTH, "Accept": "application/fhir+json", "Prefer": "respond-async"}


def kick_off(path, params=None):
    r = requests.get(f"{BASE}/{path}", params=params, headers=KICK, timeout=30)
    assert r.status_code == 202, f"{path}: kick-off answered {r.status_code}: {r.text}"
    status = r.headers["Content-Location"]
    assert status.startswith(BASE), status
    return status


def wait(status, limit=300):
    deadline = time.time() + limit
    while time.time() < deadline:
        r = requests.get(status, headers=AUTH, timeout=30)
        if r.status_code == 202:
            assert "X-Progress" in r.headers, "no X-Progress while in progress"
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 1.0))
            continue
        assert r.status_code == 200, f"status answered {r.status_code}: {r.text}"
        assert r.headers["Content-Type"].startswith("application/json")
        return r.json()
    raise AssertionError(f"the export at {status} did not finish in {limit} s")


def download(manifest):
    """Every resource of every file, validated; returns {type: [ids]}."""
    assert manifest["requiresAccessToken"] is True
    assert isinstance(manifest["transactionTime"], str) and manifest["error"] == []
    out = {}
    for f in manifest["output"]:
        # a file is only for the client that asked for it
        assert requests.get(f["url"], timeout=30).status_code == 401
        r = requests.get(f["url"], headers={**AUTH, "Accept": "application/fhir+ndjson"}, timeout=120)
        assert r.status_code == 200, f"{f['url']}: {r.status_code}"
        assert r.headers["Content-Type"].startswith("application/fhir+ndjson")
        lines = [line for line in r.text.split("\n") if line]
        assert len(lines) == f["count"], f"{f['url']}: {len(lines)} lines, manifest says {f['count']}"
        for line in lines:
            data = json.loads(line)
            assert data["resourceType"] == f["type"], f"a {data['resourceType']} in a {f['type']} file"
            construct_fhir_element(data["resourceType"], data)
            out.setdefault(f["type"], []).append(data["id"])
    return out


def searched(t):
    """The ids of every current resource of a type as the platform searches it, without those
    carrying a visibility restriction (hidden documents and what derives from them never leave
    in bulk)."""
    ids, url, params = [], f"{BASE}/{t}", {"_count": "1000"}
    while url:
        b = requests.get(url, params=params, headers=AUTH, timeout=60).json()
        for e in b.get("entry", []):
            sec = e["resource"].get("meta", {}).get("security", [])
            if not any(c.get("system") == "urn:fascicolo:visibility" for c in sec):
                ids.append(e["resource"]["id"])
        url = next((link["url"] for link in b.get("link", []) if link["relation"] == "next"), None)
        params = None
    return ids


def check_system():
    got = download(wait(kick_off("$export")))
    total = sum(len(v) for v in got.values())
    for t, ids in got.items():
        assert len(ids) == len(set(ids)), f"{t}: a resource twice"
        assert sorted(ids) == sorted(searched(t)), f"{t}: the export differs from what a search finds"
    for t in ("Patient", "Observation", "Condition", "Organization"):
        assert t in got or not searched(t), f"no {t} file"
    print(f"bulk export (system): {total} resources in {len(got)} types, each type as a search finds it, every line valid R4")
    return got


def check_patient_level(system):
    got = download(wait(kick_off("Patient/$export", {"_type": "Patient,Observation"})))
    assert set(got) <= {"Patient", "Observation"}, set(got)
    assert sorted(got["Patient"]) == sorted(system["Patient"]), "Patient-level export differs from the system export's patients"
    assert sorted(got.get("Observation", [])) == sorted(system.get("Observation", []))
    print(f"bulk export (Patient, _type): {sum(len(v) for v in got.values())} resources")


def check_group(system):
    members = sorted(system["Patient"])[:3]
    g = {"resourceType": "Group", "type": "person", "actual": True,
         "member": [{"entity": {"reference": f"Patient/{p}"}} for p in members]}
    r = requests.post(f"{BASE}/Group", json=g, headers={**AUTH, "Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code == 201, r.text
    got = download(wait(kick_off(f"Group/{r.json()['id']}/$export", {"_type": "Patient"})))
    assert sorted(got["Patient"]) == members, got["Patient"]
    print(f"bulk export (Group of {len(members)}): the members' records only")


def check_refusals():
    r = requests.get(f"{BASE}/$export", headers=AUTH, timeout=30)
    assert r.status_code == 400, "an export without Prefer: respond-async was accepted"
    r = requests.get(f"{BASE}/$export", params={"_type": "NotAType"}, headers=KICK, timeout=30)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    # the whole store, so the first export is still running when the second kick-off comes
    status = kick_off("$export")
    second = requests.get(f"{BASE}/$export", headers=KICK, timeout=30).status_code
    assert requests.get(status, headers=AUTH, timeout=30).status_code == 202, "the first export finished too soon to test 429"
    assert second == 429, f"a second export while one runs answered {second}"
    assert requests.delete(status, headers=AUTH, timeout=30).status_code == 202
    assert requests.get(status, headers=AUTH, timeout=30).status_code == 404
    print("bulk export: refusals and cancel as the IG describes")


system = check_system()
check_patient_level(system)
check_group(system)
check_refusals()
print("bulk export: all checks passed")
